"""Behaviour prediction around the model: score candidates, calibrate, evaluate, rank for a behaviour.

    P(view), P(cart), P(buy) … of user U on candidate items = sigmoid(a_b · logit_b + c_b)

where ``logit_b`` comes from the model's behaviour head (or a baseline) and (a_b, c_b) is a Platt scaling
fitted per behaviour on the validation window, which has the same construction as the test window. The
threshold that maximises F1 on validation is kept with it and reused on test.

"Items U will buy next" over the whole catalogue is two-stage: the next-item scores shortlist the top
items, the user's own history items join them (repeat purchases are the main pattern of shops), and the
behaviour head orders the shortlist by P(buy). Every catalogue item still gets a score — shortlisted ones
above all others — so the full-ranking metrics stay full-ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch

from nextaction.batches import Batch, history_batch
from nextaction.candidates import (
    BehaviorScorer,
    CandidateSet,
    ItemStats,
    primary_behavior,
    window_candidates,
    window_popularity,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import SPLIT_NAMES, TEST, VALID
from nextaction.evaluate import chunks, eval_examples, rank_targets
from nextaction.metrics import (
    ECE_BINS,
    auc,
    best_f1_threshold,
    binary_metrics,
    expected_calibration_error,
    gauc,
    log_loss,
    ranking_metrics,
)
from nextaction.model import NextActionModel

NEGATIVE_RATIO = 20  # popularity negatives per positive in the evaluation windows
EVAL_SEED = 0
SHORTLIST = 100  # next-item candidates re-ranked by the behaviour head


# ---- calibration ------------------------------------------------------------------------------------


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


# ---- the model as a behaviour scorer --------------------------------------------------------------------


class ModelBehaviorScorer:
    """Scores candidate sets with a trained model's behaviour head (histories in chunks of users)."""

    name = "nextaction"

    def __init__(
        self,
        model: NextActionModel,
        *,
        stats: ItemStats | None = None,
        chunk: int = 128,
        col_chunk: int = 1024,
        shortlist: int = SHORTLIST,
    ) -> None:
        if model.behavior is None:
            raise ValueError("this model has no behaviour head (train it with model.behavior_head = true)")
        self.model = model
        self.stats = stats
        self.chunk = chunk
        self.col_chunk = col_chunk
        self.shortlist = shortlist

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self:
        return self  # trained already

    def _stats(self, seqs: Sequences) -> ItemStats:
        if self.stats is None:
            self.stats = ItemStats(seqs, self.model.cfg.n_behaviors - 1)
        return self.stats

    @torch.no_grad()
    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        model = self.model
        model.eval()
        stats = self._stats(seqs)
        times = np.asarray(seqs.timestamps)
        out = np.zeros((len(cands.items), cands.n_behaviors), dtype=np.float32)
        for rows in chunks(len(cands), self.chunk):
            batch = history_batch(seqs, cands.hist_start[rows], cands.hist_end[rows], model.cfg.max_len)
            dev = model.item_emb.weight.device
            batch = Batch(*(t.to(dev) for t in (batch.items, batch.behaviors, batch.timestamps)))
            h = model(batch.items, batch.behaviors, batch.timestamps)
            upto = (batch.mask.sum(dim=1) - 1)[:, None]  # (C, 1)
            items, valid = cands.padded(rows)
            t_query = times[cands.hist_end[rows]][:, None]  # the window's start: all stats are from before it
            logits = np.zeros((*items.shape, cands.n_behaviors), dtype=np.float32)
            for a in range(0, items.shape[1], self.col_chunk):
                part = items[:, a : a + self.col_chunk]
                cand = torch.from_numpy(part)[:, None, :].to(dev)
                feats = torch.from_numpy(stats.features(part, t_query))[:, None].to(dev)
                z = model.behavior_logits(h, batch.items, batch.behaviors, cand, upto, feats)  # (C, 1, n, NB)
                logits[:, a : a + self.col_chunk] = z[:, 0].float().cpu().numpy()
            out[cands.offsets[rows[0]] : cands.offsets[rows[-1] + 1]] = logits[valid]
        return out

    @torch.no_grad()
    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        model = self.model
        model.eval()
        batch = history_batch(seqs, hist_start, hist_end, model.cfg.max_len)
        times = np.asarray(seqs.timestamps)
        t_query = times[np.minimum(hist_end, len(times) - 1)].astype(np.float64)
        return rerank_for_behavior(
            model, batch, behavior, shortlist=self.shortlist, stats=self._stats(seqs), t_query=t_query
        )


def rerank_for_behavior(
    model: NextActionModel,
    batch: Batch,
    behavior: int,
    *,
    shortlist: int,
    stats: ItemStats,
    t_query: np.ndarray,
) -> np.ndarray:
    """(B, n_items + 1) scores for "next item with ``behavior``": the shortlist (top next-item scores and
    the history's items) ordered by the behaviour logit, above every other item in next-item order.

    t_query: (B,) the moment of the prediction in ms (+inf = after every known event), for ItemStats.
    """
    items, behaviors = batch.items, batch.behaviors
    h = model(items, behaviors, batch.timestamps)
    n = (items != 0).sum(dim=1)
    empty = n == 0
    upto = (n - 1)[:, None]
    last = h[torch.arange(len(h)), upto[:, 0].clamp(min=0)].masked_fill(empty[:, None], 0.0)
    scores = model.score_all(last).float()  # (B, N+1), column 0 = -inf
    k = min(shortlist, scores.shape[1] - 1)
    top = torch.topk(scores, k, dim=1).indices
    cand = torch.cat([top, items], dim=1)  # history padding (0) lands on column 0, reset below
    feats = torch.from_numpy(stats.features(cand.numpy(), np.asarray(t_query, dtype=np.float64)[:, None]))
    z = model.behavior_logits(h, items, behaviors, cand[:, None, :], upto, feats[:, None])[
        :, 0, :, behavior - 1
    ]
    finite = torch.isfinite(scores)
    base = scores - scores.masked_fill(~finite, float("-inf")).amax(dim=1, keepdim=True) - 1e3
    base = base.scatter(1, cand, z.float().clamp(-100, 100))
    base[:, 0] = float("-inf")
    return base.numpy()


# ---- evaluation ------------------------------------------------------------------------------------


def behavior_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    users: np.ndarray,
    calibration: dict[str, dict[str, float]],
    behaviors: list[str],
) -> dict[str, dict[str, float]]:
    """Per behaviour: AUC, GAUC, log-loss, ECE and accuracy/precision/recall/F1 at the valid threshold."""
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(behaviors[1:]):
        p, y = probs[:, k], labels[:, k]
        threshold = calibration[name]["threshold"]
        out[name] = {
            "AUC": auc(p, y),
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
    data: PreparedDataset, *, ratio: int = NEGATIVE_RATIO, seed: int = EVAL_SEED
) -> BehaviorEvalSetup:
    nb = len(data.behaviors) - 1
    kw: dict[str, Any] = {"n_behaviors": nb, "ratio": ratio, "seed": seed}
    return BehaviorEvalSetup(
        valid=window_candidates(data.seqs, split=VALID, popularity=window_popularity(data, VALID), **kw),
        test=window_candidates(data.seqs, split=TEST, popularity=window_popularity(data, TEST), **kw),
        target_behavior=primary_behavior(data.behaviors),
        ratio=ratio,
        seed=seed,
    )


def evaluate_behavior_scorer(
    scorer: BehaviorScorer, data: PreparedDataset, setup: BehaviorEvalSetup
) -> dict[str, Any]:
    """Calibrate ``scorer`` on the valid window, then measure it on the test window (and next-behaviour)."""
    seqs = data.seqs
    scorer.fit(data, train=setup.valid)
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
        "calibration": "Platt scaling per behaviour fitted on the valid window (same construction)",
        "threshold": "the probability maximising F1 on the valid window",
        "ece_bins": ECE_BINS,
        "next_behavior": None
        if target is None
        else (
            f"first '{data.behaviors[target]}' event of the test split per user, full ranking over "
            f"{data.n_items} items, seen items kept"
        ),
    }
