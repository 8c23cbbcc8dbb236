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
    expand_spans,
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
    multi_target_metrics,
    pessimistic_ranks,
)
from nextaction.evaluation.ranking import chunks, eval_examples

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


@dataclass(frozen=True)
class FirstOrders:
    """Each user's first order of a behaviour in a split: every item they did it on at the first such moment.

    A shop's order holds several items bought in the same second (IJCAI-15's clock is a day), so "the
    first buy" is the set, and ranking any of its items high is a hit. History = every event before the
    order's first event (the cart before the buy included; the order's other items not).
    """

    user_idx: np.ndarray  # (U,) int64
    hist_start: np.ndarray  # (U,) int64 offsets into the Sequences arrays
    hist_end: np.ndarray  # (U,) int64, exclusive: the order's first event
    offsets: np.ndarray  # (U + 1,) int64 into targets
    targets: np.ndarray  # (T,) int64 distinct item_idx of each order

    def __len__(self) -> int:
        return len(self.user_idx)


def first_orders(seqs: Sequences, *, split: int, behavior: int, min_history: int = 1) -> FirstOrders:
    """The first order of ``behavior`` in ``split`` of every user with at least ``min_history`` events before it."""
    ex = eval_examples(seqs, split=split, target_behavior=behavior, min_history=min_history)
    times, items = np.asarray(seqs.timestamps), np.asarray(seqs.items)
    is_b = (np.asarray(seqs.split) == split) & (np.asarray(seqs.behaviors) == behavior)
    ends = np.asarray(seqs.offsets)[ex.user_idx + 1]
    # every event of the order sits at or after the first one, at the same moment, within the user's span
    row, pos = expand_spans(ex.hist_end, ends)
    same = is_b[pos] & (times[pos] == times[ex.hist_end][row])
    n_cols = int(items.max(initial=0)) + 1
    keys = np.unique(row[same] * n_cols + items[pos[same]])
    order_row, order_item = keys // n_cols, keys % n_cols
    counts = np.bincount(order_row, minlength=len(ex))
    return FirstOrders(
        user_idx=ex.user_idx,
        hist_start=ex.hist_start,
        hist_end=ex.hist_end,
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        targets=order_item.astype(np.int64),
    )


def order_ranks(scorer: BehaviorScorer, seqs: Sequences, orders: FirstOrders, behavior: int) -> np.ndarray:
    """(T,) pessimistic 0-based rank of every order item over the whole catalogue, seen items kept."""
    ranks = np.empty(len(orders.targets), dtype=np.int64)
    for rows in chunks(len(orders), 256):
        scores = torch.from_numpy(
            scorer.rank_scores(seqs, orders.hist_start[rows], orders.hist_end[rows], behavior=behavior)
        )
        if scores.dtype != torch.float64:
            scores = scores.float()
        scores[:, 0] = float("-inf")
        a, b = orders.offsets[rows[0]], orders.offsets[rows[-1] + 1]
        local = np.repeat(np.arange(len(rows)), np.diff(orders.offsets[rows[0] : rows[-1] + 2]))
        ranks[a:b] = pessimistic_ranks(
            scores[torch.from_numpy(local)], torch.from_numpy(orders.targets[a:b])
        ).numpy()
    return ranks


def next_order_values(
    scorer: BehaviorScorer, seqs: Sequences, behavior: int, *, split: int = TEST
) -> tuple[FirstOrders, dict[str, np.ndarray]]:
    """Per-user HR/NDCG/MRR@10 of each user's first order of ``behavior`` in ``split`` (see FirstOrders)."""
    orders = first_orders(seqs, split=split, behavior=behavior)
    return orders, multi_target_metrics(orders.offsets, order_ranks(scorer, seqs, orders, behavior), ks=(10,))


def next_behavior_metrics(scorer: BehaviorScorer, seqs: Sequences, behavior: int) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR@10 of each user's first order of ``behavior`` in the test split.

    Any item of the order is a hit (NDCG with several relevant items); history = every event before the
    order (the test window's earlier events included, e.g. the cart before the buy); all catalogue items
    are candidates and seen items are not excluded (repeat purchases count).
    """
    orders, values = next_order_values(scorer, seqs, behavior)
    out = {name: float(v.mean()) if len(v) else 0.0 for name, v in values.items()}
    out["users"] = len(orders)
    out["items_per_order"] = float(len(orders.targets) / max(len(orders), 1))
    return out


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
            f"first '{data.behaviors[target]}' order of the test split per user (every item done at the "
            f"first such moment is relevant; HR = any in the top k), full ranking over {data.n_items} items, "
            "seen items kept, ties pessimistic"
        ),
    }
