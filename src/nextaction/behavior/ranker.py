"""Behaviour prediction around the model: score candidates, rank, calibrate, evaluate.

    P(view), P(cart), P(buy) … of user U on candidate items = sigmoid(a_b · logit_b + c_b)

For the model, ``logit_b`` is the second stage's: a :class:`BehaviorRanker` (a logistic regression per
behaviour) over the transformer's signals — the behaviour head's logits, the next-item logit and
log-probability — and the log's counts (:func:`candidates.pair_features`). It is fitted after training on
the validation window, which has the test window's construction; the head alone answers a neighbouring
question (what happens within the next 16 events of a training position) and is what the ranker corrects.
For a baseline, ``logit_b`` is its own score. (a_b, c_b) is a Platt scaling fitted per behaviour on the
validation window; the threshold that maximises F1 there is kept with it and reused on test.

"Items U will buy next" over the whole catalogue is two-stage: the next-item scores shortlist the top
items, the user's own history items join them (repeat purchases are the main pattern of shops), and the
behaviour logit orders the shortlist by P(buy). Every catalogue item still gets a score — shortlisted ones
above all others — so the full-ranking metrics stay full-ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch

from nextaction.batches import Batch, history_batch
from nextaction.behavior.candidates import (
    CandidateSet,
    ItemStats,
    n_pair_features,
    pair_features,
    rate_prior,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.evaluation.ranking import chunks
from nextaction.model import NextActionModel

SHORTLIST = 100  # next-item candidates re-ranked by the behaviour head


# ---- the second stage: a ranker fitted on the validation window ------------------------------------------

SCORE_BUDGET = 1 << 25  # next-item scores held at once when scoring candidate sets (floats)
RANKER_C = 0.1  # inverse L2 strength; grouped 5-fold CV on the valid windows of RetailRocket and MovieLens


def n_ranker_features(n_behaviors: int) -> int:
    """Width of the ranker's input: pair features, recent popularity, next-item logit and log-probability,
    and the head's NB logits."""
    return n_pair_features(n_behaviors) + 3 + n_behaviors


@dataclass(frozen=True)
class BehaviorRanker:
    """logit_b = w_b · (x - mean) / scale + c_b: a logistic regression per behaviour, the second stage.

    The behaviour head learns from positions of the training log (the next 16 events); the question asked
    of it — which of these items will the user view, cart, buy in the coming period — has its own mix of
    candidates and its own base rates per user. The ranker is fitted on exactly that question, the
    validation window (the test window's construction), over the transformer's signals (the head's logits,
    the next-item logit and log-probability) and the log's counts (:func:`candidates.pair_features`). With
    L2 regularisation it falls back on whichever signals carry over; Platt scaling follows as for the head.
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]  # (NB, F)
    intercept: tuple[float, ...]  # (NB,)
    c: float = RANKER_C  # the inverse L2 strength it was fitted with (a record; not used to score)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(…, F) features -> (…, NB) float32 logits."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return (z @ np.asarray(self.coef).T + np.asarray(self.intercept)).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, *, c: float = RANKER_C) -> BehaviorRanker:
        """Fit on (T, F) features and (T, NB) labels; a behaviour with one class gets its base rate."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        std = x.std(axis=0) if len(x) else np.ones(x.shape[1])
        scale = np.where(std > 1e-9, std, 1.0)
        z = (x - mean) / scale
        coef, intercept = [], []
        for k in range(labels.shape[1]):
            y = np.asarray(labels[:, k], dtype=np.int64)
            if len(y) == 0 or y.min() == y.max():
                rate = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
                coef.append((0.0,) * x.shape[1])
                intercept.append(math.log(rate / (1 - rate)))
                continue
            lr = LogisticRegression(C=c, max_iter=2000).fit(z, y)
            coef.append(tuple(float(v) for v in lr.coef_[0]))
            intercept.append(float(lr.intercept_[0]))
        return cls(
            mean=tuple(float(v) for v in mean),
            scale=tuple(float(v) for v in scale),
            coef=tuple(coef),
            intercept=tuple(intercept),
            c=c,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": [list(r) for r in self.coef],
            "intercept": list(self.intercept),
            "c": self.c,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BehaviorRanker | None:
        if not d:
            return None
        return cls(
            mean=tuple(d["mean"]),
            scale=tuple(d["scale"]),
            coef=tuple(tuple(r) for r in d["coef"]),
            intercept=tuple(d["intercept"]),
            c=float(d.get("c", RANKER_C)),
        )


@dataclass(frozen=True)
class UserStates:
    """One forward pass over a chunk of histories, reused for every column chunk of candidates."""

    batch: Batch
    h: torch.Tensor  # (C, L, D)
    upto: torch.Tensor  # (C, 1) index of the last history event, -1 if none
    scores: torch.Tensor  # (C, n_items + 1) next-item logits (column 0 = -inf)
    log_norm: torch.Tensor  # (C, 1) logsumexp of the scores: log P(next = i) = scores[:, i] - log_norm


@torch.no_grad()
def user_states(
    model: NextActionModel, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray
) -> UserStates:
    """The model's states for histories ``[hist_start, hist_end)`` (their last ``max_len`` events)."""
    batch = history_batch(seqs, hist_start, hist_end, model.cfg.max_len)
    dev = model.item_emb.weight.device
    batch = Batch(*(t.to(dev) for t in (batch.items, batch.behaviors, batch.timestamps)))
    h = model(batch.items, batch.behaviors, batch.timestamps)
    n = batch.mask.sum(dim=1)
    scores = model.next_item_scores(h, batch.items, batch.behaviors).float()
    return UserStates(batch, h, (n - 1)[:, None], scores, torch.logsumexp(scores, dim=1, keepdim=True))


@torch.no_grad()
def candidate_signals(
    model: NextActionModel,
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    states: UserStates,
    cand: np.ndarray,
    t_query: np.ndarray,
    stats: ItemStats,
    *,
    features: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Head logits (C, M, NB) and ranker features (C, M, F) of candidates ``cand`` (C, M) item_idx.

    t_query: (C,) the moment of each prediction in ms (+inf = after every known event): item counts are
    taken before it. ``features=False``: the head's logits alone (features come back empty), for scoring
    without a ranker — the per-epoch validation, where the hand-made pair features would be most of the cost.
    """
    C, M = cand.shape
    nb = model.cfg.n_behaviors - 1
    dev = states.h.device
    counts = stats.counts(cand, np.asarray(t_query, dtype=np.float64)[:, None])  # (C, M, NB + 1)
    feats = torch.from_numpy(np.log1p(counts).astype(np.float32))[:, None].to(dev)
    cand_t = torch.from_numpy(cand)[:, None, :].to(dev)
    b = states.batch
    head = model.behavior_logits(states.h, b.items, b.behaviors, cand_t, states.upto, feats)[:, 0]
    head_np = head.float().cpu().numpy()
    if not features:
        return head_np, np.zeros((C, M, 0), dtype=np.float32)
    idx = torch.from_numpy(cand).to(dev)
    logit = states.scores.gather(1, idx)
    nxt = torch.stack([logit, logit - states.log_norm], dim=-1)
    pair = pair_features(
        seqs,
        hist_start,
        hist_end,
        np.repeat(np.arange(C), M),
        cand.reshape(-1),
        counts[..., :nb].reshape(-1, nb),
        rate_prior(stats.totals),
    ).reshape(C, M, -1)
    x = np.concatenate(
        [pair, np.log1p(counts[..., nb:]), nxt.cpu().numpy(), head_np], axis=-1, dtype=np.float32
    )
    return head_np, np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=-1e3)


# ---- the model as a behaviour scorer --------------------------------------------------------------------


class ModelBehaviorScorer:
    """Scores candidate sets with a trained model: the behaviour head, then the ranker if there is one.

    ``fit`` (the evaluation calls it with the valid window, as it does for the feature baselines) fits the
    ranker unless one was given; without ``fit`` and without a ranker the head's logits are the scores
    (checkpoint selection during training reads those).
    """

    name = "nextaction"

    def __init__(
        self,
        model: NextActionModel,
        *,
        stats: ItemStats | None = None,
        ranker: BehaviorRanker | None = None,
        chunk: int = 128,
        col_chunk: int = 1024,
        shortlist: int = SHORTLIST,
    ) -> None:
        if model.behavior is None:
            raise ValueError("this model has no behaviour head (train it with model.behavior_head = true)")
        self.model = model
        self.stats = stats
        self.ranker = ranker
        self.chunk = chunk
        self.col_chunk = col_chunk
        self.shortlist = shortlist
        self._last: tuple[Sequences, CandidateSet, np.ndarray, np.ndarray] | None = None  # see signals()

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self:
        if self.ranker is None:
            _, x = self.signals(data.seqs, train)
            self.ranker = BehaviorRanker.fit(x, train.labels)
        return self

    def as_of(self, seqs: Sequences) -> None:
        self.stats = ItemStats(seqs, self.model.cfg.n_behaviors - 1)
        self._last = None

    def _stats(self, seqs: Sequences) -> ItemStats:
        if self.stats is None:
            self.stats = ItemStats(seqs, self.model.cfg.n_behaviors - 1)
        return self.stats

    @torch.no_grad()
    def signals(
        self, seqs: Sequences, cands: CandidateSet, *, features: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Head logits (T, NB) and ranker features (T, F) of every candidate, users in chunks
        (``features=False``: the head's logits alone, features empty).

        The last result is kept: fitting on the valid window and then scoring it (calibration) is one pass.
        """
        last = self._last
        # a cached head-only pass cannot serve a request for features
        if last is not None and last[0] is seqs and last[1] is cands and features <= (last[3].shape[1] > 0):
            return last[2], last[3]
        model = self.model
        model.eval()
        stats = self._stats(seqs)
        times = np.asarray(seqs.timestamps)
        nb = model.cfg.n_behaviors - 1
        head = np.zeros((len(cands.items), nb), dtype=np.float32)
        x = np.zeros((len(cands.items), n_ranker_features(nb) if features else 0), dtype=np.float32)
        # a chunk's next-item scores are (rows, n_items + 1) floats: at most ~32 M of them (128 MB)
        rows_per_chunk = max(1, min(self.chunk, SCORE_BUDGET // (model.cfg.n_items + 1)))
        for rows in chunks(len(cands), rows_per_chunk):
            hs, he = cands.hist_start[rows], cands.hist_end[rows]
            states = user_states(model, seqs, hs, he)
            items, valid = cands.padded(rows)
            t_query = times[he]  # the window's start: all counts are from before it
            h_rows = np.zeros((*items.shape, nb), dtype=np.float32)
            x_rows = np.zeros((*items.shape, x.shape[1]), dtype=np.float32)
            for a in range(0, items.shape[1], self.col_chunk):
                sl = slice(a, a + self.col_chunk)
                h_rows[:, sl], x_rows[:, sl] = candidate_signals(
                    model,
                    seqs,
                    hs,
                    he,
                    states,
                    np.ascontiguousarray(items[:, sl]),
                    t_query,
                    stats,
                    features=features,
                )
            span = slice(cands.offsets[rows[0]], cands.offsets[rows[-1] + 1])
            head[span], x[span] = h_rows[valid], x_rows[valid]
        self._last = (seqs, cands, head, x)
        return head, x

    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        head, x = self.signals(seqs, cands, features=self.ranker is not None)
        return head if self.ranker is None else self.ranker(x)

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        times = np.asarray(seqs.timestamps)
        t_query = times[np.minimum(hist_end, len(times) - 1)].astype(np.float64)
        return rerank_for_behavior(
            self.model,
            seqs,
            hist_start,
            hist_end,
            behavior,
            shortlist=self.shortlist,
            stats=self._stats(seqs),
            t_query=t_query,
            ranker=self.ranker,
        )


@torch.no_grad()
def rerank_for_behavior(
    model: NextActionModel,
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    behavior: int,
    *,
    shortlist: int,
    stats: ItemStats,
    t_query: np.ndarray,
    ranker: BehaviorRanker | None,
) -> np.ndarray:
    """(B, n_items + 1) scores for "next item with ``behavior``": the shortlist (top next-item scores and
    the history's items) ordered by the behaviour logit (the ranker's, else the head's), above every other
    item in next-item order.

    t_query: (B,) the moment of the prediction in ms (+inf = after every known event), for ItemStats.
    """
    model.eval()
    states = user_states(model, seqs, hist_start, hist_end)
    scores = states.scores.cpu()
    k = min(shortlist, scores.shape[1] - 1)
    top = torch.topk(scores, k, dim=1).indices
    cand = torch.cat([top, states.batch.items.cpu()], dim=1)  # history padding (0) lands on column 0
    head, x = candidate_signals(
        model, seqs, hist_start, hist_end, states, cand.numpy(), np.asarray(t_query, dtype=np.float64), stats
    )
    z = torch.from_numpy((head if ranker is None else ranker(x))[..., behavior - 1])
    finite = torch.isfinite(scores)
    base = scores - scores.masked_fill(~finite, float("-inf")).amax(dim=1, keepdim=True) - 1e3
    base = base.scatter(1, cand, z.float().clamp(-100, 100))
    base[:, 0] = float("-inf")
    return base.numpy()
