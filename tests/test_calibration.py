"""Platt scaling recovers a known scaling."""

from __future__ import annotations

import numpy as np

from nextaction.behavior.calibration import Platt


def test_platt_recovers_a_known_scaling():
    rng = np.random.default_rng(0)
    z = rng.normal(size=20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))
    p = Platt.fit(z, y)
    assert abs(p.a - 2.0) < 0.1 and abs(p.c + 1.0) < 0.1
    assert Platt.fit(z, np.zeros_like(y)).a == 0.0  # one class: the base rate, no crash
