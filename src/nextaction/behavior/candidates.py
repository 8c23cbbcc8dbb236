"""Candidate sets for behaviour prediction: "how likely is user U to view / cart / buy each of these items?"

Evaluation protocol (recorded with every result, see :func:`window_candidates`):
- a *window* is a user's events of one split (VALID or TEST); the user's history is everything before the
  window's first event (for a temporal split: everything before the cutoff);
- positives = the distinct items the user touched in the window, each labelled per behaviour
  (``labels[j, b - 1]`` is True when the user did behaviour ``b`` on item j in the window);
- negatives = ``ratio`` items per positive, sampled without replacement per user from the popularity
  distribution *within the same window* (:func:`window_popularity`: the items other users were active on
  then — what a re-ranking stage would be given), never one of the user's positives. Sampling by the
  popularity of another period would let popularity or freshness alone tell positives from negatives
  (in a shop, many window items are new: zero training events). One generator draws for all users in
  order, so a fixed seed gives the same set every time;
- users need at least one history event.

Candidates are stored flat (CSR by user) because users differ wildly in window size; scorers see them a
chunk of users at a time, padded with item 0.

Behaviour indices follow the dataset's vocabulary: index 0 is padding, so a model's behaviour output ``k``
belongs to behaviour index ``k + 1`` and ``NB = len(dataset.behaviors) - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import torch

from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import PAD_IDX, TEST, TRAIN

# Names that mark the behaviour a shop cares most about, strongest first. ``primary_behavior`` picks the
# first one present; otherwise the last behaviour of the vocabulary (funnels are listed view → … → buy).
PRIMARY_NAMES = ("buy", "purchase", "order", "orders", "transaction", "enrol", "enroll", "like", "fav")


@dataclass(frozen=True)
class CandidateSet:
    """Per user: a history span in ``Sequences`` and a flat list of labelled candidate items."""

    user_idx: np.ndarray  # (U,) int64
    hist_start: np.ndarray  # (U,) int64, offsets into the Sequences arrays
    hist_end: np.ndarray  # (U,) int64, exclusive = the window's first event
    offsets: np.ndarray  # (U + 1,) int64 into items/labels
    items: np.ndarray  # (T,) int64 item_idx
    labels: np.ndarray  # (T, NB) bool

    def __len__(self) -> int:
        return len(self.user_idx)

    @property
    def n_behaviors(self) -> int:
        return self.labels.shape[1]

    def padded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of users ``rows`` as (len(rows), N) item_idx, 0-padded, and the (len(rows), N) mask."""
        counts = self.offsets[rows + 1] - self.offsets[rows]
        n = max(1, int(counts.max()) if len(rows) else 1)
        valid = np.arange(n)[None, :] < counts[:, None]
        idx = np.where(valid, self.offsets[rows][:, None] + np.arange(n)[None, :], 0)
        return np.where(valid, self.items[idx] if len(self.items) else 0, PAD_IDX), valid

    def user_of_candidate(self) -> np.ndarray:
        """(T,) position in ``user_idx`` of every candidate (for per-user metrics)."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))


class BehaviorScorer(Protocol):
    """The model (behaviors.ModelBehaviorScorer) or a baseline (behavior_baselines), per behaviour."""

    name: str

    def fit(self, data: PreparedDataset, *, train: CandidateSet) -> Self: ...

    def behavior_scores(self, seqs: Sequences, cands: CandidateSet) -> np.ndarray:
        """(len(cands.items), NB) raw scores, higher = more likely; column k is behaviour index k + 1."""
        ...

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        """(B, n_items + 1) scores of every item as the next one the user does ``behavior`` on."""
        ...

    def as_of(self, seqs: Sequences) -> None:
        """Take item statistics from every event of ``seqs`` outside its TEST split: the state of the
        world at the start of the window being scored (rolling-origin evaluation, behavior/windows.py).
        The fitted parameters stay."""
        ...


def behavior_counts(seqs: Sequences, n_items: int, n_behaviors: int, keep: np.ndarray) -> np.ndarray:
    """(n_items + 1, NB) float64 per item and behaviour: the events of ``seqs`` where ``keep`` (E,) is True."""
    items = np.asarray(seqs.items)[keep].astype(np.int64)
    beh = np.asarray(seqs.behaviors)[keep].astype(np.int64)
    ok = (beh >= 1) & (beh <= n_behaviors)
    flat = np.bincount(items[ok] * n_behaviors + beh[ok] - 1, minlength=(n_items + 1) * n_behaviors)
    counts = flat.reshape(-1, n_behaviors).astype(np.float64)
    counts[PAD_IDX] = 0.0
    return counts


def counts_before_window(seqs: Sequences, n_items: int, n_behaviors: int) -> np.ndarray:
    """(n_items + 1, NB) float64 per item and behaviour: the events of ``seqs`` outside its TEST split."""
    return behavior_counts(seqs, n_items, n_behaviors, np.asarray(seqs.split) != TEST)


def train_popularity(data: PreparedDataset) -> np.ndarray:
    """(n_items + 1,) float64 TRAIN event counts per item_idx; index 0 is 0."""
    seqs = data.seqs
    items = np.asarray(seqs.items)[np.asarray(seqs.split) == TRAIN]
    counts = np.bincount(items, minlength=data.n_items + 1).astype(np.float64)
    counts[PAD_IDX] = 0.0
    return counts


def window_popularity(data: PreparedDataset, split: int) -> np.ndarray:
    """(n_items + 1,) float64 event counts per item_idx within one split's window (what is active then)."""
    seqs = data.seqs
    items = np.asarray(seqs.items)[np.asarray(seqs.split) == split]
    counts = np.bincount(items, minlength=data.n_items + 1).astype(np.float64)
    counts[PAD_IDX] = 0.0
    return counts


def primary_behavior(behaviors: list[str]) -> int | None:
    """The behaviour index of the conversion (buy, …) in a vocabulary; None for single-behaviour logs."""
    if len(behaviors) <= 2:
        return None
    lowered = [b.lower() for b in behaviors]
    for name in PRIMARY_NAMES:
        if name in lowered[1:]:
            return lowered.index(name)
    return len(behaviors) - 1


def window_candidates(
    seqs: Sequences,
    *,
    split: int,
    n_behaviors: int,
    popularity: np.ndarray,
    ratio: int = 20,
    seed: int = 0,
    min_history: int = 1,
    users: np.ndarray | None = None,
) -> CandidateSet:
    """Labelled candidates for every user with events in ``split`` (see the module docstring); only for
    ``users`` (user positions) when given: e.g. the validated users, whose window the model never learned."""
    only = None if users is None else np.asarray(users)
    split_codes = np.asarray(seqs.split)
    offsets = np.asarray(seqs.offsets)
    items_all = np.asarray(seqs.items)
    beh_all = np.asarray(seqs.behaviors)
    in_window = np.flatnonzero(split_codes == split)
    users = np.searchsorted(offsets, in_window, side="right") - 1
    # the window's first event per user = the end of their history
    first = np.concatenate([[True], users[1:] != users[:-1]]) if len(users) else np.zeros(0, bool)
    hist_end = in_window[first]
    u_idx = users[first]
    hist_start = offsets[u_idx]
    keep_user = hist_end - hist_start >= min_history
    if only is not None:
        keep_user &= np.isin(u_idx, only)
    keep_user_of = np.zeros(len(offsets) - 1, dtype=bool)
    keep_user_of[u_idx[keep_user]] = True
    ev_keep = keep_user_of[users]
    ev_users, ev_items, ev_beh = users[ev_keep], items_all[in_window][ev_keep], beh_all[in_window][ev_keep]

    # positives: distinct (user, item) pairs with one label column per behaviour
    n_items = len(popularity)
    pair = ev_users.astype(np.int64) * n_items + ev_items
    uniq, inverse = np.unique(pair, return_inverse=True)
    labels = np.zeros((len(uniq), n_behaviors), dtype=bool)
    labels[inverse, ev_beh - 1] = True
    pos_user, pos_item = uniq // n_items, uniq % n_items

    users_kept = u_idx[keep_user]
    n_pos = np.bincount(np.searchsorted(users_kept, pos_user), minlength=len(users_kept))
    neg_user, neg_item = _popularity_negatives(
        users_kept, n_pos * ratio, popularity, set(uniq.tolist()), seed=seed
    )

    all_user = np.concatenate([pos_user, neg_user])
    all_item = np.concatenate([pos_item, neg_item])
    all_labels = np.concatenate([labels, np.zeros((len(neg_item), n_behaviors), dtype=bool)])
    order = np.lexsort((np.arange(len(all_user)), all_user))  # by user, positives first, stable
    counts = np.bincount(np.searchsorted(users_kept, all_user[order]), minlength=len(users_kept))
    return CandidateSet(
        user_idx=users_kept.astype(np.int64),
        hist_start=hist_start[keep_user].astype(np.int64),
        hist_end=hist_end[keep_user].astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=all_item[order].astype(np.int64),
        labels=all_labels[order],
    )


def _popularity_negatives(
    users: np.ndarray, wanted: np.ndarray, popularity: np.ndarray, positives: set[int], *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``wanted[u]`` distinct popularity-sampled items per user, none of them a positive of theirs.

    Deterministic for a seed: one generator draws for all users in order, oversampling and then keeping
    the first distinct draws of each user.
    """
    n_items = len(popularity)
    total = popularity.sum()
    if total <= 0 or wanted.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = popularity / total
    n_real = int((popularity > 0).sum())
    rng = np.random.default_rng(seed)
    out_u, out_i = [], []
    remaining = np.minimum(wanted, n_real)
    pending = np.flatnonzero(remaining > 0)
    have: dict[int, set[int]] = {int(u): set() for u in users[pending]}
    for _ in range(8):  # a few rounds settle almost every user; the rest keep what they got
        if len(pending) == 0:
            break
        draws_per = (remaining[pending] * 1.3 + 4).astype(np.int64)
        draw_users = np.repeat(pending, draws_per)
        draw_items = rng.choice(n_items, size=len(draw_users), p=p)
        next_pending = []
        start = 0
        for row, k in zip(pending.tolist(), draws_per.tolist(), strict=True):
            u = int(users[row])
            got = have[u]
            for item in draw_items[start : start + k].tolist():
                if remaining[row] == 0:
                    break
                if item in got or u * n_items + item in positives:
                    continue
                got.add(item)
                out_u.append(u)
                out_i.append(item)
                remaining[row] -= 1
            start += k
            if remaining[row] > 0:
                next_pending.append(row)
        pending = np.asarray(next_pending, dtype=np.int64)
    return np.asarray(out_u, np.int64), np.asarray(out_i, np.int64)


# ---- item statistics as of a moment (popularity, freshness) --------------------------------------------

_TIME_BITS = 41  # ms offsets up to ~69 years fit beside the item index in one int64 key
RECENT_MS = 7 * 86_400_000  # "recent popularity" window


class ItemStats:
    """How often each item was done, per behaviour, strictly before a given moment — for any moment.

    The behaviour head reads these as features: popularity per behaviour (and so conversion rates) and
    recent popularity, as known at prediction time. Counting only events *before* the query moment keeps
    training honest (a position never counts its own future) and makes a brand-new item look new (count 0)
    both in training and at serving time. Built from every event not in the TEST split.

    Queries are vectorised: events are sorted by the key ``item << 41 | (t - t0)`` per behaviour, so a count
    is the difference of two ``searchsorted`` results.
    """

    def __init__(self, seqs: Sequences, n_behaviors: int, *, exclude_split: int | None = TEST) -> None:
        """Counts every event except those of ``exclude_split`` (None = every event, as when serving)."""
        keep = np.ones(len(seqs.items), dtype=bool)
        if exclude_split is not None:
            keep = np.asarray(seqs.split) != exclude_split
        items = np.asarray(seqs.items)[keep].astype(np.int64)
        behaviors = np.asarray(seqs.behaviors)[keep]
        times = np.asarray(seqs.timestamps)[keep].astype(np.int64)
        self.t0 = int(times.min()) if len(times) else 0
        self.t_end = float(times.max()) + 1 if len(times) else 0.0  # "now" = just after the last event
        keys = (items << _TIME_BITS) | np.clip(times - self.t0, 0, (1 << _TIME_BITS) - 1)
        self.n_behaviors = n_behaviors
        self.by_behavior = [np.sort(keys[behaviors == b + 1]) for b in range(n_behaviors)]
        self.all = np.sort(keys)

    @property
    def n_features(self) -> int:
        return self.n_behaviors + 1

    def _offset(self, t: np.ndarray) -> np.ndarray:
        return np.clip(t - self.t0, 0, (1 << _TIME_BITS) - 1).astype(np.int64)

    @property
    def totals(self) -> np.ndarray:
        """(NB,) float64 events counted per behaviour (for global conversion rates)."""
        return np.array([len(k) for k in self.by_behavior], dtype=np.float64)

    def counts(self, items: np.ndarray, t_query: np.ndarray | float) -> np.ndarray:
        """(…, NB + 1) float64: count of each behaviour on the item before t_query, and events on it in the
        week before t_query. ``t_query`` (ms) broadcasts against ``items``; +inf = now."""
        items = np.asarray(items, dtype=np.int64)
        t = np.broadcast_to(np.asarray(t_query, dtype=np.float64), items.shape)
        t = np.where(np.isfinite(t), t, self.t_end)
        base = items << _TIME_BITS
        q = base | self._offset(t)
        out = np.empty((*items.shape, self.n_features), dtype=np.float64)
        for b, keys in enumerate(self.by_behavior):
            out[..., b] = np.searchsorted(keys, q) - np.searchsorted(keys, base)
        week_ago = base | self._offset(t - RECENT_MS)
        out[..., -1] = np.searchsorted(self.all, q) - np.searchsorted(self.all, week_ago)
        return out

    def features(self, items: np.ndarray, t_query: np.ndarray | float) -> np.ndarray:
        """(…, NB + 1) float32 log1p of :meth:`counts` (what the behaviour head reads)."""
        return np.log1p(self.counts(items, t_query)).astype(np.float32)


# ---- training candidates (torch, per batch of windows) -------------------------------------------------


class ContemporaryItems:
    """Negatives for training the behaviour head the way the evaluation draws them.

    The evaluation samples a window's negatives by the popularity *within that window* (what is active
    then). For a training position whose future starts at time t, the same thing is a uniform draw among
    the ``window`` events that follow t in the whole training log — popularity-weighted and
    contemporaneous, so neither popularity nor freshness tells positives from negatives by itself.
    """

    def __init__(self, seqs: Sequences, *, window: int) -> None:
        times = np.asarray(seqs.timestamps)
        order = np.argsort(times, kind="stable")
        self.times = times[order]
        self.items = np.asarray(seqs.items)[order].astype(np.int64)
        self.window = int(max(1, min(window, len(self.items))))

    def sample(self, t: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """(…, n) item_idx drawn from the ``window`` events at or after each time in ``t`` (…)."""
        start = np.searchsorted(self.times, t.numpy(), side="left")
        start = np.minimum(start, len(self.items) - self.window)  # the last window is a full one too
        u = torch.rand(*t.shape, n, generator=gen, dtype=torch.float64).numpy()
        return torch.from_numpy(self.items[start[..., None] + (u * self.window).astype(np.int64)])


@dataclass(frozen=True)
class TrainingCandidates:
    items: torch.Tensor  # (B, L, M) long candidate item_idx per input position
    labels: torch.Tensor  # (B, L, M, NB) float 0/1
    mask: torch.Tensor  # (B, L) bool: positions that have a next event
    stats: torch.Tensor  # (B, L, M, NB + 1) ItemStats features as of the next event's time


def training_candidates(
    items: torch.Tensor,
    behaviors: torch.Tensor,
    timestamps: torch.Tensor,
    *,
    stats: ItemStats,
    negatives: ContemporaryItems,
    n_behaviors: int,
    horizon: int,
    n_negatives: int,
    gen: torch.Generator,
) -> TrainingCandidates:
    """Candidates and labels for every input position of a batch of training windows.

    items, behaviors, timestamps: (B, L + 1) windows (inputs are ``[:, :-1]``). For input position t the *future* is
    events t+1 … t+horizon of the window, and a candidate's label for behaviour b is 1 when the user did b
    on it in that future. Candidates per position (M = 3 + n_negatives):
      the next item (always a positive), a random item of the future, a random item of the visible
      history (teaches repeats: is a past item coming back?), and negatives drawn among the events that
      follow the position in the whole log (:class:`ContemporaryItems`), as the evaluation draws them.
    """
    B, L1 = items.shape
    L = L1 - 1
    lengths = (items != PAD_IDX).sum(dim=1)  # (B,)
    t = torch.arange(L)
    mask = t[None, :] + 1 < lengths[:, None]  # (B, L)
    n_future = (lengths[:, None] - 1 - t[None, :]).clamp(min=1, max=horizon)  # (B, L)
    r = (torch.rand(B, L, generator=gen) * n_future).long()
    future_pos = (t[None, :] + 1 + r).clamp(max=L)
    past_pos = (torch.rand(B, L, generator=gen) * (t[None, :] + 1)).long()
    nxt = items[:, 1:]
    fut = items.gather(1, future_pos)
    past = items.gather(1, past_pos)
    neg = negatives.sample(timestamps[:, 1:], n_negatives, gen)
    cand = torch.cat([nxt[..., None], fut[..., None], past[..., None], neg], dim=2)  # (B, L, M)

    # future events of position t: window positions t+1 … t+horizon (real ones only)
    k = torch.arange(1, horizon + 1)
    fpos = t[:, None] + k[None, :]  # (L, K)
    fvalid = fpos[None] < lengths[:, None, None]  # (B, L, K)
    fpos = fpos.clamp(max=L)
    f_items = items[:, fpos]  # (B, L, K)
    f_beh = behaviors[:, fpos]
    match = (cand[..., None] == f_items[:, :, None, :]) & fvalid[:, :, None, :]  # (B, L, M, K)
    labels = torch.zeros(B, L, cand.shape[2], n_behaviors)
    for b in range(n_behaviors):
        labels[..., b] = (match & (f_beh[:, :, None, :] == b + 1)).any(dim=-1).float()
    # item statistics as known just before the future starts (the next event's time)
    t_next = timestamps[:, 1:, None].numpy()
    feats = torch.from_numpy(stats.features(cand.numpy(), t_next))
    return TrainingCandidates(items=cand, labels=labels, mask=mask, stats=feats)


# ---- hand-made (history, candidate) features ------------------------------------------------------------

NEVER_EVENTS = float(np.log1p(1e5))  # "events since" / "seconds since" for items never touched: beyond any
NEVER_SECONDS = float(np.log1p(10 * 365 * 86_400))  # real value, yet finite for a standard scaler
RATE_SMOOTHING = 5.0  # pseudo-count of first-behaviour events pulling conversion rates to the global one


def n_pair_features(n_behaviors: int) -> int:
    """Width of :func:`pair_features` for NB behaviours."""
    return 5 * n_behaviors + 2


def pair_features(
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
    item_counts: np.ndarray,
    rate_prior: np.ndarray,
) -> np.ndarray:
    """(T, 5 NB + 2) float32 features of candidate ``items[j]`` for the history ``rows[j]``.

    For behaviours b = 1 … NB: log1p count of b on the candidate in the history; log1p events and log1p
    seconds since the last interaction with it (to the history's end; a large constant if never); one-hot
    behaviour of that last interaction; the item's log1p count of b (``item_counts``, (T, NB): as known
    when the prediction is made); its conversion rates count(b) / count(first behaviour) for b ≥ 2,
    smoothed towards ``rate_prior`` (NB - 1,); the user's log1p history length and log1p count of b.

    Vectorised: every history event gets the key ``row * n_cols + item``; one stable sort groups them, so
    per-(row, item) counts and last interactions are group sums and group ends, and each candidate finds
    its group by binary search (a sentinel group stands for "never touched").
    """
    item_counts = np.asarray(item_counts, dtype=np.float64)
    nb = item_counts.shape[1]
    hist_start = np.asarray(hist_start, dtype=np.int64)
    hist_end = np.asarray(hist_end, dtype=np.int64)
    rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
    ev_row, pos = expand_spans(hist_start, hist_end)
    ev_item = np.asarray(seqs.items)[pos].astype(np.int64)
    n_cols = int(max(ev_item.max(initial=0), items.max(initial=0))) + 1
    ev_beh = np.asarray(seqs.behaviors)[pos].astype(np.int64).clip(1, nb) - 1
    ev_key = ev_row * n_cols + ev_item
    order = np.argsort(ev_key, kind="stable")  # within a key, positions stay increasing
    keys, first = np.unique(ev_key[order], return_index=True)
    group = np.repeat(np.arange(len(keys)), np.diff(np.append(first, len(order))))
    pair_counts = np.bincount(group * nb + ev_beh[order], minlength=(len(keys) + 1) * nb).reshape(-1, nb)
    last = order[np.append(first, len(order))[1:] - 1]  # each group's last event (none if no events)
    last_pos, last_beh = np.append(pos[last], 0), np.append(ev_beh[last], -1)

    idx = lookup(keys, rows * n_cols + items)
    found = idx < len(keys)
    timestamps = np.append(np.asarray(seqs.timestamps), 0)  # + a slot read only for empty histories
    age = hist_end[rows] - 1 - last_pos[idx]
    seconds = (timestamps[np.maximum(hist_end - 1, 0)][rows] - timestamps[last_pos[idx]]) / 1000.0
    user_counts = np.bincount(ev_row * nb + ev_beh, minlength=len(hist_start) * nb).reshape(-1, nb)
    return np.column_stack(
        [
            np.log1p(pair_counts[idx]),
            np.where(found, np.log1p(np.maximum(age, 0)), NEVER_EVENTS),
            np.where(found, np.log1p(np.maximum(seconds, 0.0)), NEVER_SECONDS),
            last_beh[idx][:, None] == np.arange(nb)[None, :],
            np.log1p(item_counts),
            (item_counts[:, 1:] + RATE_SMOOTHING * np.asarray(rate_prior)[None, :])
            / (item_counts[:, :1] + RATE_SMOOTHING),
            np.log1p(hist_end - hist_start)[rows],
            np.log1p(user_counts)[rows],
        ]
    ).astype(np.float32)


def rate_prior(totals: np.ndarray) -> np.ndarray:
    """(NB - 1,) global conversion rates count(b) / count(first behaviour) from per-behaviour totals (NB,)."""
    totals = np.asarray(totals, dtype=np.float64)
    return (totals[1:] + 1.0) / (totals[0] + 1.0)


def expand_spans(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, event position) of every event in the spans ``[starts[r], ends[r])``, row by row in order."""
    lengths = np.maximum(ends - starts, 0)
    row = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    begin = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return row, np.arange(len(row), dtype=np.int64) - np.repeat(begin - starts, lengths)


def lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query in sorted ``keys``; ``len(keys)`` (a sentinel slot) where it is absent."""
    idx = np.searchsorted(keys, query)
    present = idx < len(keys)
    present[present] = keys[idx[present]] == query[present]
    return np.where(present, idx, len(keys))
