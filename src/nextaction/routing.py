"""Question routing: given an item and a behaviour, which users will do it? ("who will answer this thread?")

    route(p, "1234", behavior="answer", k=10)             # [(user_id, P(answer)), …] best first
    route(p, "1234", behavior="answer", as_of=t_ms)       # users as they were at t (events before t only)
    evaluate_routing(p, behavior="answer")                # HR/NDCG@K over the test window, with baselines

The score of user U is the model's behaviour probability P(b | U's history, item) — the same number
``Predictor.predict`` gives for that history and item (the behaviour head, then the ranker saved with the
model, then its Platt calibration) — computed for every candidate user at once: one transformer pass per
chunk of users, the item as each user's only candidate (or, in the evaluation, every evaluated item).
Users are ordered by that logit (the ranker's, else the head's): the probability is an increasing function
of it wherever the behaviour's calibration slope is positive, as it is whenever the scores carried signal
on validation, and it saturates at the extremes, where the logit still orders users.

Layer: this module sits beside explain.py and retrieval.py and imports nothing above ``behavior/``. It does
not need the ``Predictor``: anything with ``model``, ``data``, ``ranker`` and ``calibration`` attributes
(:class:`RoutingModel`) will do — a ``Predictor`` has them, and :class:`TrainedModel` builds one from a
model and its dataset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from nextaction.behavior.calibration import Platt
from nextaction.behavior.candidates import ItemStats, expand_spans
from nextaction.behavior.ranker import SCORE_BUDGET, BehaviorRanker, candidate_signals, user_states
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import CLOCK_POSITIONS, ITEM_ID, ITEM_IDX, TEST, TRAIN, USER_ID, USER_IDX
from nextaction.data.splits import iso_time
from nextaction.errors import InputError
from nextaction.evaluation.metrics import KS, MISS_RANK, multi_target_metrics, pessimistic_ranks
from nextaction.evaluation.ranking import chunks, fingerprint
from nextaction.model import NextActionModel

USER_CHUNK = 256  # histories per transformer pass
ITEM_CHUNK = 1024  # candidate items per behaviour-head pass
RANK_BUDGET = 1 << 24  # score cells compared at once when ranking relevant users

PROTOCOL = (
    "single origin at the test cutoff: for every item with the behaviour in the test window, every user with "
    "an event before the cutoff is a candidate, ranked from their events before the cutoff (item statistics "
    "as of the cutoff); relevant = the candidates who did the behaviour on the item in the test window; "
    "metrics are averaged over items"
)
OWNER_RULE = (
    "the item's owner (the users who did '{b}' on it) is neither a candidate nor relevant: a router never "
    "suggests a question to its asker, and the owner is known once the item exists, before any answer"
)
FIRST_USER_RULE = (
    "the item's first user (the user of its earliest event) is neither a candidate nor relevant: a router "
    "never suggests a question to its asker, and the asker is known once the item exists, before any answer"
)


class RoutingModel(Protocol):
    """What routing reads: a ``Predictor`` has all of it (pass one), :class:`TrainedModel` too."""

    model: NextActionModel
    data: PreparedDataset
    ranker: BehaviorRanker | None  # None: the behaviour head's logits are the scores
    calibration: dict[str, dict[str, float]] | None  # {behaviour: {a, c, …}}; None: a plain sigmoid


@dataclass
class TrainedModel:
    """A model and the dataset it was trained on, with the behaviour stage saved beside it (if any)."""

    model: NextActionModel
    data: PreparedDataset
    ranker: BehaviorRanker | None = None
    calibration: dict[str, dict[str, float]] | None = None

    @classmethod
    def from_config(
        cls, model: NextActionModel, config: Mapping[str, Any], data: PreparedDataset
    ) -> TrainedModel:
        """From a model directory's ``config.json`` contents (``behavior_ranker``, ``calibration``)."""
        return cls(
            model=model,
            data=data,
            ranker=BehaviorRanker.from_dict(config.get("behavior_ranker")),
            calibration=config.get("calibration"),
        )


# ---- scoring ----------------------------------------------------------------------------------------------


@torch.no_grad()
def behavior_matrix(
    model: NextActionModel,
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    items: np.ndarray,
    *,
    behavior: int,
    t_query: np.ndarray,
    stats: ItemStats,
    ranker: BehaviorRanker | None,
) -> np.ndarray:
    """(U, M) float32 raw logits of behaviour index ``behavior`` for every history and every item.

    hist_start, hist_end: (U,) spans ``[start, end)`` in ``seqs`` (the last ``max_len`` events are read);
    items: (M,) item_idx, the same candidates for every user; t_query: (U,) ms, the moment of each
    prediction (item counts are taken before it; +inf = after every counted event). The histories go
    through the transformer once per chunk of users; the items through the behaviour head (and the
    ranker's features) a chunk at a time.
    """
    U, M = len(hist_start), len(items)
    out = np.zeros((U, M), dtype=np.float32)
    if U == 0 or M == 0:
        return out
    # a chunk's next-item scores are (rows, n_items + 1) floats: the same bound as the behaviour scorer's
    rows_per_chunk = max(1, min(USER_CHUNK, SCORE_BUDGET // (model.cfg.n_items + 1)))
    items = np.asarray(items, dtype=np.int64)
    t_query = np.asarray(t_query, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for rows in chunks(U, rows_per_chunk):
            hs, he = hist_start[rows], hist_end[rows]
            states = user_states(model, seqs, hs, he)
            for a in range(0, M, ITEM_CHUNK):
                part = items[a : a + ITEM_CHUNK]
                cand = np.repeat(part[None, :], len(rows), axis=0)  # a writable copy: torch shares its memory
                head, x = candidate_signals(
                    model, seqs, hs, he, states, cand, t_query[rows], stats, features=ranker is not None
                )
                z = head if ranker is None else ranker(x)
                out[rows, a : a + cand.shape[1]] = z[..., behavior - 1]
    finally:
        model.train(was_training)
    return out


def probability(
    logits: np.ndarray, calibration: Mapping[str, Mapping[str, float]] | None, name: str
) -> np.ndarray:
    """Raw logits of behaviour ``name`` -> calibrated probabilities (a plain sigmoid if never calibrated),
    as ``behavior.calibration.probabilities`` does for every behaviour at once."""
    cal = (calibration or {}).get(name, {"a": 1.0, "c": 0.0})
    return Platt(cal["a"], cal["c"])(logits)


def histories_before(seqs: Sequences, before: float) -> tuple[np.ndarray, np.ndarray]:
    """(U + 1,) history spans of every user slot (0 = padding, empty): their events with timestamp < before.

    Events are sorted by time within a user, so those are a prefix of the user's events.
    """
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    n_slots = len(offsets) - 1
    times = np.asarray(seqs.timestamps)
    user_of_event = np.repeat(np.arange(n_slots), np.diff(offsets))
    counts = np.bincount(user_of_event[times < before], minlength=n_slots)
    return offsets[:-1], offsets[:-1] + counts


def stats_before(seqs: Sequences, n_behaviors: int, before: int) -> ItemStats:
    """ItemStats of the events with timestamp < ``before`` only. Querying an ItemStats at a moment is not
    enough: its totals per behaviour (the ranker's global conversion rates) count every event it holds."""
    later = np.asarray(seqs.timestamps) >= before
    view = Sequences(
        offsets=seqs.offsets,
        items=seqs.items,
        behaviors=seqs.behaviors,
        timestamps=seqs.timestamps,
        split=np.where(later, TEST, TRAIN).astype(np.int8),
    )
    return ItemStats(view, n_behaviors, exclude_split=TEST)


def _behavior_index(data: PreparedDataset, behavior: str) -> int:
    known = data.behaviors[1:]
    if behavior not in known:
        raise InputError(f"unknown behavior '{behavior}'; the model knows: {', '.join(known)}")
    return data.behaviors.index(behavior)


def _require_head(model: NextActionModel) -> None:
    if model.behavior is None:
        raise InputError(
            "this model has no behaviour head (trained on a single-behaviour log); retrain with "
            "--set model.behavior_head=true to route items by behaviour"
        )


def _item_index(data: PreparedDataset, item_id: str | int) -> int:
    hits = (data.items[ITEM_ID] == str(item_id)).arg_true()  # one vectorised pass, no dict of the catalogue
    if len(hits) == 0:
        raise InputError(
            f"unknown item '{item_id}': the model knows {data.n_items:,} items "
            f"(ids like '{data.items[ITEM_ID][0]}')"
        )
    return int(data.items[ITEM_IDX][int(hits[0])])


def _user_indices(data: PreparedDataset, user_ids: list[str]) -> dict[str, int]:
    """user_id -> user_idx of those of ``user_ids`` the dataset knows."""
    known = data.users.filter(pl.col(USER_ID).is_in(user_ids))
    return dict(zip(known[USER_ID].to_list(), known[USER_IDX].to_list(), strict=True))


@torch.no_grad()
def route(
    source: RoutingModel,
    item_id: str | int,
    *,
    behavior: str,
    k: int = 10,
    users: Iterable[str | int] | None = None,
    as_of: int | None = None,
    exclude: Iterable[str | int] = (),
    stats: ItemStats | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` users most likely to do ``behavior`` on the item: ``[(user_id, probability), …]`` best first.

    Candidates: every known user with at least one event (before ``as_of``), or the given ``users`` (a
    given user with no event before ``as_of`` is scored from an empty history, as a new user is), minus
    ``exclude`` (e.g. the item's asker; unknown ids are ignored). A user's state is their events — all of them, or those before
    ``as_of`` (epoch ms) — and the item's statistics are counted before ``as_of`` too, so events at or
    after it change nothing. Ties keep the candidates' order (user index, or the order of ``users``).
    ``stats``: the ItemStats of every known event (``exclude_split=None``), when the caller keeps one; not
    read with ``as_of``, whose statistics count only earlier events.
    """
    model, data = source.model, source.data
    _require_head(model)
    b = _behavior_index(data, behavior)
    item = _item_index(data, item_id)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be at least 1, got {k!r}")
    if as_of is not None and (isinstance(as_of, bool) or not isinstance(as_of, int | np.integer)):
        raise InputError(f"as_of must be epoch milliseconds (an integer), got {as_of!r}")
    if isinstance(users, str | int):  # one id, not an iterable of characters
        users = [users]
    if isinstance(exclude, str | int):
        exclude = [exclude]
    seqs = data.seqs
    starts, ends = histories_before(seqs, np.inf if as_of is None else int(as_of))
    if users is None:
        cand = np.flatnonzero(ends > starts)  # user slots with a history; slot 0 (padding) has none
    else:
        wanted = list(dict.fromkeys(str(u) for u in users))
        index = _user_indices(data, wanted)
        missing = [u for u in wanted if u not in index]
        if missing:
            raise InputError(
                f"unknown user '{missing[0]}' in users ({len(missing)} unknown); pass ids of users with events"
            )
        cand = np.asarray([index[u] for u in wanted], dtype=np.int64)
    barred = list(_user_indices(data, list(dict.fromkeys(str(u) for u in exclude))).values())
    if barred:
        cand = cand[~np.isin(cand, barred)]
    if len(cand) == 0:
        return []
    if as_of is not None:
        stats = stats_before(seqs, len(data.behaviors) - 1, int(as_of))
    elif stats is None:
        stats = ItemStats(seqs, len(data.behaviors) - 1, exclude_split=None)  # every event counts
    t_query = np.full(len(cand), np.inf if as_of is None else float(as_of))
    z = behavior_matrix(
        model,
        seqs,
        starts[cand],
        ends[cand],
        np.array([item]),
        behavior=b,
        t_query=t_query,
        stats=stats,
        ranker=source.ranker,
    )[:, 0]
    order = np.argsort(-z, kind="stable")[:k]  # NaN (never expected) sorts last
    probs = probability(z[order], source.calibration, behavior)
    ids = data.users[USER_ID].gather(cand[order] - 1).to_list()  # row r has user_idx r + 1
    return [(u, float(p)) for u, p in zip(ids, probs, strict=True)]


# ---- the evaluation's metrics: pure functions of scores and relevant users ----------------------------------


def relevant_ranks(scores: np.ndarray, offsets: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(R,) 0-based pessimistic rank of every relevant candidate within its item's row.

    scores: (I, U) float, higher = likelier, excluded candidates at -inf; row i's relevant candidates are
    ``columns[offsets[i]:offsets[i + 1]]``. As everywhere in nextaction (``metrics.pessimistic_ranks``): a
    tie counts against the scorer, a NaN rival ranks above, a relevant candidate at NaN or -inf misses
    (MISS_RANK). Another relevant candidate scoring above counts too: the rank is a position in the list.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    columns = np.asarray(columns, dtype=np.int64)
    row_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    ranks = np.full(len(columns), MISS_RANK, dtype=np.int64)
    step = max(1, RANK_BUDGET // max(1, scores.shape[1]))
    for part in chunks(len(columns), step):
        rows = torch.from_numpy(np.ascontiguousarray(scores[row_of[part]]))
        ranks[part] = pessimistic_ranks(rows, torch.from_numpy(columns[part])).numpy()
    return ranks


def routing_metrics(ranks: np.ndarray, offsets: np.ndarray, *, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K, NDCG@K and MRR@K averaged over items; item i's relevant users have ``ranks[offsets[i]:
    offsets[i + 1]]`` (``metrics.multi_target_metrics``: every relevant user counts, NDCG against the
    ideal list of min(relevant, K) users)."""
    per_item = multi_target_metrics(offsets, ranks, ks=ks)
    n = len(offsets) - 1
    return {name: float(v.mean()) if n else 0.0 for name, v in per_item.items()}


def random_metrics(
    n_candidates: np.ndarray, n_relevant: np.ndarray, *, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Expected HR@K, NDCG@K and MRR@K of a uniformly random order, averaged over items (exact, no draws).

    Item i has N = ``n_candidates[i]`` candidates of which R = ``n_relevant[i]`` are relevant. Position j
    holds a relevant one with probability R / N, so E[DCG@K] = Σ_{j<K} (R/N) / log2(j + 2); the first
    relevant one is at j with probability Π_{i<j} (N−R−i)/(N−i) · R/(N−j), which gives HR@K and MRR@K.
    """
    N = np.asarray(n_candidates, dtype=np.float64)[:, None]
    R = np.asarray(n_relevant, dtype=np.float64)[:, None]
    out: dict[str, float] = {}
    if N.size == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG", "MRR")}
    for k in ks:
        j = np.arange(k, dtype=np.float64)[None, :]
        real = j < N  # positions that exist
        with np.errstate(divide="ignore", invalid="ignore"):
            # P(position j is not relevant | no earlier one is)
            miss = np.where(real, np.clip((N - R - j) / (N - j), 0.0, 1.0), 1.0)
            p_rel = np.where(real, R / N, 0.0)
            none_before = np.cumprod(np.concatenate([np.ones_like(N), miss[:, :-1]], axis=1), axis=1)
            first_at = none_before * np.where(real, np.clip(R / (N - j), 0.0, 1.0), 0.0)
        dcg = (p_rel / np.log2(j + 2.0)).sum(axis=1)
        ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[
            np.clip(np.minimum(R[:, 0], k) - 1, 0, k - 1).astype(int)
        ]
        out[f"HR@{k}"] = float((1.0 - np.prod(miss, axis=1)).mean())
        out[f"NDCG@{k}"] = float(np.where(R[:, 0] > 0, dcg / ideal, 0.0).mean())
        out[f"MRR@{k}"] = float((first_at / (j + 1.0)).sum(axis=1).mean())
    return out


# ---- the evaluation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingTask:
    """The evaluation's questions: items (rows) × candidate users (columns), and who is relevant.

    items: (I,) item_idx evaluated; users: (U,) user_idx of the candidates, with history spans
    ``[hist_start, hist_end)`` (their events before the cutoff); offsets (I + 1,) / columns (R,): row i's
    relevant candidates (column positions, ascending); barred (2, X): (row, column) cells that are not
    candidates (the item's owner), set to -inf in every scorer's matrix.
    """

    cutoff: int
    items: np.ndarray
    users: np.ndarray
    hist_start: np.ndarray
    hist_end: np.ndarray
    offsets: np.ndarray
    columns: np.ndarray
    barred: np.ndarray
    counts: dict[str, int]

    @property
    def n_candidates(self) -> np.ndarray:
        """(I,) candidates per item: every user with a history but the item's barred ones."""
        return len(self.users) - np.bincount(self.barred[0], minlength=len(self.items))

    def bar(self, scores: np.ndarray) -> np.ndarray:
        """(I, U) float64 scores with the barred cells at -inf."""
        out = np.array(scores, dtype=np.float64)
        out[self.barred[0], self.barred[1]] = -np.inf
        return out


def routing_task(
    data: PreparedDataset, *, behavior: int, exclude_owner: bool, owner_behavior: int | None
) -> RoutingTask:
    """The test window's routing questions for behaviour index ``behavior`` (see :func:`evaluate_routing`)."""
    seqs = data.seqs
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    n_slots = len(offsets) - 1
    items = np.asarray(seqs.items).astype(np.int64)
    behaviors = np.asarray(seqs.behaviors).astype(np.int64)
    times = np.asarray(seqs.timestamps).astype(np.int64)
    test = np.asarray(seqs.split) == TEST
    if not test.any():
        raise InputError("the dataset has no test window: prepare it with a temporal split that leaves one")
    cutoff = int(times[test].min())  # = the split's cutoff: every earlier event is before it
    user_of = np.repeat(np.arange(n_slots), np.diff(offsets))
    starts, ends = histories_before(seqs, cutoff)
    users = np.flatnonzero(ends > starts)
    column = np.full(n_slots, -1, dtype=np.int64)
    column[users] = np.arange(len(users))

    def pairs(mask: np.ndarray) -> np.ndarray:  # distinct item * n_slots + user keys of the masked events
        return np.unique(items[mask] * n_slots + user_of[mask])

    relevant = pairs(test & (behaviors == behavior))
    owners = np.zeros(0, dtype=np.int64)
    if exclude_owner and owner_behavior is not None:
        owners = pairs(behaviors == owner_behavior)
    elif exclude_owner:
        # each item's earliest event (ties: the first in storage order); a favourite stamped with its day
        # only can precede the question: name the owner behaviour where the log has one ("ask")
        order = np.lexsort((np.arange(len(items)), times))
        _, first = np.unique(items[order], return_index=True)
        ev = order[first]
        owners = np.unique(items[ev] * n_slots + user_of[ev])
    is_owner = np.isin(relevant, owners)
    rel_item, rel_user = relevant // n_slots, relevant % n_slots
    known = column[rel_user] >= 0
    keep = ~is_owner & known
    eval_items = np.unique(rel_item[keep])
    row = np.searchsorted(eval_items, rel_item[keep])
    col = column[rel_user[keep]]
    order = np.lexsort((col, row))
    own_item, own_user = owners // n_slots, owners % n_slots
    in_task = np.isin(own_item, eval_items) & (column[own_user] >= 0)
    barred = np.stack([np.searchsorted(eval_items, own_item[in_task]), column[own_user[in_task]]]).astype(
        np.int64
    )
    return RoutingTask(
        cutoff=cutoff,
        items=eval_items.astype(np.int64),
        users=users.astype(np.int64),
        hist_start=starts[users],
        hist_end=ends[users],
        offsets=np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(eval_items)))]).astype(
            np.int64
        ),
        columns=col[order].astype(np.int64),
        barred=barred.reshape(2, -1),
        counts={
            "items_with_behavior": len(np.unique(rel_item)),
            "relevant_pairs": len(relevant),
            "relevant_owner": int(is_owner.sum()),
            "relevant_without_history": int((~is_owner & ~known).sum()),
        },
    )


def most_active_scores(data: PreparedDataset, task: RoutingTask, *, behavior: int) -> np.ndarray:
    """(I, U) the same row for every item: each candidate's count of ``behavior`` before the cutoff, ties
    broken by their count of all events before it (the most active users overall)."""
    seqs = data.seqs
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    user_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    before = np.asarray(seqs.timestamps) < task.cutoff
    did = before & (np.asarray(seqs.behaviors) == behavior)
    n_b = np.bincount(user_of[did], minlength=len(offsets) - 1)[task.users].astype(np.float64)
    n_all = (task.hist_end - task.hist_start).astype(np.float64)
    row = n_b * (n_all.max(initial=0.0) + 1.0) + n_all  # exact in float64 for any real log
    return np.broadcast_to(row, (len(task.items), len(task.users)))


@torch.no_grad()
def item_similarity_scores(model: NextActionModel, data: PreparedDataset, task: RoutingTask) -> np.ndarray:
    """(I, U) item vector · the mean vector of the candidate's distinct items before the cutoff (the model's
    item vectors, as ``nextaction similar`` reads them)."""
    vectors = model.all_item_vectors().detach().double().cpu()
    seqs = data.seqs
    row, pos = expand_spans(task.hist_start, task.hist_end)
    items = np.asarray(seqs.items)[pos].astype(np.int64)
    key = np.unique(row * (data.n_items + 1) + items)  # each item once per user
    u, i = key // (data.n_items + 1), key % (data.n_items + 1)
    sums = torch.zeros(len(task.users), vectors.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(u), vectors[torch.from_numpy(i)])
    n = torch.from_numpy(np.bincount(u, minlength=len(task.users)).astype(np.float64)).clamp(min=1.0)
    means = sums / n[:, None]
    return (vectors[torch.from_numpy(task.items)] @ means.T).numpy()


def evaluate_routing(
    source: RoutingModel,
    *,
    behavior: str,
    ks: tuple[int, ...] = KS,
    exclude_owner: bool = True,
    owner_behavior: str | None = None,
    baselines: bool = True,
    details: bool = False,
) -> dict[str, Any]:
    """Routing on the test window of a temporal split: HR@K, NDCG@K, MRR@K over items, with baselines.

    Protocol (recorded in the result's ``protocol``): one origin, the test cutoff. Every item that receives
    ``behavior`` in the test window is a question; every user with at least one event before the cutoff is a
    candidate, scored from those events (item statistics as of the cutoff too: nothing of the window is
    read); the relevant users are the candidates who did ``behavior`` on the item in the window, all of them.
    Fair to every scorer, and said in the counts: a relevant user without any event before the cutoff cannot
    be ranked by anyone and is left out (``relevant_without_history``); so is the item's owner when
    ``exclude_owner`` (the users who did ``owner_behavior`` on it, e.g. "ask", or else the user of its
    earliest event): a router never sends a question to its asker, and who asked is known as soon as the
    item exists, before any answer, so it reads nothing of the future. Items left without a relevant user
    are not evaluated. Ties count against the scorer.

    Baselines, by the same code (``baselines``): ``most_active`` (the users with the most ``behavior``
    events before the cutoff, ties by all their events), ``item_similarity`` (the item's vector · the mean
    of the user's past items' vectors, the model's item vectors) and ``random`` (exact expected values).
    ``details``: also ``per_item`` = the model's rank of every relevant user, per item.

    The model scores U × I (candidates × items) pairs: one transformer pass per user, the behaviour head
    per pair.
    """
    model, data = source.model, source.data
    _require_head(model)
    b = _behavior_index(data, behavior)
    owner_b = None if owner_behavior is None else _behavior_index(data, owner_behavior)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise InputError(f"ks must be positive integers, got {ks!r}")
    split_info = data.report.get("split", {})
    kind = split_info.get("kind") if isinstance(split_info, dict) else split_info
    if kind != "temporal":
        raise InputError(
            f"routing is evaluated on a temporal split (one cutoff for every user); this dataset's split is "
            f"'{kind}': prepare it with --set prepare.split.kind=temporal"
        )
    t0 = time.perf_counter()
    task = routing_task(data, behavior=b, exclude_owner=exclude_owner, owner_behavior=owner_b)
    stats = ItemStats(data.seqs, len(data.behaviors) - 1, exclude_split=TEST)  # the state at the cutoff
    logits = behavior_matrix(
        model,
        data.seqs,
        task.hist_start,
        task.hist_end,
        task.items,
        behavior=b,
        t_query=np.full(len(task.users), float(task.cutoff)),
        stats=stats,
        ranker=source.ranker,
    ).T
    ranks = relevant_ranks(task.bar(logits), task.offsets, task.columns)
    n_relevant = np.diff(task.offsets)
    if exclude_owner:
        owner = OWNER_RULE.format(b=owner_behavior) if owner_behavior is not None else FIRST_USER_RULE
    else:
        owner = "kept: the item's owner is a candidate like any user"
    result: dict[str, Any] = {
        "behavior": behavior,
        "items": len(task.items),
        "metrics": routing_metrics(ranks, task.offsets, ks=ks),
        "protocol": {
            "routing": PROTOCOL,
            "cutoff": None if data.clock == CLOCK_POSITIONS else iso_time(task.cutoff),
            "cutoff_ms": task.cutoff,
            "owner": owner,
            "candidates": len(task.users),
            "items_evaluated": len(task.items),
            "relevant": int(n_relevant.sum()),
            "relevant_per_item": round(float(n_relevant.mean()), 3) if len(n_relevant) else 0.0,
            **task.counts,
            "ranked_by": "the behaviour logit (the ranker's, else the head's), which P(b) calibrates",
            "ties": "pessimistic",
            "dataset_fingerprint": fingerprint(data),
        },
    }
    if baselines:
        scores = {
            "most_active": most_active_scores(data, task, behavior=b),
            "item_similarity": item_similarity_scores(model, data, task),
        }
        result["baselines"] = {
            name: routing_metrics(
                relevant_ranks(task.bar(s), task.offsets, task.columns), task.offsets, ks=ks
            )
            for name, s in scores.items()
        }
        result["baselines"]["random"] = random_metrics(task.n_candidates, n_relevant, ks=ks)
    if details:
        user_ids = data.users[USER_ID].to_list()
        item_ids = data.items[ITEM_ID].to_list()
        n_cand = task.n_candidates
        result["per_item"] = [
            {
                ITEM_ID: item_ids[int(item) - 1],
                "candidates": int(n_cand[r]),
                "relevant": {
                    user_ids[int(task.users[c]) - 1]: int(ranks[j])
                    for j, c in zip(
                        range(task.offsets[r], task.offsets[r + 1]),
                        task.columns[task.offsets[r] : task.offsets[r + 1]],
                        strict=True,
                    )
                },
            }
            for r, item in enumerate(task.items)
        ]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
