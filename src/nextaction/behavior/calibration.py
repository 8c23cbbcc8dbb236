"""Calibration: raw behaviour scores -> probabilities, Platt scaling per behaviour.

    P(b) = sigmoid(a_b · logit_b + c_b)

(a_b, c_b) is fitted per behaviour on the validation window; the threshold that maximises F1 there is
kept with it and reused on test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nextaction.evaluation.metrics import (
    best_f1_threshold,
)


@dataclass(frozen=True)
class Platt:
    """p = sigmoid(a · z + c), fitted by Newton's method on the log-loss (slightly L2-regularised)."""

    a: float = 1.0
    c: float = 0.0

    def __call__(self, z: np.ndarray) -> np.ndarray:
        x = self.a * np.asarray(z, dtype=np.float64) + self.c
        return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))

    @classmethod
    def fit(cls, z: np.ndarray, y: np.ndarray, *, iters: int = 100, l2: float = 1e-6) -> Platt:
        z = np.asarray(z, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if len(z) == 0 or y.min() == y.max():
            rate = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
            return cls(0.0, math.log(rate / (1 - rate)))  # one class only: its base rate
        w = np.zeros(2)
        X = np.stack([z, np.ones_like(z)], axis=1)
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -50, 50)))
            grad = X.T @ (p - y) / len(y) + l2 * w
            hess = (X * (p * (1 - p))[:, None]).T @ X / len(y) + l2 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        return cls(float(w[0]), float(w[1]))


def calibrate(scores: np.ndarray, labels: np.ndarray, behaviors: list[str]) -> dict[str, dict[str, float]]:
    """Per behaviour name: Platt parameters and the max-F1 threshold, from validation scores and labels."""
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(behaviors[1:]):
        platt = Platt.fit(scores[:, k], labels[:, k])
        out[name] = {
            "a": platt.a,
            "c": platt.c,
            "threshold": best_f1_threshold(platt(scores[:, k]), labels[:, k]),
        }
    return out


def probabilities(
    scores: np.ndarray, calibration: dict[str, dict[str, float]] | None, behaviors: list[str]
) -> np.ndarray:
    """Raw (…, NB) scores -> calibrated (…, NB) probabilities; an uncalibrated behaviour gets a sigmoid."""
    out = np.empty(scores.shape, dtype=np.float64)
    for k, name in enumerate(behaviors[1:]):
        cal = (calibration or {}).get(name, {"a": 1.0, "c": 0.0})
        out[..., k] = Platt(cal["a"], cal["c"])(scores[..., k])
    return out
