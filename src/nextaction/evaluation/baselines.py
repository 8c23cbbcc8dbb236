"""Non-neural baselines that every model must beat, behind the scorer protocol of ``evaluation/ranking.py``.

A scorer is fitted on the TRAIN events of a :class:`~nextaction.data.dataset.PreparedDataset` and scores
batches of histories::

    scorer.fit(dataset)
    scores = scorer.score(histories, behaviors=behaviors)  # (B, n_items + 1) float64; column 0 is -inf

``histories[b]`` holds user b's item indices before the target, oldest first; ``behaviors[b]`` (optional)
their behaviour indices. Scores are only compared within a row. Every baseline breaks ties by training
popularity, scaled so that it can never outrank the baseline's own evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, Self, TypeVar

import numpy as np

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import PAD_IDX, TRAIN
from nextaction.errors import InputError

_MS_PER_DAY = 86_400_000
_T = TypeVar("_T")

# How much a past interaction says "this user wants this item again". Names are matched lower-cased;
# behaviours not listed count like a view.
DEFAULT_STRENGTHS: Mapping[str, float] = {
    "view": 1.0,
    "pv": 1.0,
    "click": 1.0,
    "fav": 1.5,
    "like": 1.5,
    "cart": 2.0,
    "addtocart": 2.0,
    "add_to_cart": 2.0,
    "carts": 2.0,
    "buy": 3.0,
    "purchase": 3.0,
    "order": 3.0,
    "orders": 3.0,
    "transaction": 3.0,
}


class Scorer(Protocol):
    """What ``evaluation/ranking.py`` needs from a baseline or a model."""

    name: str

    def fit(self, dataset: PreparedDataset) -> Self: ...

    def score(
        self, histories: Sequence[np.ndarray], *, behaviors: Sequence[np.ndarray] | None = None
    ) -> np.ndarray: ...


class MostPopular:
    """Recommends what was most often interacted with in training, to everyone."""

    name: ClassVar[str] = "most-popular"

    def __init__(self) -> None:
        self._row: np.ndarray | None = None

    def fit(self, dataset: PreparedDataset) -> Self:
        counts = _train_counts(dataset)
        self._row = _as_row(counts)
        return self

    def score(
        self, histories: Sequence[np.ndarray], *, behaviors: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        return np.tile(_fitted(self._row, self), (len(histories), 1))


class RecentlyPopular:
    """Recommends what was popular at the end of training: counts in the last window, ties by all-time counts.

    The window is the last ``days`` days of training time when given, else the last ``fraction`` of the
    training time span.
    """

    name: ClassVar[str] = "recently-popular"

    def __init__(self, *, days: float | None = None, fraction: float = 0.1) -> None:
        if days is not None and days <= 0:
            raise InputError(f"recently-popular: days must be > 0, got {days}")
        if not 0 < fraction <= 1:
            raise InputError(f"recently-popular: fraction must be in (0, 1], got {fraction}")
        self.days = days
        self.fraction = fraction
        self._row: np.ndarray | None = None

    def fit(self, dataset: PreparedDataset) -> Self:
        seqs = dataset.seqs
        train = np.asarray(seqs.split) == TRAIN
        items, times = np.asarray(seqs.items)[train], np.asarray(seqs.timestamps)[train]
        recent = np.zeros(dataset.n_items + 1)
        if items.size:
            t_min, t_max = int(times.min()), int(times.max())
            span = self.days * _MS_PER_DAY if self.days is not None else self.fraction * (t_max - t_min)
            in_window = times >= t_max - span
            recent = np.bincount(items[in_window], minlength=dataset.n_items + 1).astype(np.float64)
        all_time = _train_counts(dataset)
        # All-time counts scaled into [0, 1) only separate items with equal recent counts.
        self._row = _as_row(recent + all_time / (all_time.max() + 1.0))
        return self

    def score(
        self, histories: Sequence[np.ndarray], *, behaviors: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        return np.tile(_fitted(self._row, self), (len(histories), 1))


class ItemToItem:
    """ "Who did X next did Y": transition probabilities between consecutive training items.

    A user's score for item y is ``sum_k decay**k * P(y | x_k)`` over their last ``n_recent`` distinct items
    ``x_0`` (most recent), ``x_1``, …; popularity breaks ties. Repeated consecutive events on one item
    (view → cart → buy) count as one step, so transitions are between different items.
    """

    name: ClassVar[str] = "item-to-item"

    def __init__(self, *, n_recent: int = 3, decay: float = 0.5, smoothing: float = 1.0) -> None:
        if n_recent < 1:
            raise InputError(f"item-to-item: n_recent must be at least 1, got {n_recent}")
        if not 0 < decay <= 1:
            raise InputError(f"item-to-item: decay must be in (0, 1], got {decay}")
        if smoothing < 0:
            raise InputError(f"item-to-item: smoothing must be >= 0, got {smoothing}")
        self.n_recent = n_recent
        self.decay = decay
        self.smoothing = smoothing  # added to each source's total: rare sources give weaker evidence
        self._fit: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def fit(self, dataset: PreparedDataset) -> Self:
        seqs = dataset.seqs
        n_rows = dataset.n_items + 1
        user = np.repeat(np.arange(seqs.n_users), np.diff(np.asarray(seqs.offsets)))
        train = np.flatnonzero(np.asarray(seqs.split) == TRAIN)
        t_user, t_item = user[train], np.asarray(seqs.items)[train].astype(np.int64)
        # Collapse runs of the same item within a user, then pair each event with the next one.
        keep = np.ones(train.size, dtype=bool)
        keep[1:] = (t_user[1:] != t_user[:-1]) | (t_item[1:] != t_item[:-1])
        t_user, t_item = t_user[keep], t_item[keep]
        same = t_user[1:] == t_user[:-1]
        keys, counts = np.unique(t_item[:-1][same] * n_rows + t_item[1:][same], return_counts=True)
        src, dst = keys // n_rows, keys % n_rows
        totals = np.bincount(src, counts, minlength=n_rows)
        prob = counts / (totals[src] + self.smoothing)
        row_ptr = np.searchsorted(src, np.arange(n_rows + 1))
        popularity = _train_counts(dataset)
        # Tie-breaker below the weakest possible transition evidence, so it only orders equal scores.
        weakest = self.decay ** (self.n_recent - 1) * (prob.min() if prob.size else 1.0)
        tiebreak = _as_row(popularity / (popularity.max() + 1.0) * 0.5 * weakest)
        self._fit = (row_ptr, dst, prob.astype(np.float64), tiebreak)
        return self

    def score(
        self, histories: Sequence[np.ndarray], *, behaviors: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        row_ptr, dst, prob, tiebreak = _fitted(self._fit, self)
        out = np.tile(tiebreak, (len(histories), 1))
        for b, history in enumerate(histories):
            for k, item in enumerate(_recent_distinct(history, self.n_recent)):
                start, end = row_ptr[item], row_ptr[item + 1]
                out[b, dst[start:end]] += self.decay**k * prob[start:end]
        return out


class RepeatRecent:
    """Recommends the user's own recent items, by recency and behaviour strength (buy > cart > view).

    An item's score is ``sum strength(behaviour) * decay**age`` over the user's last ``window`` events
    (age 0 = most recent); popularity breaks ties. Without ``behaviors`` every event counts as a view.
    """

    name: ClassVar[str] = "repeat-recent"

    def __init__(
        self, *, window: int = 50, decay: float = 0.9, strengths: Mapping[str, float] | None = None
    ) -> None:
        check_repeat_options(window=window, decay=decay)
        self.window = window
        self.decay = decay
        self.strengths = dict(DEFAULT_STRENGTHS if strengths is None else strengths)
        self._fit: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, dataset: PreparedDataset) -> Self:
        strength = behavior_strengths(dataset.behaviors, self.strengths)
        popularity = _train_counts(dataset)
        weakest = float(strength[1:].min(initial=1.0)) * self.decay ** (self.window - 1)
        tiebreak = _as_row(popularity / (popularity.max() + 1.0) * 0.5 * weakest)
        self._fit = (strength, tiebreak)
        return self

    def score(
        self, histories: Sequence[np.ndarray], *, behaviors: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        strength, tiebreak = _fitted(self._fit, self)
        out = np.tile(tiebreak, (len(histories), 1))
        for b, history in enumerate(histories):
            items = np.asarray(history)[-self.window :]
            if behaviors is None:
                weight = np.ones(items.size, dtype=np.float64)
            else:
                weight = strength[np.asarray(behaviors[b])[-self.window :]]
            age = np.arange(items.size - 1, -1, -1)
            np.add.at(out[b], items, weight * self.decay**age)
        out[:, PAD_IDX] = -np.inf
        return out


BASELINES: dict[str, type[MostPopular | RecentlyPopular | ItemToItem | RepeatRecent]] = {
    cls.name: cls for cls in (MostPopular, RecentlyPopular, ItemToItem, RepeatRecent)
}


def check_repeat_options(*, window: int, decay: float) -> None:
    """The options of the repeat-recent scorers (next-item and behaviour): a user mistake is an InputError."""
    if window < 1:
        raise InputError(f"repeat-recent: window must be at least 1, got {window}")
    if not 0 < decay <= 1:
        raise InputError(f"repeat-recent: decay must be in (0, 1], got {decay}")


def behavior_strengths(behaviors: Sequence[str], strengths: Mapping[str, float]) -> np.ndarray:
    """(len(behaviors),) float64 evidence weight per behaviour index, by lower-cased name (padding 0, unknown 1)."""
    out = np.array([strengths.get(name.lower(), 1.0) for name in behaviors], dtype=np.float64)
    out[PAD_IDX] = 0.0
    return out


def _train_counts(dataset: PreparedDataset) -> np.ndarray:
    seqs = dataset.seqs
    items = np.asarray(seqs.items)[np.asarray(seqs.split) == TRAIN]
    return np.bincount(items, minlength=dataset.n_items + 1).astype(np.float64)


def _as_row(scores: np.ndarray) -> np.ndarray:
    """A float64 score row, padding at -inf. float64, not float32: a tie-break added to counts in the
    thousands needs more than float32's 24 bits, or distinct items tie and pessimistic ranking charges the
    baseline for ties it did not make."""
    row = scores.astype(np.float64)
    row[PAD_IDX] = -np.inf
    return row


def _recent_distinct(history: np.ndarray, n: int) -> list[int]:
    """The last ``n`` distinct items of ``history``, most recent first."""
    seen: list[int] = []
    for item in np.asarray(history)[::-1].tolist():
        if item != PAD_IDX and item not in seen:
            seen.append(item)
            if len(seen) == n:
                break
    return seen


def _fitted(state: _T | None, scorer: object) -> _T:
    if state is None:
        raise RuntimeError(f"{type(scorer).__name__}.score() called before fit()")
    return state
