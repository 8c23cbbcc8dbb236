"""Baselines for behaviour prediction: how likely is user U to view / cart / buy each candidate item?

The transformer's behaviour head only earns its cost if it beats these. All of them implement
:class:`BehaviorScorer`: ``fit(data, train=valid_window_candidates)`` then ``behavior_scores`` for labelled
candidate sets (raw scores, calibrated later) and ``rank_scores`` over the whole catalogue (next-buy
HR/NDCG). Statistics come from TRAIN events only, so nothing of the windows being scored leaks in.

- :class:`BehaviorPopularity` ("popularity"): item i's score for behaviour b is how often b happened to
  i in TRAIN. The floor: a model that ignores the user entirely.
- :class:`RepeatBehavior` ("repeat-recent"): the user's own recent events on the item, weighted by how
  strong the behaviour was (buy > cart > view) and how recent. In shops most conversions are on items
  the user already touched, so this is the baseline a sequence model most often fails to beat.
- :class:`FeatureModel` ("logreg", "gbm"): a classifier per behaviour on hand-made (history, item)
  features, fitted on the VALID window's labels. It learns funnel rules such as "carted and not bought
  yet → bought soon"; if the transformer cannot beat it, it has not learned more than those rules. Its
  item counts are the model's ranker's: :class:`ItemStats` as of the prediction moment.

Scores of every baseline break ties by TRAIN popularity, so full-catalogue rankings are never constant.
"TRAIN" is whatever the ``data`` given to ``fit`` marks TRAIN: the evaluation passes the model's own
training events (``training.loop.trained_view``), so a baseline never learns from less than the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self, TypeVar

import numpy as np

from nextaction.behavior.candidates import (
    BehaviorScorer,
    CandidateSet,
    ItemStats,
    behavior_counts,
    counts_before_window,
    expand_spans,
    lookup,
    pair_features,
    rate_prior,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import PAD_IDX, TRAIN
from nextaction.errors import InputError
from nextaction.evaluation.baselines import DEFAULT_STRENGTHS, behavior_strengths, check_repeat_options

_T = TypeVar("_T")
_PROB_CLIP = 1e-6  # logits stay within ±13.8
# FeatureModel.rank_scores: items off the shortlist sink this far below it. Scores are float64, which still
# resolves the popularity tie-break at this magnitude (float32 would not: ties charged to the baseline).
_OFF_SHORTLIST = 1000.0
_SHORTLIST_TIEBREAK = 0.01  # popularity added to shortlist logits: orders ties, never a real difference
_N_POPULAR = 100  # most popular items of the behaviour added to every user's shortlist


class BehaviorPopularity:
    """Scores item i for behaviour b by log1p(TRAIN count of b on i), ties broken by total TRAIN count."""

    name: str = "popularity"

    def __init__(self) -> None:
        self._rows: np.ndarray | None = None  # (NB, n_items + 1)

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self:
        self._rows = _popularity_rows(_behavior_counts(data, train))
        return self

    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        rows = _fitted(self._rows, self)
        return np.ascontiguousarray(rows[:, cands.items].T)

    def as_of(self, seqs: Sequences) -> None:
        rows = _fitted(self._rows, self)
        self._rows = _popularity_rows(counts_before_window(seqs, rows.shape[1] - 1, rows.shape[0]))

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        rows = _fitted(self._rows, self)
        out = np.tile(rows[_column(behavior, len(rows))], (len(hist_start), 1))
        out[:, PAD_IDX] = -np.inf
        return out


class RepeatBehavior:
    """Scores the user's own items: Σ strength(behaviour) · decay**age over their last ``window`` events.

    The evidence is the same for every behaviour column (it says "this item is coming back", not how);
    behaviour b's TRAIN popularity, scaled below the weakest possible evidence, only orders equal scores.
    """

    name: str = "repeat-recent"

    def __init__(
        self, *, window: int = 50, decay: float = 0.9, strengths: Mapping[str, float] | None = None
    ) -> None:
        check_repeat_options(window=window, decay=decay)
        self.window = window
        self.decay = decay
        self.strengths = dict(DEFAULT_STRENGTHS if strengths is None else strengths)
        self._fit: tuple[np.ndarray, np.ndarray] | None = None  # strength per behaviour, (NB, n+1) tie-break

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self:
        strength = behavior_strengths(data.behaviors, self.strengths)
        self._fit = (strength, self._tiebreak(strength, _behavior_counts(data, train)))
        return self

    def as_of(self, seqs: Sequences) -> None:
        strength, tiebreak = _fitted(self._fit, self)
        counts = counts_before_window(seqs, tiebreak.shape[1] - 1, len(tiebreak))
        self._fit = (strength, self._tiebreak(strength, counts))

    def _tiebreak(self, strength: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(NB, n_items + 1) popularity scaled below the weakest evidence: it only orders equal scores."""
        rows = _popularity_rows(counts)
        weakest = float(strength[1:].min(initial=1.0)) * self.decay ** (self.window - 1)
        return rows / (rows.max(axis=1, keepdims=True) + 1.0) * 0.5 * weakest

    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        strength, tiebreak = _fitted(self._fit, self)
        keys, values = self._evidence(seqs, cands.hist_start, cands.hist_end, tiebreak.shape[1], strength)
        evidence = np.append(values, 0.0)[
            lookup(keys, cands.user_of_candidate() * tiebreak.shape[1] + cands.items)
        ]
        return evidence[:, None] + tiebreak[:, cands.items].T

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        strength, tiebreak = _fitted(self._fit, self)
        n_cols = tiebreak.shape[1]
        out = np.tile(tiebreak[_column(behavior, len(tiebreak))], (len(hist_start), 1))
        keys, values = self._evidence(seqs, hist_start, hist_end, n_cols, strength)
        out.reshape(-1)[keys] += values  # keys = row * n_cols + item: flat positions
        out[:, PAD_IDX] = -np.inf
        return out

    def _evidence(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, n_cols: int, strength: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted keys ``row * n_cols + item`` of the items in each history's last ``window`` events, and
        their decayed strength sums."""
        hist_end = np.asarray(hist_end, dtype=np.int64)
        row, pos = expand_spans(
            np.maximum(np.asarray(hist_start, dtype=np.int64), hist_end - self.window), hist_end
        )
        weight = strength[np.asarray(seqs.behaviors)[pos]] * self.decay ** (hist_end[row] - 1 - pos)
        keys, inverse = np.unique(row * n_cols + np.asarray(seqs.items)[pos], return_inverse=True)
        return keys, np.bincount(inverse, weight, minlength=len(keys))


class FeatureModel:
    """One classifier per behaviour on hand-made (history, candidate) features, fitted on ``train``'s labels.

    Features, for behaviours b = 1 … NB (see :meth:`_features`): log1p count of b on the candidate in the
    history; log1p events and log1p seconds since the last interaction with it (to the history's end;
    a large constant if never); one-hot behaviour of that last interaction; the item's log1p count of b
    and its smoothed conversion rates count(b) / count(first behaviour) for b ≥ 2, both as of the
    prediction moment (``ItemStats``, the model ranker's statistics); the user's log1p history length and
    log1p count of b.
    """

    def __init__(
        self, *, kind: Literal["gbm", "logreg"] = "gbm", random_state: int = 0, n_threads: int = 1
    ) -> None:
        if kind not in ("gbm", "logreg"):
            raise InputError(f"feature model: kind must be 'gbm' or 'logreg', got {kind!r}")
        if n_threads < 1:
            raise InputError(f"feature model: n_threads must be at least 1, got {n_threads}")
        self.kind = kind
        self.name: str = kind
        self.random_state = random_state
        # One thread by default: with torch loaded, the process holds two OpenMP runtimes whose spinning
        # workers starve each other on a busy machine; HistGradientBoosting then runs 10-100x slower.
        self.n_threads = n_threads
        self._fit: tuple[ItemStats, np.ndarray, list[Any]] | None = None  # stats, popularity rows, models

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self:
        counts = _behavior_counts(data, train)
        stats = ItemStats(data.seqs, counts.shape[1])
        x = _features(
            data.seqs, train.hist_start, train.hist_end, train.user_of_candidate(), train.items, stats
        )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.n_threads):
            models = [self._classifier(x, train.labels[:, k]) for k in range(counts.shape[1])]
        self._fit = (stats, _popularity_rows(counts), models)
        return self

    def as_of(self, seqs: Sequences) -> None:
        stats, rows, models = _fitted(self._fit, self)
        self._fit = (ItemStats(seqs, stats.n_behaviors), rows, models)

    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        stats, _, models = _fitted(self._fit, self)
        x = _features(seqs, cands.hist_start, cands.hist_end, cands.user_of_candidate(), cands.items, stats)
        out = np.empty((len(cands.items), len(models)), dtype=np.float64)
        for k in range(len(models)):
            out[:, k] = self._logit(x, cands.items, k)
        return out

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        """Model log-odds (+ a popularity tie-break) for a shortlist: the user's items ∪ the most popular items
        of the behaviour. Every other item keeps its popularity order, 1000 below the shortlist: scoring the
        whole catalogue would cost a model evaluation per item and user for items the model knows nothing
        about."""
        stats, rows, _ = _fitted(self._fit, self)
        k = _column(behavior, len(rows))
        n_cols = rows.shape[1]
        out = np.tile(rows[k] - _OFF_SHORTLIST, (len(hist_start), 1))
        row, pos = expand_spans(np.asarray(hist_start, dtype=np.int64), np.asarray(hist_end, dtype=np.int64))
        popular = np.argsort(-rows[k, 1:], kind="stable")[:_N_POPULAR] + 1
        keys = np.union1d(
            row * n_cols + np.asarray(seqs.items)[pos],
            (np.arange(len(hist_start))[:, None] * n_cols + popular[None, :]).ravel(),
        )
        keys = keys[keys % n_cols != PAD_IDX]
        items = keys % n_cols
        x = _features(seqs, hist_start, hist_end, keys // n_cols, items, stats)
        tiebreak = _SHORTLIST_TIEBREAK * rows[k] / (rows[k].max() + 1.0)
        out.reshape(-1)[keys] = self._logit(x, items, k) + tiebreak[items]
        out[:, PAD_IDX] = -np.inf
        return out

    def _classifier(self, x: np.ndarray, y: np.ndarray) -> Any:
        """A fitted classifier, or None when ``y`` has one class (nothing to learn: popularity stands in)."""
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            return None
        if self.kind == "logreg":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            # Early stopping holds out a stratified 10%: with a handful of positives that split fails or
            # stops on noise, so tiny classes train for the full (short) schedule instead.
            model = HistGradientBoostingClassifier(
                max_iter=200,
                learning_rate=0.1,
                early_stopping=min(n_pos, len(y) - n_pos) >= 50,
                random_state=self.random_state,
            )
        return model.fit(x, y)

    def _logit(self, x: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
        """Log-odds of behaviour k + 1, or the item's popularity for a behaviour without a classifier."""
        _, rows, models = _fitted(self._fit, self)
        if models[k] is None:
            return rows[k, items]
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.n_threads):
            p = np.clip(models[k].predict_proba(x)[:, 1], _PROB_CLIP, 1 - _PROB_CLIP)
        return np.log(p / (1 - p))


def default_behavior_baselines() -> list[BehaviorScorer]:
    """Fresh, unfitted instances of every behaviour baseline, cheapest first."""
    return [BehaviorPopularity(), RepeatBehavior(), FeatureModel(kind="logreg"), FeatureModel(kind="gbm")]


def _features(
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
    stats: ItemStats,
) -> np.ndarray:
    """candidates.pair_features with the items' counts as of each prediction moment — the first event
    after the history (the window's start), as the model's ranker reads them (``ModelBehaviorScorer``)."""
    times = np.asarray(seqs.timestamps)
    hist_end = np.asarray(hist_end, dtype=np.int64)
    t_query = times[np.minimum(hist_end, len(times) - 1)].astype(np.float64)[np.asarray(rows)]
    counts = stats.counts(np.asarray(items, dtype=np.int64), t_query)[:, : stats.n_behaviors]
    return pair_features(seqs, hist_start, hist_end, rows, items, counts, rate_prior(stats.totals))


def _behavior_counts(data: PreparedDataset, train: CandidateSet) -> np.ndarray:
    """(n_items + 1, NB) float64 TRAIN counts per item and behaviour; checks ``train`` has NB labels."""
    nb = len(data.behaviors) - 1
    if train.n_behaviors != nb:
        raise InputError(f"candidates have {train.n_behaviors} behaviour labels, the dataset has {nb}")
    return behavior_counts(data.seqs, data.n_items, nb, np.asarray(data.seqs.split) == TRAIN)


def _popularity_rows(counts: np.ndarray) -> np.ndarray:
    """(NB, n_items + 1) float64 log1p(count of b) plus a tie-break by total count.

    The tie-break stays below half the smallest gap between two distinct log1p counts, so it only orders
    items with equal counts of b (and keeps a behaviour never seen in TRAIN from giving constant rows).
    """
    top = counts.max(axis=0)
    gap = np.where(top > 0, np.log1p(top) - np.log1p(np.maximum(top - 1, 0)), 1.0)
    total = counts.sum(axis=1)
    rows = np.log1p(counts.T) + 0.5 * gap[:, None] * total[None, :] / (total.max(initial=0.0) + 1.0)
    rows[:, PAD_IDX] = 0.0
    return rows


def _column(behavior: int, nb: int) -> int:
    if not 1 <= behavior <= nb:
        raise InputError(f"behavior must be a behaviour index in 1..{nb}, got {behavior}")
    return behavior - 1


def _fitted(state: _T | None, scorer: object) -> _T:
    if state is None:
        raise RuntimeError(f"{type(scorer).__name__} used before fit()")
    return state
