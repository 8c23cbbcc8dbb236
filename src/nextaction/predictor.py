"""The user-facing, stateful predictor: load a model directory, then recommend and score.

    from nextaction import Predictor
    p = Predictor.load("m")
    p.recommend(p.history("42"), k=10)      # [(item_id, score), …] best first
    p.recommend(["B001", "B002"], k=5)      # bare item ids are a history too
    p.score([{"item_id": "B001", "behavior": "view"}], ["B003", "B004"])
    p.predict(p.history("42", split="all"), ["B003", "B004"])   # {"B003": {"view": 0.9, "buy": 0.1}, …}
    p.recommend(p.history("42", split="all"), k=5, behavior="buy")  # items the user will buy next
    p.explain(p.history("42"), "B003").sentence      # "Recommended because you viewed X and bought Y."
    p.propensity(p.history("42", split="all"), behavior="buy", horizon="7d")  # P(buys anything within 7 days)

    p.describe_history(p.history("42", split="all"))  # for display: + position, time (if any), title
    p.item_entries(p.recommend(p.history("42")))      # [{"item_id", "score", "title" (when known)}, …]

A history is a list of events, oldest first: dicts with ``item_id`` and optional ``behavior`` and
``timestamp`` (epoch milliseconds), or bare item ids. Items the model has never seen are skipped (they carry
no learned signal) and listed in :attr:`Predictor.last_unknown`. An empty history is valid: a new user
gets predictions from what the model learned about everyone (popular items, base rates per behaviour).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from nextaction import explain as ex
from nextaction.batches import Batch, from_lists, history_batch
from nextaction.behavior.calibration import probabilities
from nextaction.behavior.candidates import primary_behavior
from nextaction.behavior.propensity import PropensityModel, PropensityStage
from nextaction.behavior.ranker import (
    SHORTLIST,
    BehaviorRanker,
    candidate_signals,
    rerank_for_behavior,
    user_states,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import (
    BEHAVIOR,
    CLOCK_POSITIONS,
    DEFAULT_BEHAVIOR,
    ITEM_ID,
    SPLIT_NAMES,
    TIMESTAMP,
)
from nextaction.data.splits import iso_time
from nextaction.errors import InputError
from nextaction.explain import Explanation
from nextaction.model import NextActionModel
from nextaction.scoring import score_histories
from nextaction.training.checkpoint import load_model

Event = Mapping[str, Any] | str | int
FINGERPRINT_FILES = ("model.safetensors", "config.json")  # what a model's content hash covers
FINGERPRINT_CHARS = 12


class Predictor:
    """A trained model plus the vocabularies and histories it was trained with."""

    def __init__(
        self,
        model: NextActionModel,
        config: dict[str, Any],
        data: PreparedDataset,
        *,
        model_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.config = config
        self.data = data
        self._item_idx = data.item_index()
        self._item_ids: list[str] = ["", *data.items[ITEM_ID].to_list()]  # position = item_idx
        self._behavior_idx = {b: i for i, b in enumerate(data.behaviors) if i > 0}
        self._user_idx: dict[str, int] | None = None
        self.exclude_seen: bool = bool(config.get("exclude_seen", True))
        self.last_unknown: list[str] = []
        self.last_unknown_items: list[str] = []
        self.calibration: dict[str, dict[str, float]] | None = config.get("calibration")
        self.ranker = BehaviorRanker.from_dict(config.get("behavior_ranker"))
        self.propensity_model = PropensityModel.from_dict(config.get("propensity"))
        self._item_stats: Any = None  # candidates.ItemStats, built on first behaviour prediction
        self._popularity: torch.Tensor | None = None
        self._index: Any = None  # retrieval.ExactIndex / FaissIndex once use_index() is called
        self._titles: dict[str, str] | None = None  # item_id -> display title, built on first use
        self._identity: dict[str, str | None] | None = None  # name and content hash, computed on first use

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str | None = None) -> Predictor:
        """Load a model directory; ``device`` ("cuda", "cuda:1", "cpu"; default the CPU) is where the model
        scores (histories and item vectors follow it; answers come back on the CPU)."""
        model, config = load_model(model_dir)
        if device is not None:
            model = model.to(torch.device(device))
        return cls(model, config, PreparedDataset.load(Path(model_dir) / "data"), model_dir=model_dir)

    @property
    def identity(self) -> dict[str, str | None]:
        """``{"name": the model directory's base name, "hash": content hash}`` — what the service shows
        instead of the directory's path. The hash (:func:`model_fingerprint`) is computed once."""
        if self._identity is None:
            d = self.model_dir
            self._identity = {
                "name": None if d is None else d.resolve().name,
                "hash": None if d is None else model_fingerprint(d),
            }
        return self._identity

    @property
    def clock(self) -> str:
        """The training log's clock: "timestamps", or "positions" when it only orders events (``sequences``
        files: position p is stored as p × 1000 ms), so histories show positions, not dates."""
        return self.data.clock

    # ---- histories ----------------------------------------------------------------------------------

    def history(self, user_id: str | int, split: str = "test") -> list[dict[str, Any]]:
        """The user's known events that precede their first ``split`` event ("test", "valid"; "all" = all)."""
        if self._user_idx is None:
            self._user_idx = self.data.user_index()
        uid = str(user_id)
        if uid not in self._user_idx:
            raise InputError(f"unknown user '{uid}'; pass their events as a history instead")
        seqs = self.data.seqs
        sl = seqs.of(self._user_idx[uid])
        split_codes = np.asarray(seqs.split[sl])
        end = len(split_codes)
        if split != "all":
            if split not in SPLIT_NAMES[1:]:
                raise InputError(f"split must be one of test, valid, all; got '{split}'")
            hits = np.flatnonzero(split_codes == SPLIT_NAMES.index(split))
            if len(hits):
                end = int(hits[0])
        items, behaviors, times = (
            np.asarray(a[sl])[:end] for a in (seqs.items, seqs.behaviors, seqs.timestamps)
        )
        return [
            {ITEM_ID: self._item_ids[i], BEHAVIOR: self.data.behaviors[b], TIMESTAMP: int(t)}
            for i, b, t in zip(items.tolist(), behaviors.tolist(), times.tolist(), strict=True)
        ]

    def user_history(
        self, user_id: str | int, *, split: str = "all", limit: int | None = None
    ) -> dict[str, Any]:
        """The user's known events for display (``nextaction history``): ``{"user_id", "clock", "events"}``
        with the last ``limit`` events (None = all) of :meth:`history`, described by :meth:`describe_history`
        (positions count from the user's first event)."""
        if limit is not None and limit < 1:
            raise InputError(f"limit must be at least 1, got {limit}")
        events = self.history(user_id, split=split)
        shown = events if limit is None else events[-limit:]
        return {
            "user_id": str(user_id),
            "clock": self.clock,
            "events": self.describe_history(shown, first_position=len(events) - len(shown) + 1),
        }

    def describe_history(
        self, events: Sequence[Mapping[str, Any]], *, first_position: int = 1
    ) -> list[dict[str, Any]]:
        """Stored events (``item_id``, ``behavior``, ``timestamp``) for display, oldest first: each also gets
        ``position`` (1-based in the user's history; ``first_position`` is the first one's), ``time`` (UTC,
        ISO-8601) unless the log has no clock (:attr:`clock` "positions"), and ``title`` when known."""
        titles = self.titles
        with_time = self.clock != CLOCK_POSITIONS
        out: list[dict[str, Any]] = []
        for n, ev in enumerate(events):
            row = {ITEM_ID: ev[ITEM_ID], BEHAVIOR: ev.get(BEHAVIOR), TIMESTAMP: ev.get(TIMESTAMP)}
            row["position"] = first_position + n
            if with_time and ev.get(TIMESTAMP) is not None:
                row["time"] = iso_time(int(ev[TIMESTAMP]))
            title = titles.get(str(ev[ITEM_ID]))
            if title:
                row["title"] = title
            out.append(row)
        return out

    def item_entries(
        self, ranked: Iterable[tuple[str, float]], *, key: str = "score"
    ) -> list[dict[str, Any]]:
        """(item_id, value) pairs -> JSON entries ``{"item_id", key: value}`` plus ``"title"`` where the
        catalogue has one (what the CLI's ``--json`` and the HTTP routes return)."""
        titles = self.titles
        out: list[dict[str, Any]] = []
        for item, value in ranked:
            entry: dict[str, Any] = {ITEM_ID: item, key: value}
            title = titles.get(item)
            if title:
                entry["title"] = title
            out.append(entry)
        return out

    def encode(self, history: Iterable[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """History events -> (item_idx, behavior_idx, timestamp ms) arrays; unknown items are skipped."""
        return self._encode(history)[:3]

    def _encode(self, history: Iterable[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`encode` plus each kept event's position in ``history`` (explanations cite positions)."""
        items, behaviors, times, unknown, positions = [], [], [], [], []
        default_b = self._behavior_idx.get(DEFAULT_BEHAVIOR, 1)
        for pos, ev in enumerate(history):
            if isinstance(ev, Mapping):
                if ITEM_ID not in ev:
                    raise InputError(f"history event {pos} has no '{ITEM_ID}': {dict(ev)!r}")
                item, beh, ts = str(ev[ITEM_ID]), ev.get(BEHAVIOR), ev.get(TIMESTAMP)
            else:
                item, beh, ts = str(ev), None, None
            idx = self._item_idx.get(item)
            if idx is None:
                unknown.append(item)
                continue
            items.append(idx)
            positions.append(pos)
            behaviors.append(self.behavior_index(beh) if beh is not None else default_b)
            times.append(self._millis(ts, pos) if ts is not None else pos * 1000)
        self.last_unknown = unknown
        return (
            np.asarray(items, np.int64),
            np.asarray(behaviors, np.int64),
            np.asarray(times, np.int64),
            np.asarray(positions, np.int64),
        )

    @staticmethod
    def _millis(ts: Any, pos: int) -> int:
        try:
            return int(ts)
        except (TypeError, ValueError):
            raise InputError(
                f"history event {pos}: timestamp must be epoch milliseconds, got {ts!r}"
            ) from None

    def knows_user(self, user_id: str | int) -> bool:
        if self._user_idx is None:
            self._user_idx = self.data.user_index()
        return str(user_id) in self._user_idx

    def popularity(self) -> torch.Tensor:
        """(n_items + 1,) share of all known events per item; what an empty history is recommended."""
        if self._popularity is None:
            counts = np.bincount(np.asarray(self.data.seqs.items), minlength=len(self._item_ids))
            self._popularity = torch.from_numpy(counts / max(1, counts.sum())).float()
        return self._popularity

    def knows_item(self, item_id: str | int) -> bool:
        return str(item_id) in self._item_idx

    def warm_up(self) -> None:
        """Build the lazily made lookups now, so the first served request is not slow (and threads never
        race to build them)."""
        self.knows_user("")
        self.popularity()
        self.titles  # noqa: B018  (built now: the service shows titles)
        self.identity  # noqa: B018  (hashes the model files once, at load)
        if self.model.behavior is not None:
            self._require_head()

    def behavior_index(self, behavior: str) -> int:
        if behavior not in self._behavior_idx:
            known = ", ".join(self._behavior_idx)
            raise InputError(f"unknown behavior '{behavior}'; the model knows: {known}")
        return self._behavior_idx[behavior]

    # ---- predictions --------------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, history: Iterable[Event]) -> torch.Tensor:
        """(n_items + 1,) scores of every catalogue item as the next event; index = item_idx."""
        items, behaviors, times = self.encode(history)
        batch = from_lists([items], [behaviors], [times], self.model.cfg.max_len)
        return score_histories(self.model, batch)[0]

    def recommend(
        self,
        history: Iterable[Event],
        k: int = 10,
        *,
        exclude_seen: bool | None = None,
        behavior: str | None = None,
    ) -> list[tuple[str, float]]:
        """Top-``k`` next items as (item_id, score), best first.

        With ``behavior`` (e.g. "buy"): the items the user will most likely do that on next, scored by the
        calibrated probability. Seen items stay candidates unless ``exclude_seen`` is True.
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        history = list(history)
        if behavior is not None:
            return self._recommend_for_behavior(history, k, behavior, bool(exclude_seen))
        return self.recommend_many([history], k, exclude_seen=exclude_seen)[0]

    @torch.no_grad()
    def recommend_many(
        self, histories: Sequence[Iterable[Event]], k: int = 10, *, exclude_seen: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for several histories in one forward pass (how the server batches requests).

        Rows are right-padded to the longest; the causal mask keeps a row's scores independent of the
        others' (up to float rounding in the last digits).
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        encoded = [self.encode(h) for h in histories]
        known = [r for r, (items, _, _) in enumerate(encoded) if len(items)]
        if self._index is not None:
            return self._recommend_indexed(encoded, known, k, exclude_seen)
        s = self.popularity().repeat(len(encoded), 1)  # (B, n_items + 1)
        if known:
            # nothing known about a user: a transformer state from no events carries no signal, so that row
            # keeps the most popular items (share of all known events) rather than arbitrary ties
            s[known] = score_histories(self.model, self._batch(encoded, known))
        s[:, 0] = float("-inf")
        if self.exclude_seen if exclude_seen is None else exclude_seen:
            for r, (items, _, _) in enumerate(encoded):
                s[r, torch.from_numpy(items)] = float("-inf")
        k = min(k, int(torch.isfinite(s).sum(dim=1).min()))
        top = torch.topk(s, k, dim=1)
        return [
            [(self._item_ids[i], float(v)) for v, i in zip(vals, idx, strict=True)]
            for vals, idx in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]

    def _user_rows(self, users: Sequence[str] | None) -> tuple[np.ndarray, list[str], list[str]]:
        """(user_idx of the users to score, their ids, the ids the model does not know)."""
        ids = self.data.users["user_id"].to_list()
        if users is None:
            return np.arange(1, len(ids) + 1), ids, []
        index = self.data.user_index()
        known = [str(u) for u in users if str(u) in index]
        unknown = [str(u) for u in users if str(u) not in index]
        return np.array([index[u] for u in known], dtype=np.int64), known, unknown

    @torch.no_grad()
    def recommend_all(
        self,
        k: int = 10,
        *,
        users: Sequence[str] | None = None,
        exclude_seen: bool | None = None,
        behavior: str | None = None,
        chunk: int = 1024,
        progress: Callable[[int, int], None] | None = None,
    ) -> pl.DataFrame:
        """Batch scoring: top-``k`` items for each user as a polars DataFrame with columns user_id, rank (1 =
        best), item_id, score (+ title when the catalogue has titles); users in the order given (default: every
        user of the model's data). The same answers as :meth:`recommend` on each user's whole history (tested),
        straight from the CSR arrays, ``chunk`` users per forward pass (memory: chunk × catalogue scores).
        Unknown users are left out and listed in :attr:`last_unknown`. With ``behavior``: the items the user
        will most likely do that on next, scored by the calibrated probability (as ``recommend(…, behavior=)``).
        ``progress(done, total)`` after each chunk."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        rows, ids, unknown = self._user_rows(users)
        self.last_unknown = unknown
        seqs = self.data.seqs
        offsets = np.asarray(seqs.offsets)
        all_items = np.asarray(seqs.items, dtype=np.int64)
        exclude = self.exclude_seen if exclude_seen is None else exclude_seen
        if behavior is not None:
            stats = self._require_head()
            b = self.behavior_index(behavior)
            exclude = bool(exclude_seen)  # as recommend(…, behavior=): seen items stay candidates unless told
        n_items = self.model.cfg.n_items
        k = min(k, n_items)
        pop = self.popularity()
        top_idx = np.zeros((len(rows), k), dtype=np.int64)
        top_val = np.zeros((len(rows), k), dtype=np.float32)
        self.model.eval()
        for lo in range(0, len(rows), chunk):
            r = rows[lo : lo + chunk]
            start, end = offsets[r], offsets[r + 1]
            if behavior is None:
                s = score_histories(self.model, history_batch(seqs, start, end, self.model.cfg.max_len))
                empty = torch.from_numpy(end == start)
                if empty.any():
                    s[empty] = pop  # nothing known: the most popular items (recommend_many's rule)
            else:
                s = torch.from_numpy(
                    rerank_for_behavior(
                        self.model,
                        seqs,
                        start,
                        end,
                        b,
                        shortlist=max(SHORTLIST, k),
                        stats=stats,
                        t_query=np.full(len(r), np.inf),
                        ranker=self.ranker,
                    )
                ).float()
            s[:, 0] = float("-inf")
            if exclude:
                n = end - start
                seen_rows = np.repeat(np.arange(len(r)), n)
                # positions start[b] … end[b] - 1 of every row, without a Python loop
                pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(start, n)
                seen = all_items[pos]
                s[torch.from_numpy(seen_rows), torch.from_numpy(seen)] = float("-inf")
            top = torch.topk(s, k, dim=1)
            top_idx[lo : lo + len(r)] = top.indices.numpy()
            top_val[lo : lo + len(r)] = top.values.numpy()
            if progress is not None:
                progress(min(lo + chunk, len(rows)), len(rows))
        # a user whose candidates ran out (a catalogue smaller than k after exclusions) has -inf tails
        valid = np.isfinite(top_val).reshape(-1)
        if behavior is not None:
            logits = np.zeros((*top_val.shape, len(self.behaviors)))
            logits[..., b - 1] = np.nan_to_num(top_val, neginf=-100.0)
            top_val = self._probs(logits)[..., b - 1].astype(np.float32)
        item_ids = np.asarray(self._item_ids, dtype=object)
        flat = top_idx.reshape(-1)
        frame = pl.DataFrame(
            {
                "user_id": np.repeat(np.asarray(ids, dtype=object), k).tolist(),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows)),
                "item_id": item_ids[flat].tolist(),
                "score": top_val.reshape(-1),
            },
            schema={"user_id": pl.Utf8, "rank": pl.Int32, "item_id": pl.Utf8, "score": pl.Float32},
        ).filter(pl.Series(valid))
        if titles := self.titles:
            frame = frame.with_columns(pl.col("item_id").replace_strict(titles, default=None).alias("title"))
        return frame

    def _batch(self, encoded: Sequence[tuple[np.ndarray, ...]], rows: list[int]) -> Batch:
        """The padded batch of the encoded histories ``rows`` (each cut to the model's max_len)."""
        items, behaviors, times = (list(col) for col in zip(*(encoded[r][:3] for r in rows), strict=True))
        return from_lists(items, behaviors, times, self.model.cfg.max_len)

    def use_index(self, kind: str = "exact", **options: Any) -> None:
        """Answer :meth:`recommend` (next item) from a top-k index instead of scoring the whole catalogue:
        "exact" (chunked, same results, bounded memory), "faiss" (approximate HNSW; the ``ann`` extra),
        or "none" to go back. ``options`` go to the index (e.g. ``ef_search=128``)."""
        from nextaction.retrieval import ExactIndex, FaissIndex

        vectors = self.model.output_embeddings().detach()
        if kind == "none":
            self._index = None
        elif kind == "exact":
            self._index = ExactIndex(vectors, **options)
        elif kind == "faiss":
            self._index = FaissIndex(vectors, **options)
        else:
            raise InputError(f"index must be exact, faiss or none; got '{kind}'")

    def _recommend_indexed(
        self, encoded: list[tuple[np.ndarray, ...]], known: list[int], k: int, exclude_seen: bool | None
    ) -> list[list[tuple[str, float]]]:
        exclude = self.exclude_seen if exclude_seen is None else exclude_seen
        out: list[list[tuple[str, float]]] = []
        pop = torch.topk(self.popularity()[1:], min(k, len(self._item_ids) - 1))
        popular = [
            (self._item_ids[i + 1], float(v))
            for v, i in zip(pop.values.tolist(), pop.indices.tolist(), strict=True)
        ]
        rows: dict[int, list[tuple[str, float]]] = {}
        if known:
            batch = self._batch(encoded, known)
            states = self.model.output_states(
                self.model.last_state(batch.items, batch.behaviors, batch.timestamps)
            )
            barred = [np.asarray(encoded[r][0], np.int64) for r in known] if exclude else None
            hits = self._index.search(states, k, exclude=barred)
            for r, vals, idx in zip(known, hits.scores.tolist(), hits.items.tolist(), strict=True):
                rows[r] = [(self._item_ids[i], float(v)) for v, i in zip(vals, idx, strict=True) if i > 0]
        for r in range(len(encoded)):
            out.append(rows.get(r, popular))
        return out

    def score(self, history: Iterable[Event], item_ids: Sequence[str | int]) -> list[float]:
        """Scores of the given items as the next event (higher = more likely); unknown items get -inf."""
        s = self.scores(history)
        idx = [self._item_idx.get(str(i)) for i in item_ids]
        return [float(s[i]) if i is not None else float("-inf") for i in idx]

    # ---- behaviour probabilities ------------------------------------------------------------------------

    @property
    def behaviors(self) -> list[str]:
        """The behaviours the model predicts, in output order."""
        return list(self.data.behaviors[1:])

    def _require_head(self) -> Any:
        """The ItemStats of the known events (built once); errors for models without a behaviour head."""
        if self.model.behavior is None:
            raise InputError(
                "this model has no behaviour head (trained on a single-behaviour log); retrain with "
                "--set model.behavior_head=true to predict behaviour probabilities"
            )
        if self._item_stats is None:
            from nextaction.behavior.candidates import ItemStats

            # every known event counts: a served prediction is made after all of them
            self._item_stats = ItemStats(self.data.seqs, len(self.behaviors), exclude_split=None)
        return self._item_stats

    def _one_history(self, history: Iterable[Event]) -> Sequences:
        """A history as a one-user Sequences (the whole history: the ranker's counts read all of it)."""
        items, behaviors, times = self.encode(history)
        return Sequences.from_arrays(items, behaviors, times, np.array([len(items)]))

    def _probs(self, logits: np.ndarray) -> np.ndarray:
        """Raw (…, NB) behaviour logits -> calibrated probabilities (plain sigmoid if never calibrated)."""
        return probabilities(logits, self.calibration, self.data.behaviors)

    @torch.no_grad()
    def predict(
        self, history: Iterable[Event], item_ids: Sequence[str | int]
    ) -> dict[str, dict[str, float] | None]:
        """P(behaviour | history, item) for every candidate and behaviour, calibrated on validation.

        Returns ``{item_id: {behavior: probability}}`` in the order given; items the model does not know
        map to None and are listed in :attr:`last_unknown_items`.
        """
        stats = self._require_head()
        seqs = self._one_history(history)
        idx, known = self._candidates(item_ids)
        probs = np.zeros((0, len(self.behaviors)))
        if len(known):
            span = (np.array([0]), np.array([len(seqs.items)]))
            states = user_states(self.model, seqs, *span)
            cand = known[None, :]
            head, x = candidate_signals(self.model, seqs, *span, states, cand, np.array([np.inf]), stats)
            probs = self._probs((head if self.ranker is None else self.ranker(x))[0])
        return self._by_item(item_ids, idx, probs)

    def _candidates(self, item_ids: Sequence[str | int]) -> tuple[list[int | None], np.ndarray]:
        """Each id's item_idx (None = unknown, listed in :attr:`last_unknown_items`) and the known ones (K,)."""
        idx = [self._item_idx.get(str(i)) for i in item_ids]
        self.last_unknown_items = [str(i) for i, j in zip(item_ids, idx, strict=True) if j is None]
        return idx, np.asarray([i for i in idx if i is not None], dtype=np.int64)

    def _by_item(
        self, item_ids: Sequence[str | int], idx: list[int | None], probs: np.ndarray
    ) -> dict[str, dict[str, float] | None]:
        """``{item_id: {behavior: p}}`` in the order given; ``probs`` has one row per known item (idx not
        None), in that order; unknown items map to None."""
        rows = iter(probs)
        return {
            str(item): None
            if j is None
            else {b: round(float(p), 6) for b, p in zip(self.behaviors, next(rows), strict=True)}
            for item, j in zip(item_ids, idx, strict=True)
        }

    def route(
        self,
        item_id: str | int,
        *,
        behavior: str,
        k: int = 10,
        users: Iterable[str | int] | None = None,
        as_of: int | None = None,
        exclude: Iterable[str | int] = (),
    ) -> list[tuple[str, float]]:
        """The ``k`` users most likely to do ``behavior`` on the item, ``[(user_id, probability), …]`` best
        first (question routing; see routing.py). ``as_of`` (epoch ms): users as they were then."""
        from nextaction.routing import route

        stats = self._require_head() if as_of is None else None
        return route(
            self, item_id, behavior=behavior, k=k, users=users, as_of=as_of, exclude=exclude, stats=stats
        )

    def outcome(
        self, history: Iterable[Event], item_ids: Sequence[str | int]
    ) -> dict[str, dict[str, float] | None]:
        """P(behaviour | history, the next event is on this item): which behaviour the next event will be,
        given the item it is on (knowledge tracing: P(correct) on the exercise the student attempts next).

        Unlike :meth:`predict` (what the user will do on the item within the next events, each behaviour on
        its own), the probabilities of an item sum to 1 over the behaviours. ``{item_id: {behavior: p}}``
        in the order given; unknown items map to None (:attr:`last_unknown_items`)."""
        from nextaction.behavior.outcome import next_outcomes

        stats = self._require_head()
        items, behaviors, times = self.encode(history)
        idx, known = self._candidates(item_ids)
        probs = np.zeros((0, len(self.behaviors)))
        if len(known):
            probs = next_outcomes(self.model, items, behaviors, times, known, stats=stats)
        return self._by_item(item_ids, idx, probs)

    @torch.no_grad()
    def _recommend_for_behavior(
        self, history: list[Event], k: int, behavior: str, exclude_seen: bool
    ) -> list[tuple[str, float]]:
        stats = self._require_head()
        b = self.behavior_index(behavior)
        seqs = self._one_history(history)
        items = np.asarray(seqs.items, dtype=np.int64)
        s = torch.from_numpy(
            rerank_for_behavior(
                self.model,
                seqs,
                np.array([0]),
                np.array([len(items)]),
                b,
                shortlist=max(SHORTLIST, k),
                stats=stats,
                t_query=np.array([np.inf]),
                ranker=self.ranker,
            )[0]
        )
        if exclude_seen:
            s[torch.from_numpy(items)] = float("-inf")
        k = min(k, int(torch.isfinite(s).sum()))
        top = torch.topk(s, k)
        logits = np.zeros((k, len(self.behaviors)))
        logits[:, b - 1] = top.values.numpy()
        probs = self._probs(logits)[:, b - 1]
        return [
            (self._item_ids[i], float(p)) for p, i in zip(probs.tolist(), top.indices.tolist(), strict=True)
        ]

    # ---- user propensity ----------------------------------------------------------------------------

    def propensity_target(
        self, behavior: str | None = None, horizon: str | int | None = None
    ) -> tuple[str, PropensityStage]:
        """The behaviour name and the fitted stage :meth:`propensity` answers with: ``behavior`` None = the
        log's conversion behaviour (buy, …); ``horizon`` None = the model's default (the evaluated one).
        InputError for a model without a propensity stage, an unknown behaviour or an unfitted horizon."""
        prop = self.propensity_model
        if prop is None:
            raise InputError(
                "this model has no propensity stage: it is fitted after training on the validation window of "
                "a temporal split (the default for multi-behaviour logs); retrain on such a split"
            )
        if behavior is None:
            primary = primary_behavior(self.data.behaviors)
            behavior = self.data.behaviors[primary if primary is not None else 1]
        self.behavior_index(behavior)
        return behavior, prop.stage(horizon)

    @torch.no_grad()
    def propensity(
        self,
        history: Iterable[Event],
        *,
        behavior: str | None = None,
        horizon: str | int | None = None,
        at: int | None = None,
    ) -> float:
        """P(the user does ``behavior`` at least once in ``[at, at + horizon)``), calibrated on validation.

        ``behavior``: default the log's conversion behaviour (buy, …). ``horizon``: one the model's stage
        was fitted for ("1d", "7d", "30d" where its validation window could label them; the model's
        ``propensity_model.horizons``); None = the one evaluated. ``at``: the window start, epoch ms; default
        just after the history's latest event. Only events before ``at`` count, and every event needs its
        timestamp (recency is the strongest signal) unless the log only orders events. Items the model does
        not know are skipped, as in :meth:`predict`; a history with no known event before ``at`` is an
        InputError (the stage was fitted on users with at least one).
        """
        name, stage = self.propensity_target(behavior, horizon)
        history = list(history)
        if self.clock != CLOCK_POSITIONS:
            bare = [
                n for n, ev in enumerate(history) if not isinstance(ev, Mapping) or ev.get(TIMESTAMP) is None
            ]
            if bare:
                raise InputError(
                    f"history event {bare[0]} has no timestamp: propensity reads how recent every event is; "
                    "give each event's epoch milliseconds"
                )
        if at is not None and (isinstance(at, bool) or not isinstance(at, int | np.integer)):
            raise InputError(f"at must be epoch milliseconds (an integer), got {at!r}")
        at = None if at is None else int(at)
        items, behaviors, times = self.encode(history)
        t0 = (int(times.max()) + 1 if len(times) else None) if at is None else at
        order = np.argsort(times, kind="stable")
        keep = order[times[order] < t0] if t0 is not None else order[:0]
        if len(keep) == 0:
            raise InputError(
                "propensity needs at least one event of a known item before the window start (at); "
                "this history has none"
            )
        seqs = Sequences.from_arrays(items[keep], behaviors[keep], times[keep], np.array([len(keep)]))
        stats = self._require_head() if stage.uses_model and self.model.behavior is not None else None
        probs = stage.predict(
            self.model, seqs, np.array([0]), np.array([len(keep)]), np.array([t0]), stats=stats
        )
        return float(probs[0, stage.behaviors.index(name)])

    # ---- explanations -------------------------------------------------------------------------------

    @property
    def titles(self) -> dict[str, str]:
        """item_id -> display title: the catalogue's ``title`` (or ``name``) column, else its first text
        column; empty when it has none (explanations then name items by id). Assignable."""
        if self._titles is None:
            self._titles = item_titles(self.data.items)
        return self._titles

    @titles.setter
    def titles(self, value: Mapping[str, str]) -> None:
        self._titles = {str(k): str(v) for k, v in value.items()}

    def _target(self, item_id: str | int) -> int:
        idx = self._item_idx.get(str(item_id))
        if idx is None:
            raise InputError(
                f"unknown item '{item_id}': the model knows {len(self._item_idx):,} items "
                f"(ids like '{self._item_ids[1]}')"
            )
        return idx

    @torch.no_grad()
    def explain(
        self,
        history: Iterable[Event],
        item_id: str | int,
        *,
        method: str = "occlusion",
        behavior: str | None = None,
        top: int | None = 5,
    ) -> Explanation:
        """Which events of ``history`` drove the item's score (or, with ``behavior``, its probability).

        Returns an :class:`~nextaction.explain.Explanation`: ``contributions`` = ``(position, item_id,
        behavior, value)`` sorted by value, largest first, the ``top`` first kept (None = every event);
        ``item_contributions`` (all of an item's events at once); ``sentence``; ``similar_history_items``;
        ``to_dict()``. ``method``: "occlusion" (value = score drop
        when the event is removed; the default, faithful) or "rollout" (attention shares, next item only).
        Any history works, not only stored users'; an empty one is explained by popularity.
        """
        if method not in ex.METHODS:
            raise InputError(f"method must be one of {', '.join(ex.METHODS)}; got '{method}'")
        if top is not None and top < 1:
            raise InputError(f"top must be at least 1 (or None for every event), got {top}")
        target = self._target(item_id)
        history = list(history)
        items, behaviors, times, positions = self._encode(history)
        unknown = list(self.last_unknown)
        max_len = self.model.cfg.max_len
        if behavior is None:
            score_fn = ex.next_item_scorer(self.model, target)
        else:
            if method == "rollout":
                raise InputError(
                    "rollout explains the user state, not a behaviour; use method 'occlusion' for behaviours"
                )
            stats = self._require_head()
            b = self.behavior_index(behavior)
            score_fn = ex.behavior_scorer(self.model, target, b - 1, stats, self.ranker, self._probs)
        item_values = None  # rollout: the sum of each item's event shares
        if method == "occlusion":
            score, values, by_item = ex.occlusion(score_fn, items, behaviors, times, max_len)
            item_values = {self._item_ids[i]: v for i, v in by_item.items()}
        else:
            score = float(score_fn(ex.window_batch(items, behaviors, times, max_len))[0])
            values = ex.rollout(self.model, items, behaviors, times)
        others = np.array([i for i in dict.fromkeys(items.tolist()) if i != target], dtype=np.int64)
        sims = ex.cosine_to(self.model, target, others)
        best = ex.rank_events(sims)[:3]  # ties: the more recently first-seen item
        return ex.assemble(
            item_id=self._item_ids[target],
            target=ex.NEXT_ITEM if behavior is None else behavior,
            method=method,
            score=score,
            values=values,
            positions=positions,
            event_items=[self._item_ids[i] for i in items.tolist()],
            event_behaviors=[self.data.behaviors[b] for b in behaviors.tolist()],
            top=top,
            titles=self.titles,
            similar_history_items=[(self._item_ids[int(others[i])], float(sims[i])) for i in best],
            unknown_items=unknown,
            item_values=item_values,
        )

    def similar(self, item_id: str | int, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` items most similar to ``item_id`` by the model's item vectors: (item_id, cosine)."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        return [(self._item_ids[i], s) for i, s in ex.similar_items(self.model, self._target(item_id), k)]


def model_fingerprint(model_dir: str | Path) -> str:
    """The first 12 hex characters of sha256 over a model directory's weights and config: the same for
    the same model wherever it lies, different when it is retrained or gains items."""
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def item_titles(items: pl.DataFrame) -> dict[str, str]:
    """item_id -> title from the item table: a ``title`` or ``name`` column, else the first text column."""
    from nextaction.text.encoder import text_columns

    columns = [c for c in ("title", "name") if c in items.columns] or text_columns(items)
    if not columns:
        return {}
    values = items[columns[0]]
    if isinstance(values.dtype, pl.List):
        values = values.list.join(", ")
    titles = values.cast(pl.Utf8).str.strip_chars()
    return {str(i): t for i, t in zip(items[ITEM_ID].to_list(), titles.to_list(), strict=True) if t}
