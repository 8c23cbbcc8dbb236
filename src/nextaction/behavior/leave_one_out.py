"""Leave-one-out next-buy evaluation against a targets file: the multi-behaviour literature's protocol.

CML, KMCLR and SSLRec hold out one buy per user in a separate file (``test_buy.csv``: ``user_id,item_id``)
and report HR/NDCG@10 of it among 99 sampled negatives. Both that number and the honest one are computed
here from the same scores:

- targets: one held-out item per listed user (:func:`read_targets`). Rows that cannot be used (a malformed
  line, an empty id, an unknown user, a second row of a user, an unknown item) are counted per reason and
  reported with their first line numbers, never dropped silently; only the user's first row counts;
- history: *every* event of the user in the model's prepared data, all splits, oldest first (the targets
  come after all of them); a model reads the last ``max_len``;
- ``full``: the target ranked against the whole catalogue; history items stay candidates (re-buying
  counts, so a target in the history can rank first); ties pessimistic and a NaN score counts against the
  scorer (:func:`~nextaction.evaluation.metrics.pessimistic_ranks`, ``MISS_RANK``);
- ``sampled_99``: the same scores, the target ranked among itself and 99 negatives sampled uniformly without
  replacement from the catalogue minus the target *and every item of the user's history* — as the CML/KMCLR
  code samples items the user has not interacted with (:func:`sample_negatives`: one generator, users in
  ``user_idx`` order, a fixed seed; the same candidates for every scorer).

Every scorer — the model and the baselines — goes through one ranking function (:func:`leave_one_out_ranks`)
by one interface, :class:`RankScorer` (the ``rank_scores`` of :class:`~nextaction.behavior.candidates.
BehaviorScorer`). Baselines fit on the model's training events and score from the same full histories.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, Self

import numpy as np
import polars as pl
import torch

from nextaction.batches import history_batch
from nextaction.behavior.baselines import BehaviorPopularity
from nextaction.behavior.candidates import CandidateSet, ItemStats, expand_spans, primary_behavior
from nextaction.behavior.ranker import SHORTLIST, BehaviorRanker, rerank_for_behavior
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.readers.events import LN, WHY, ids
from nextaction.data.readers.lines import magic, read_table
from nextaction.data.schema import ITEM_ID, ITEM_IDX, LINE, PAD_IDX, REASON, USER_ID, USER_IDX
from nextaction.errors import InputError
from nextaction.evaluation.baselines import ItemToItem, Scorer
from nextaction.evaluation.metrics import KS, MISS_RANK, pessimistic_ranks, ranking_metrics
from nextaction.evaluation.ranking import catalogue_chunk, chunks, fingerprint
from nextaction.model import NextActionModel
from nextaction.scoring import score_histories

NEGATIVES: Final = 99  # the literature's sampled protocol: the target among 100 items
NEGATIVES_SEED: Final = 0
# Why a targets row was not used, in the order they are checked (a row gets the first that applies).
MALFORMED: Final = "malformed line"
MISSING_ID: Final = "missing id"
UNKNOWN_USER: Final = "unknown user"
DUPLICATE_USER: Final = "duplicate user"
UNKNOWN_ITEM: Final = "unknown item"
SKIP_REASONS: Final = (MALFORMED, MISSING_ID, UNKNOWN_USER, DUPLICATE_USER, UNKNOWN_ITEM)
_LINES_SHOWN: Final = 5  # line numbers kept per skip reason: enough to find and fix the rows
_HEADER_SHOWN: Final = 80  # characters of a wrong header quoted in the error (it may be a binary file's)


# ---- the targets file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The usable rows of a targets file, one per user in ``user_idx`` order, and what was skipped."""

    path: str
    user_idx: np.ndarray  # (U,) int64, sorted
    item_idx: np.ndarray  # (U,) int64 the held-out item
    line: np.ndarray  # (U,) int64 the row's line in the file
    rows: int  # data rows read (blank lines and the header are not rows)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows, every reason present
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)  # reason -> first line numbers

    def __len__(self) -> int:
        return len(self.user_idx)


def read_targets(path: str | Path, data: PreparedDataset) -> Targets:
    """Read a ``user_id,item_id`` CSV (header required; tab/semicolon separators are detected too) and
    match it to ``data``'s users and items by external id.

    Raises InputError (one line naming the file) for a missing, empty or binary file, a missing column, or a
    file without a single usable row; a bad row is skipped and counted with its reason.
    """
    path = Path(path)
    what = f"a targets file is a CSV with the header {USER_ID},{ITEM_ID} and one held-out item per user"
    if magic(path) == b"PAR1":  # read as text it would only fail on its garbled first line
        raise InputError(f"is a Parquet file; {what}", path=path)
    table = read_table(path, separator=None, header=True)
    by_lower = {name.lower(): name for name in table.names}
    for col in (USER_ID, ITEM_ID):
        if col not in by_lower:
            header = ", ".join(table.names)
            shown = header if len(header) <= _HEADER_SHOWN else header[:_HEADER_SHOWN] + "…"
            raise InputError(f"has no '{col}' column (header: {shown}); {what}", path=path, line=1)
    frame = pl.concat(list(table.slices([by_lower[USER_ID], by_lower[ITEM_ID]])))
    rows = pl.DataFrame(
        {
            LINE: frame[LN],
            WHY: frame[WHY],
            USER_ID: ids(frame[by_lower[USER_ID]]),  # stripped, empty = null: as events are read
            ITEM_ID: ids(frame[by_lower[ITEM_ID]]),
        }
    )
    rows = (
        rows.join(data.users.select(USER_ID, USER_IDX), on=USER_ID, how="left")
        .join(data.items.select(ITEM_ID, ITEM_IDX), on=ITEM_ID, how="left")
        .sort(LINE)
        .with_columns(
            pl.when(pl.col(WHY).is_not_null())
            .then(pl.lit(MALFORMED))
            .when(pl.col(USER_ID).is_null() | pl.col(ITEM_ID).is_null())
            .then(pl.lit(MISSING_ID))
            .when(pl.col(USER_IDX).is_null())
            .then(pl.lit(UNKNOWN_USER))
            .alias(REASON)
        )
    )
    reason = rows[REASON].fill_null("").to_numpy().astype(object)  # "" = usable so far
    user = rows[USER_IDX].fill_null(PAD_IDX).to_numpy().astype(np.int64)
    item = rows[ITEM_IDX].fill_null(PAD_IDX).to_numpy().astype(np.int64)
    # A user's first well-formed row decides (even if its item is unknown): later rows are duplicates.
    known = np.flatnonzero(reason == "")
    _, first = np.unique(user[known], return_index=True)
    later = np.ones(len(known), dtype=bool)
    later[first] = False
    reason[known[later]] = DUPLICATE_USER
    reason[(reason == "") & (item == PAD_IDX)] = UNKNOWN_ITEM
    line = rows[LINE].to_numpy().astype(np.int64)
    skipped = {r: int((reason == r).sum()) for r in SKIP_REASONS}
    skipped_lines = {r: line[reason == r][:_LINES_SHOWN].tolist() for r in SKIP_REASONS if skipped[r]}
    used = np.flatnonzero(reason == "")
    if not len(used):
        counts = ", ".join(f"{n} {r}" for r, n in skipped.items() if n)
        raise InputError(
            f"no usable row ({counts}); the targets must name users and items of the model's data by the "
            "ids of the events it was trained on",
            path=path,
        )
    order = used[np.argsort(user[used], kind="stable")]
    return Targets(
        path=str(path),
        user_idx=user[order],
        item_idx=item[order],
        line=line[order],
        rows=len(reason),
        skipped=skipped,
        skipped_lines=skipped_lines,
    )


# ---- the candidates and the ranking ---------------------------------------------------------------------


def sample_negatives(
    seqs: Sequences,
    user_idx: np.ndarray,
    target: np.ndarray,
    *,
    n_items: int,
    n: int = NEGATIVES,
    seed: int = NEGATIVES_SEED,
) -> np.ndarray:
    """(U, n) int64 item_idx: per user, ``n`` distinct items drawn uniformly from 1..n_items minus the target
    and every item of the user's history (all their events in ``seqs``). One generator draws for the users
    in the given order, so a fixed seed gives the same sample every time. A user with fewer than ``n``
    such items gets all of them, the row padded with PAD_IDX (column 0, which every ranking scores -inf).
    """
    rng = np.random.default_rng(seed)
    offsets, items = np.asarray(seqs.offsets), np.asarray(seqs.items)
    out = np.zeros((len(user_idx), n), dtype=np.int64)
    for r, (u, t) in enumerate(zip(np.asarray(user_idx), np.asarray(target), strict=True)):
        excluded = np.union1d(items[offsets[u] : offsets[u + 1]], [t])
        # An ordered uniform sample of n + |excluded| distinct items holds at least n allowed ones, and its
        # first n allowed ones are a uniform sample of the allowed items: no rejection loop needed.
        draw = rng.choice(n_items, size=min(n + len(excluded), n_items), replace=False) + 1
        keep = draw[~np.isin(draw, excluded)][:n]
        out[r, : len(keep)] = keep
    return out


class RankScorer(Protocol):
    """What the ranking needs: :class:`~nextaction.behavior.candidates.BehaviorScorer`'s ``rank_scores``."""

    name: str

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        """(B, n_items + 1) scores of every item as the next one the user does ``behavior`` on."""
        ...


def leave_one_out_ranks(
    scorer: RankScorer,
    seqs: Sequences,
    targets: Targets,
    negatives: np.ndarray,
    *,
    behavior: int,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(U,) int64 pessimistic 0-based ranks of each target over the whole catalogue, and (U,) among itself
    and its row of ``negatives`` (U, n) — both from one ``rank_scores`` call per chunk of users.

    History = every event of the user in ``seqs``; nothing is excluded. Memory: ``chunk`` × catalogue scores
    (``evaluation.ranking.catalogue_chunk`` bounds it for big catalogues).
    """
    offsets = np.asarray(seqs.offsets)
    hist_start, hist_end = offsets[targets.user_idx], offsets[targets.user_idx + 1]
    full = np.empty(len(targets), dtype=np.int64)
    sampled = np.empty(len(targets), dtype=np.int64)
    for rows in chunks(len(targets), chunk):
        scores = torch.as_tensor(
            scorer.rank_scores(seqs, hist_start[rows], hist_end[rows], behavior=behavior)
        )
        if scores.dtype != torch.float64:  # baselines score in float64 (exact tie-breaks); models in fp32
            scores = scores.float()
        if not bool((scores[:, PAD_IDX] == float("-inf")).all()):
            scores = scores.clone()  # the scorer's own array stays as it gave it
            scores[:, PAD_IDX] = float("-inf")  # padding is no candidate (and pads short negative rows)
        target = torch.from_numpy(targets.item_idx[rows])
        full[rows] = pessimistic_ranks(scores, target).numpy()
        cand = torch.from_numpy(np.concatenate([targets.item_idx[rows, None], negatives[rows]], axis=1))
        first = torch.zeros(len(rows), dtype=torch.long)  # the target is column 0 of ``cand``
        sampled[rows] = pessimistic_ranks(scores.gather(1, cand), first).numpy()
    return full, sampled


def leave_one_out_metrics(ranks: np.ndarray) -> dict[str, float]:
    """HR / NDCG / MRR / Recall @5, @10, @20 and the untruncated MRR (a miss counts 0) of 0-based ranks."""
    ranks = np.asarray(ranks)
    out = ranking_metrics(ranks, ks=KS)
    hit = ranks < MISS_RANK
    out["MRR"] = (
        float(np.where(hit, 1.0 / (ranks.astype(np.float64) + 1.0), 0.0).mean()) if len(ranks) else 0.0
    )
    return out


# ---- the scorers ----------------------------------------------------------------------------------------


def target_behavior(behaviors: list[str]) -> int:
    """The behaviour whose next item is ranked: the conversion (buy, …); the only one of a single-behaviour
    log."""
    found = primary_behavior(behaviors)
    return 1 if found is None else found


class ModelRanks:
    """The model's next-item scores for the target behaviour, from the end of each user's full history.

    With a behaviour head: :func:`~nextaction.behavior.ranker.rerank_for_behavior` — the top next-item items
    and the history's items ordered by the behaviour logit (the ranker's when given, else the head's), every
    other item below in next-item order — with item counts (``ItemStats`` over every event, as the
    ``Predictor`` serves) as of just after the user's last event. ``ModelBehaviorScorer.rank_scores`` would
    take the moment of the event at ``hist_end``, which for a full history is the next user's first event.
    Without a head: the plain next-item scores.
    """

    name: str = "nextaction"

    def __init__(
        self, model: NextActionModel, *, ranker: BehaviorRanker | None = None, shortlist: int = SHORTLIST
    ) -> None:
        self.model = model
        self.ranker = ranker
        self.shortlist = shortlist
        self._stats: tuple[Sequences, ItemStats] | None = None  # built once per Sequences

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        model = self.model
        hist_start = np.asarray(hist_start, dtype=np.int64)
        hist_end = np.asarray(hist_end, dtype=np.int64)
        if model.behavior is None:
            model.eval()
            return score_histories(
                model, history_batch(seqs, hist_start, hist_end, model.cfg.max_len)
            ).numpy()
        if self._stats is None or self._stats[0] is not seqs:
            self._stats = (seqs, ItemStats(seqs, model.cfg.n_behaviors - 1, exclude_split=None))
        times = np.asarray(seqs.timestamps)
        last = times[np.maximum(hist_end - 1, 0)].astype(np.float64)
        t_query = np.where(hist_end > hist_start, last + 1.0, np.inf)  # counts up to the user's last event
        return rerank_for_behavior(
            model,
            seqs,
            hist_start,
            hist_end,
            behavior,
            shortlist=self.shortlist,
            stats=self._stats[1],
            t_query=t_query,
            ranker=self.ranker,
        )


class HistoryScores:
    """A next-item :class:`~nextaction.evaluation.baselines.Scorer` (``score(histories, behaviors=…)``) as a
    :class:`RankScorer`: it scores the same for every behaviour."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name: str = scorer.name

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        spans = list(zip(np.asarray(hist_start), np.asarray(hist_end), strict=True))
        items = [np.asarray(seqs.items[a:b]) for a, b in spans]
        behaviors = [np.asarray(seqs.behaviors[a:b]) for a, b in spans]
        return self.scorer.score(items, behaviors=behaviors)


def fit_behavior_popularity(data: PreparedDataset) -> BehaviorPopularity:
    """:class:`~nextaction.behavior.baselines.BehaviorPopularity` fitted on ``data``'s TRAIN events: item i
    scores log1p(TRAIN count of the behaviour on i), ties by its TRAIN events of any behaviour."""
    return BehaviorPopularity().fit(data, train=_no_candidates(len(data.behaviors) - 1))


def default_engaged(behaviors: list[str], target: int) -> list[str]:
    """The behaviours that put an item in engaged-first's first tier: every one but the log's first (the
    most frequent: view, pv — or buy on a Tmall log without views) and the target behaviour itself.
    RetailRocket: cart; IJCAI-15 (buy, fav, cart): fav and cart; Taobao: cart and fav."""
    return [name for b, name in enumerate(behaviors) if b not in (PAD_IDX, 1, target)]


class EngagedFirst:
    """ "Carted/favourited first, then recency": the user's history items with an ``engaged`` event (by
    default :func:`default_engaged`) first, then their other history items — each group by recency of the
    user's last event on the item — then every other item by TRAIN popularity of the ranked behaviour.

    Scores (float64): engaged items 2 + recency, other history items 1 + recency, recency = (position of the
    last event on the item + 1) / (history length + 1) in (0, 1); other items popularity scaled into [0, 1).
    """

    name: str = "engaged-first"

    def __init__(self, *, engaged: Sequence[str] | None = None) -> None:
        self.engaged = None if engaged is None else list(engaged)
        self._fit: tuple[BehaviorPopularity, np.ndarray] | None = None  # popularity, (NB + 1,) bool engaged

    def fit(self, data: PreparedDataset, *, target: int) -> Self:
        names = default_engaged(data.behaviors, target) if self.engaged is None else self.engaged
        unknown = sorted(set(names) - set(data.behaviors[1:]))
        if unknown:
            raise InputError(f"engaged-first: unknown behaviours {unknown}; the log has {data.behaviors[1:]}")
        mask = np.isin(np.asarray(data.behaviors, dtype=object), np.asarray(names, dtype=object))
        mask[PAD_IDX] = False
        self.engaged = list(names)
        self._fit = (fit_behavior_popularity(data), mask)
        return self

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        if self._fit is None:
            raise RuntimeError("EngagedFirst used before fit()")
        popularity, engaged = self._fit
        out = popularity.rank_scores(seqs, hist_start, hist_end, behavior=behavior)
        out /= float(out[0, 1:].max(initial=0.0)) + 1.0  # popularity is >= 0: now in [0, 1)
        hist_start = np.asarray(hist_start, dtype=np.int64)
        hist_end = np.asarray(hist_end, dtype=np.int64)
        row, pos = expand_spans(hist_start, hist_end)
        n_cols = out.shape[1]
        keys, inverse = np.unique(row * n_cols + np.asarray(seqs.items)[pos], return_inverse=True)
        recency = np.zeros(len(keys))
        np.maximum.at(recency, inverse, (pos - hist_start[row] + 1) / (hist_end - hist_start + 1)[row])
        tier = np.zeros(len(keys), dtype=bool)
        np.logical_or.at(tier, inverse, engaged[np.asarray(seqs.behaviors)[pos]])
        out.reshape(-1)[keys] = 1.0 + tier + recency  # keys = row * n_cols + item: flat positions
        out[:, PAD_IDX] = -np.inf
        return out


def _no_candidates(n_behaviors: int) -> CandidateSet:
    """An empty labelled candidate set: popularity fits its counts from the data's TRAIN events; the set only
    tells it how many behaviours to expect."""
    empty = np.zeros(0, dtype=np.int64)
    return CandidateSet(
        user_idx=empty,
        hist_start=empty,
        hist_end=empty,
        offsets=np.zeros(1, dtype=np.int64),
        items=empty,
        labels=np.zeros((0, n_behaviors), dtype=bool),
    )


def leave_one_out_baselines(fit_data: PreparedDataset, *, target: int) -> list[RankScorer]:
    """The fitted baselines, named for the result: popularity of the target behaviour, engaged-first, and
    item-to-item transitions — all fitted on ``fit_data``'s TRAIN events."""
    popularity = fit_behavior_popularity(fit_data)
    name = fit_data.behaviors[target]
    return [
        _Named(f"{name}-popularity", popularity),
        EngagedFirst().fit(fit_data, target=target),
        HistoryScores(ItemToItem().fit(fit_data)),
    ]


class _Named:
    """A rank scorer under another name (the popularity baseline is named for its behaviour here)."""

    def __init__(self, name: str, scorer: RankScorer) -> None:
        self.name = name
        self.scorer = scorer

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        return self.scorer.rank_scores(seqs, hist_start, hist_end, behavior=behavior)


# ---- the evaluation -------------------------------------------------------------------------------------


def evaluate_leave_one_out(
    model: NextActionModel,
    data: PreparedDataset,
    targets: Targets,
    *,
    fit_data: PreparedDataset | None = None,
    ranker: BehaviorRanker | None = None,
    baselines: bool = False,
    n_negatives: int = NEGATIVES,
    seed: int = NEGATIVES_SEED,
    chunk: int = 256,
) -> dict[str, Any]:
    """The model (and with ``baselines`` the baselines) on ``targets`` (see the module docstring).

    ``fit_data``: what the baselines fit on, the model's training events (``training.loop.trained_view``);
    default ``data``. ``ranker``: the model's saved behaviour ranker (config ``behavior_ranker``).
    Returns ``{"full", "sampled_<n>", "protocol", "users", "skipped", "skipped_lines", "seconds"}`` and
    ``"baselines": {name: {"full", "sampled_<n>"}}``.
    """
    if n_negatives < 1:
        raise InputError(f"leave-one-out: the number of negatives must be at least 1, got {n_negatives}")
    behavior = target_behavior(data.behaviors)
    seqs = data.seqs
    negatives = sample_negatives(
        seqs, targets.user_idx, targets.item_idx, n_items=data.n_items, n=n_negatives, seed=seed
    )
    sampled_key = f"sampled_{n_negatives}"

    chunk = catalogue_chunk(chunk, data.n_items)

    def measure(scorer: RankScorer) -> dict[str, dict[str, float]]:
        full, sampled = leave_one_out_ranks(scorer, seqs, targets, negatives, behavior=behavior, chunk=chunk)
        return {"full": leave_one_out_metrics(full), sampled_key: leave_one_out_metrics(sampled)}

    t0 = time.perf_counter()
    result: dict[str, Any] = measure(ModelRanks(model, ranker=ranker))
    seconds = time.perf_counter() - t0
    result["protocol"] = _protocol(
        model, data, targets, behavior=behavior, negatives=negatives, seed=seed, ranker=ranker
    )
    result["users"] = len(targets)
    result["skipped"] = dict(targets.skipped)
    result["skipped_lines"] = dict(targets.skipped_lines)
    result["seconds"] = round(seconds, 3)
    if baselines:
        fitted = leave_one_out_baselines(data if fit_data is None else fit_data, target=behavior)
        result["baselines"] = {b.name: measure(b) for b in fitted}
        result["protocol"]["baselines"] = _baseline_protocol(data, behavior, fitted)
    return result


def _protocol(
    model: NextActionModel,
    data: PreparedDataset,
    targets: Targets,
    *,
    behavior: int,
    negatives: np.ndarray,
    seed: int,
    ranker: BehaviorRanker | None,
) -> dict[str, Any]:
    name = data.behaviors[behavior]
    n = negatives.shape[1]
    if model.behavior is None:
        model_scores = "next-item scores (the model has no behaviour head)"
    else:
        model_scores = (
            f"next '{name}' scores: the top {SHORTLIST} next-item scores and the history's items ordered by "
            f"the {'behaviour ranker' if ranker is not None else 'behaviour head'}'s '{name}' logit (item "
            "counts as of just after the user's last event), every other item below in next-item order"
        )
    return {
        "targets": targets.path,
        "rows_read": targets.rows,
        "users": len(targets),
        "target_behavior": name,
        "history": (
            "every event of the user in the model's prepared data (all splits), oldest first; the model "
            f"reads the last {model.cfg.max_len}"
        ),
        "full": f"the held-out item ranked among all {data.n_items} catalogue items, history items kept "
        "(re-buying counts)",
        "sampled": (
            f"the held-out item ranked among itself and {n} items sampled uniformly without replacement from "
            "the catalogue minus the target and every item of the user's history (the CML/KMCLR code samples "
            f"items the user has not interacted with), users in user order, seed {seed}; the same for every "
            "scorer and ranked by the same scores as full"
        ),
        "negatives": n,
        "negatives_seed": seed,
        "negatives_exclude_history": True,
        "users_with_fewer_negatives": int((negatives == PAD_IDX).any(axis=1).sum()),
        "ties": "pessimistic",
        "nan_scores": "count against the scorer (a NaN candidate ranks above the target; a NaN target misses)",
        "model_scores": model_scores,
        "dataset_fingerprint": fingerprint(data),
    }


def _baseline_protocol(data: PreparedDataset, behavior: int, fitted: list[RankScorer]) -> dict[str, str]:
    name = data.behaviors[behavior]
    engaged = next((b.engaged for b in fitted if isinstance(b, EngagedFirst)), None) or []
    either = "' or '".join(engaged)
    first = (
        f"the user's history items with a '{either}' event first, then their other history items, each group"
        if engaged
        else "the user's history items (the log has no behaviour beyond its first and the target)"
    )
    return {
        "fit_on": "the model's training events; scored from the same full histories as the model",
        f"{name}-popularity": f"training '{name}' events per item (ties: training events of any behaviour)",
        EngagedFirst.name: (
            f"{first} by recency of the last event on the item; every other item by training '{name}' events"
        ),
        ItemToItem.name: "transition probabilities between consecutive training items from the user's last "
        "distinct items (evaluation.baselines.ItemToItem)",
    }
