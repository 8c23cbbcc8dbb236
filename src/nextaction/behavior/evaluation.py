"""Behaviour evaluation: the candidate windows, per-behaviour metrics and the next-behaviour ranking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nextaction.behavior.calibration import calibrate, probabilities
from nextaction.behavior.candidates import (
    BehaviorScorer,
    CandidateSet,
    primary_behavior,
    window_candidates,
    window_popularity,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import SPLIT_NAMES, TEST, VALID
from nextaction.evaluation.metrics import (
    AUC_BOOTSTRAP_DRAWS,
    ECE_BINS,
    auc,
    auc_bootstrap_sd,
    binary_metrics,
    expected_calibration_error,
    gauc,
    log_loss,
    ranking_metrics,
)
from nextaction.evaluation.ranking import chunks, eval_examples, rank_targets

NEGATIVE_RATIO = 20  # popularity negatives per positive in the evaluation windows
EVAL_SEED = 0


def behavior_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    users: np.ndarray,
    calibration: dict[str, dict[str, float]],
    behaviors: list[str],
) -> dict[str, dict[str, float]]:
    """Per behaviour: AUC (and its bootstrap SD over users), GAUC, log-loss, ECE and
    accuracy/precision/recall/F1 at the valid threshold."""
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(behaviors[1:]):
        p, y = probs[:, k], labels[:, k]
        threshold = calibration[name]["threshold"]
        out[name] = {
            "AUC": auc(p, y),
            "AUC_sd": auc_bootstrap_sd(p, y, users),
            "GAUC": gauc(p, y, users),
            "logloss": log_loss(p, y),
            "ECE": expected_calibration_error(p, y),
            **binary_metrics(p, y, threshold),
            "threshold": threshold,
            "positives": int(y.sum()),
        }
    return out


@dataclass(frozen=True)
class BehaviorEvalSetup:
    """The candidate sets and target behaviour of one evaluation, shared by every scorer."""

    valid: CandidateSet
    test: CandidateSet
    target_behavior: int | None
    ratio: int
    seed: int


def eval_setup(
    data: PreparedDataset,
    *,
    ratio: int = NEGATIVE_RATIO,
    seed: int = EVAL_SEED,
    valid_users: np.ndarray | None = None,
) -> BehaviorEvalSetup:
    """The valid and test windows' candidates. ``valid_users``: the users whose validation window the model
    did not learn (``training.loop.held_out_validation_users``); every decision taken on the valid window
    (the ranker, Platt calibration, F1 thresholds) reads only them. None = every user."""
    nb = len(data.behaviors) - 1
    kw: dict[str, Any] = {"n_behaviors": nb, "ratio": ratio, "seed": seed}
    valid_pop = window_popularity(data, VALID)
    return BehaviorEvalSetup(
        valid=window_candidates(data.seqs, split=VALID, popularity=valid_pop, users=valid_users, **kw),
        test=window_candidates(data.seqs, split=TEST, popularity=window_popularity(data, TEST), **kw),
        target_behavior=primary_behavior(data.behaviors),
        ratio=ratio,
        seed=seed,
    )


def evaluate_behavior_scorer(
    scorer: BehaviorScorer,
    data: PreparedDataset,
    setup: BehaviorEvalSetup,
    *,
    fit_data: PreparedDataset | None = None,
) -> dict[str, Any]:
    """Calibrate ``scorer`` on the valid window, then measure it on the test window (and next-behaviour).

    ``fit_data``: what the scorer fits its statistics on, the model's training events
    (``training.loop.trained_view``), so a baseline learns from exactly what the model learned; default
    ``data``.
    """
    seqs = data.seqs
    scorer.fit(data if fit_data is None else fit_data, train=setup.valid)
    calibration = calibrate(scorer.behavior_scores(seqs, setup.valid), setup.valid.labels, data.behaviors)
    test_scores = scorer.behavior_scores(seqs, setup.test)
    probs = probabilities(test_scores, calibration, data.behaviors)
    result: dict[str, Any] = behavior_metrics(
        probs, setup.test.labels, setup.test.user_of_candidate(), calibration, data.behaviors
    )
    if setup.target_behavior is not None:
        result[f"next_{data.behaviors[setup.target_behavior]}"] = next_behavior_metrics(
            scorer, seqs, setup.target_behavior
        )
    return result


def next_behavior_metrics(scorer: BehaviorScorer, seqs: Sequences, behavior: int) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR@10 of each user's first ``behavior`` event of the test split.

    History = every event before it (including the test window's earlier events, e.g. the cart before the
    buy); all catalogue items are candidates and seen items are not excluded (repeat purchases count).
    """
    ex = eval_examples(seqs, split=TEST, target_behavior=behavior)

    def score_rows(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            scorer.rank_scores(seqs, ex.hist_start[rows], ex.hist_end[rows], behavior=behavior)
        )

    ranks, _ = rank_targets(score_rows, seqs, ex, exclude_seen=False, groups=chunks(len(ex), 256), k_top=0)
    m = ranking_metrics(ranks, ks=(10,))
    return {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"], "MRR@10": m["MRR@10"], "users": len(ex)}


def behavior_protocol(data: PreparedDataset, setup: BehaviorEvalSetup) -> dict[str, Any]:
    target = setup.target_behavior
    return {
        "window": f"{SPLIT_NAMES[TEST]} split events of each user; history = all events before them",
        "candidates": (
            f"items the user touched in the window (labelled per behaviour) + {setup.ratio} negatives per "
            f"positive sampled by popularity within the same window (seed {setup.seed})"
        ),
        "users": len(setup.test),
        "candidates_total": len(setup.test.items),
        "model_scores": (
            "nextaction: a logistic regression per behaviour over the head's logits, the next-item logit and "
            "log-probability and hand-made counts, fitted on the valid window (baselines: their own scores)"
        ),
        "calibration": "Platt scaling per behaviour fitted on the valid window (same construction)",
        "threshold": "the probability maximising F1 on the valid window",
        "AUC_sd": (
            f"standard deviation of the AUC over {AUC_BOOTSTRAP_DRAWS} bootstrap resamples of the window's "
            "users (seed 0): how precisely this window measures it"
        ),
        "ece_bins": ECE_BINS,
        "next_behavior": None
        if target is None
        else (
            f"first '{data.behaviors[target]}' event of the test split per user, full ranking over "
            f"{data.n_items} items, seen items kept"
        ),
    }
