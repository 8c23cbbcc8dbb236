"""Clean, index and split an event log: ``prepare(read) -> PrepareResult``.

Steps, in order; each is configurable and counted in ``dataset.report``:

1. missing values — a policy per column (``drop`` → reject row, ``default``, ``keep``, ``fill:<value>``);
2. behaviours — normalise (case-insensitive, spaces/hyphens → ``_``), built-in + user aliases, optional
   value → behaviour rule, optional whitelist;
3. de-duplication — exact duplicates, optionally repeats of (user, item, behaviour) within a time window;
4. filters — keep the most recent ``max_seq_len`` events per user, then iterative k-core / minimum sequence
   length until stable;
5. vocabularies — see :mod:`nextaction.data.vocab` (sorted ids, 1-based; optional user pseudonyms);
6. order — (user_idx, timestamp, original line);
7. split — see :mod:`nextaction.data.splits`;
8. items — the optional item table joined to the item vocabulary;
9. report — ``read = kept + rejected + duplicates + filtered`` is checked before returning.

Everything runs on whole columns: ids become integer codes once (one pass per id column), every later
step works on those integers, and the string columns are never copied unless a fill policy has to touch
them.

The configs are in :mod:`nextaction.data.prepare_config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import polars as pl
from rich.table import Table

from nextaction.data.dataset import PreparedDataset
from nextaction.data.prepare_config import (
    BehaviorConfig,
    DedupConfig,
    FilterConfig,
    MissingConfig,
    PrepareConfig,
)
from nextaction.data.schema import (
    BEHAVIOR,
    BEHAVIOR_IDX,
    CLOCK_POSITIONS,
    CLOCK_TIMESTAMPS,
    EVENT_COLUMNS,
    ITEM_ID,
    ITEM_IDX,
    LINE,
    RAW,
    REASON,
    SPLIT_NAMES,
    TEST,
    TIMESTAMP,
    USER_ID,
    USER_IDX,
    VALID,
    VALUE,
)
from nextaction.data.splits import iso_time, repeated_targets, split_events, split_summary
from nextaction.data.vocab import (
    behavior_alias_map,
    behavior_vocab,
    dense_lut,
    hmac_key,
    normalize_behavior,
    pseudonymize,
)
from nextaction.errors import InputError

# ----------------------------------------------------------------------------------------------- inputs


class EventLog(Protocol):
    """What ``prepare`` needs from a reader (``nextaction.data.readers.ReadResult`` has it). An optional
    ``clock`` attribute (CLOCK_POSITIONS: the log only orders events) goes to the report; default timestamps."""

    @property
    def events(self) -> pl.DataFrame: ...
    @property
    def rejects(self) -> pl.DataFrame: ...
    @property
    def rows_read(self) -> int: ...
    @property
    def items(self) -> pl.DataFrame | None: ...
    @property
    def source(self) -> str | Path | None: ...


@dataclass
class PrepareResult:
    dataset: PreparedDataset
    rejects: pl.DataFrame  # LINE, REASON, RAW: reader rejects + rows rejected by the missing-value policy


_EVENT_DTYPES: Final[Mapping[str, pl.DataType]] = {
    LINE: pl.Int64(),
    USER_ID: pl.Utf8(),
    ITEM_ID: pl.Utf8(),
    TIMESTAMP: pl.Int64(),
    BEHAVIOR: pl.Utf8(),
    VALUE: pl.Float64(),
}
_REJECT_DTYPES: Final[Mapping[str, pl.DataType]] = {LINE: pl.Int64(), REASON: pl.Utf8(), RAW: pl.Utf8()}


def _conform(frame: pl.DataFrame, dtypes: Mapping[str, pl.DataType], what: str) -> pl.DataFrame:
    """The frame with exactly the contract's columns and types (casts are free when types already match)."""
    missing = [c for c in dtypes if c not in frame.columns]
    if missing:
        raise InputError(f"{what} lack column(s) {', '.join(missing)}; have {', '.join(frame.columns)}")
    try:
        return frame.select(pl.col(c).cast(t) for c, t in dtypes.items())
    except pl.exceptions.PolarsError as e:
        raise InputError(f"{what} have a column of the wrong type ({e}); see docs/ARCHITECTURE.md") from None


# ------------------------------------------------------------------------------------------------- steps


def _missing_values(
    events: pl.DataFrame, config: MissingConfig
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Step 1: reject rows by ``drop`` policies, then fill. Returns (events, rejects, filled per column)."""
    policies = {c: config.policy(c) for c in EVENT_COLUMNS}
    dropped = [c for c in EVENT_COLUMNS if policies[c].kind == "drop" and events[c].null_count()]
    rejects = pl.DataFrame(schema=dict(_REJECT_DTYPES))
    if dropped:
        is_missing = pl.any_horizontal(pl.col(c).is_null() for c in dropped)
        reason = pl.when(pl.col(dropped[0]).is_null()).then(pl.lit(f"missing {dropped[0]}"))
        for c in dropped[1:]:
            reason = reason.when(pl.col(c).is_null()).then(pl.lit(f"missing {c}"))
        raw = pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in EVENT_COLUMNS], separator=",")
        rejects = events.filter(is_missing).select(
            pl.col(LINE), reason.otherwise(None).alias(REASON), raw.alias(RAW)
        )
        events = events.filter(~is_missing)
    filled: dict[str, int] = {}
    fills = []
    for c in EVENT_COLUMNS:
        policy = policies[c]
        if policy.kind == "fill":
            filled[c] = events[c].null_count()
            if filled[c]:
                fills.append(pl.col(c).fill_null(pl.lit(policy.fill, dtype=_EVENT_DTYPES[c])))
    if fills:
        events = events.with_columns(fills)
    return events, rejects, filled


def _id_vocab(ids: pl.Series, key: bytes | None, hex_chars: int) -> tuple[pl.Series, pl.Series]:
    """Distinct ids in code order, as (raw ids, stored ids): sorted by the stored id (see vocab.py)."""
    raw = ids.drop_nulls().unique()
    if key is None:
        raw = raw.sort()
        return raw, raw
    stored = pseudonymize(raw, key, hex_chars)
    if stored.n_unique() < stored.len():
        raise InputError(
            f"two user ids got the same {hex_chars}-character pseudonym; raise pseudonymize.hex_chars"
        )
    order = stored.arg_sort()
    return raw.gather(order), stored.gather(order)


@dataclass(frozen=True)
class _Behaviors:
    names: list[str]  # canonical names in code order
    mapping: dict[str, str]  # raw (as in the source) → canonical
    expr: pl.Expr  # the behaviour code per event (Int32)


def _behavior_codes(raw_names: list[str], config: BehaviorConfig) -> _Behaviors:
    """Step 2 (renaming and value rule) on the few distinct behaviour strings, as one column expression."""
    aliases = behavior_alias_map(config.aliases, builtin=config.builtin_aliases)
    mapping = {r: aliases.get(n, n) for r in raw_names for n in [normalize_behavior(r)]}
    rule = config.value_rule
    names = sorted(set(mapping.values()) | (rule.behaviors() if rule else set()))
    codes = {name: i for i, name in enumerate(names)}
    expr = pl.col(BEHAVIOR).replace_strict({r: codes[c] for r, c in mapping.items()}, return_dtype=pl.Int32)
    if rule is not None:
        expr = rule.expr(expr, codes)
    return _Behaviors(names=names, mapping=mapping, expr=expr)


def _dedup(frame: pl.DataFrame, config: DedupConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Step 3 on the coded frame sorted by (user, time, line), so "first" means the earliest line."""
    counts = {"exact": 0, "window": 0}
    if config.exact:
        # Exact duplicates share (user, time), so they sit in runs of equal (user, time); hashing only
        # the rows in such runs is much cheaper than hashing every row (most runs have length 1).
        user, ts = pl.col(USER_IDX), pl.col(TIMESTAMP)
        tied = ((user == user.shift(1)) & (ts == ts.shift(1))).fill_null(False)
        candidates = frame.select(pl.arg_where(tied | tied.shift(-1).fill_null(False))).to_series()
        first = frame[candidates].select(
            pl.struct(USER_IDX, ITEM_IDX, TIMESTAMP, BEHAVIOR_IDX, VALUE).is_first_distinct()
        )
        duplicates = candidates.filter(~first.to_series()).to_numpy()
        frame = _drop_rows(frame, duplicates)
        counts["exact"] = len(duplicates)
    if config.window_seconds is not None:
        # Repeats of (user, item, behaviour): sorting by that key then time puts each event right after
        # its previous occurrence (a grouped diff over millions of small groups is several times slower).
        order = frame.select(pl.arg_sort_by(USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, LINE)).to_series()
        by_key = frame.select(USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP)[order]
        same_key = pl.all_horizontal(
            pl.col(c) == pl.col(c).shift(1) for c in (USER_IDX, ITEM_IDX, BEHAVIOR_IDX)
        )
        repeat = by_key.select(
            (same_key & (pl.col(TIMESTAMP).diff() <= round(config.window_seconds * 1000))).fill_null(False)
        ).to_series()
        repeats = order.filter(repeat).to_numpy()
        frame = _drop_rows(frame, repeats)
        counts["window"] = len(repeats)
    return frame, counts


def _drop_rows(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    if not len(rows):
        return frame
    keep = np.ones(frame.height, dtype=bool)
    keep[rows] = False
    return frame.filter(pl.Series(keep))


def _filter_mask(
    users: np.ndarray, items: np.ndarray, config: FilterConfig
) -> tuple[np.ndarray, dict[str, int], int]:
    """Step 4 on integer codes (users sorted). Returns (keep mask, rows removed per step, k-core rounds)."""
    n = len(users)
    removed = {"max_seq_len": 0, "k_core": 0, "min_seq_len": 0}
    alive = np.arange(n)
    if config.max_seq_len is not None and n:
        ends = np.cumsum(np.bincount(users))
        from_end = ends[users] - 1 - alive  # 0 = the user's most recent event
        alive = alive[from_end < config.max_seq_len]
        removed["max_seq_len"] = n - len(alive)
    user_min = max(config.min_user_events, config.min_seq_len)
    item_min = config.min_item_events
    rounds = 0
    while len(alive):
        rounds += 1
        before = len(alive)
        if user_min > 1:
            count = np.bincount(users[alive])[users[alive]]
            removed["k_core"] += int(np.count_nonzero(count < config.min_user_events))
            removed["min_seq_len"] += int(
                np.count_nonzero((count >= config.min_user_events) & (count < user_min))
            )
            alive = alive[count >= user_min]
        if item_min > 1:
            count = np.bincount(items[alive])[items[alive]]
            removed["k_core"] += int(np.count_nonzero(count < item_min))
            alive = alive[count >= item_min]
        # Only removing users *and* items can cascade; one-sided filtering is done after one round.
        if len(alive) == before or user_min <= 1 or item_min <= 1:
            break
    keep = np.zeros(n, dtype=bool)
    keep[alive] = True
    return keep, removed, rounds


def _item_table(
    vocab: pl.DataFrame, table: pl.DataFrame | None
) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    """Step 8: features for the indexed items; items that are not in the events are reported, not indexed."""
    if table is None:
        return vocab, None
    if ITEM_ID not in table.columns:
        raise InputError(
            f"the item table has no {ITEM_ID} column; its columns are {', '.join(table.columns)}"
        )
    if ITEM_IDX in table.columns:
        raise InputError(f"the item table has a column named {ITEM_IDX}, which is reserved; rename it")
    table = table.with_columns(pl.col(ITEM_ID).cast(pl.Utf8))
    rows = table.height
    table = table.filter(pl.col(ITEM_ID).is_not_null())
    no_id = rows - table.height
    table = table.unique(ITEM_ID, keep="first", maintain_order=True)
    duplicates = rows - no_id - table.height
    items = vocab.join(table, on=ITEM_ID, how="left", maintain_order="left")
    matched = vocab.join(table, on=ITEM_ID, how="semi").height
    return items, {
        "rows": rows,
        "without_item_id": no_id,
        "duplicate_ids": duplicates,
        "indexed_with_features": matched,
        "indexed_without_features": vocab.height - matched,
        "not_in_events": table.height - matched,
        "note": "items that never occur in the kept events are not indexed",
        "columns": [c for c in table.columns if c != ITEM_ID],
    }


def _sequence_stats(lengths: np.ndarray) -> dict[str, float | int]:
    if not len(lengths):
        return {}
    qs = np.percentile(lengths, [25, 50, 75, 90, 99])
    stats: dict[str, float | int] = {"min": int(lengths.min())}
    stats.update({f"p{q}": float(v) for q, v in zip((25, 50, 75, 90, 99), qs, strict=True)})
    stats.update(max=int(lengths.max()), mean=round(float(lengths.mean()), 3))
    return stats


# ------------------------------------------------------------------------------------------------ prepare


@dataclass(frozen=True)
class _Codes:
    """Integer codes for ids and behaviours; position in each series = code."""

    user_raw: pl.Series  # raw user ids in code order
    user_stored: pl.Series  # what is stored for them (the pseudonym when pseudonymising)
    item_raw: pl.Series
    behaviors: _Behaviors


def _encode(events: pl.DataFrame, config: PrepareConfig) -> tuple[pl.DataFrame, _Codes]:
    """Step 2 and 6: the events as integer codes, sorted by (user, time, line)."""
    pseudo = config.pseudonymize
    key = hmac_key(pseudo.key) if pseudo.enabled else None
    user_raw, user_stored = _id_vocab(events[USER_ID], key, pseudo.hex_chars)
    item_raw, _ = _id_vocab(events[ITEM_ID], None, 0)
    behaviors = _behavior_codes(events[BEHAVIOR].unique().drop_nulls().to_list(), config.behaviors)
    # Eager on purpose: Polars 2.1's default (streaming) engine was slower and used more memory here.
    frame = events.select(
        pl.col(LINE),
        pl.col(USER_ID).cast(pl.Enum(user_raw)).to_physical().alias(USER_IDX),
        pl.col(ITEM_ID).cast(pl.Enum(item_raw)).to_physical().alias(ITEM_IDX),
        pl.col(TIMESTAMP),
        behaviors.expr.alias(BEHAVIOR_IDX),
        pl.col(VALUE),
    )
    # User codes are already in final index order (vocab.dense_lut keeps it), so this is the final order.
    frame = frame.sort(USER_IDX, TIMESTAMP, LINE)
    return frame, _Codes(user_raw=user_raw, user_stored=user_stored, item_raw=item_raw, behaviors=behaviors)


def _reindex(frame: pl.DataFrame, codes: _Codes) -> PreparedDataset:
    """Step 5: dense 1-based indices for what survived cleaning (no split, no item features yet)."""
    user_codes, item_codes = frame[USER_IDX].to_numpy(), frame[ITEM_IDX].to_numpy()
    user_lut, user_present = dense_lut(user_codes, codes.user_raw.len())
    item_lut, item_present = dense_lut(item_codes, codes.item_raw.len())
    names = codes.behaviors.names
    beh_codes = frame[BEHAVIOR_IDX].to_numpy()
    counts = np.bincount(beh_codes, minlength=len(names))
    behaviors = behavior_vocab({name: int(n) for name, n in zip(names, counts, strict=True) if n})
    beh_lut = np.array([behaviors.index(name) if n else 0 for name, n in zip(names, counts, strict=True)])
    events = pl.DataFrame(
        {
            USER_IDX: user_lut[user_codes],
            ITEM_IDX: item_lut[item_codes],
            BEHAVIOR_IDX: beh_lut[beh_codes].astype(np.int8),
            TIMESTAMP: frame[TIMESTAMP],
            VALUE: frame[VALUE],
        }
    )
    users = pl.DataFrame(
        {
            USER_IDX: np.arange(1, int(user_present.sum()) + 1, dtype=np.int32),
            USER_ID: codes.user_stored.filter(pl.Series(user_present)),
        }
    )
    items = pl.DataFrame(
        {
            ITEM_IDX: np.arange(1, int(item_present.sum()) + 1, dtype=np.int32),
            ITEM_ID: codes.item_raw.filter(pl.Series(item_present)),
        }
    )
    return PreparedDataset(events=events, users=users, items=items, behaviors=behaviors)


def _time_span(events: pl.DataFrame, clock: str) -> dict[str, Any]:
    """First and last moment: dates, or for a log without a clock the first and last position (p × 1000 ms)."""
    low, high = _as_int(events[TIMESTAMP].min()), _as_int(events[TIMESTAMP].max())
    if clock == CLOCK_POSITIONS:
        return {
            "first position": None if low is None else low // 1000,
            "last position": None if high is None else high // 1000,
        }
    return {"min": iso_time(low), "max": iso_time(high)}


def read_user_folds(path: str | Path) -> dict[str, int]:
    """``split.user_folds``: a CSV/TSV with a user id column (any user alias) and a ``fold`` column."""
    from nextaction.data.readers.columns import ALIASES, find_alias
    from nextaction.data.readers.frames import side_table

    p = Path(path).expanduser()
    frame = side_table(p, what="split user_folds", hint="give a CSV with user and fold columns")
    user = find_alias(frame.columns, ALIASES[USER_ID])
    fold = next((c for c in frame.columns if c.strip().lower() == "fold"), None)
    if user is None or fold is None:
        raise InputError(
            f"split user_folds needs a user column and a fold column; columns found: {', '.join(frame.columns)}",
            path=p,
        )
    folds = frame[fold].cast(pl.Int64, strict=False)
    if folds.null_count():
        row = int(folds.is_null().arg_true()[0])
        raise InputError(
            f"fold {frame[fold][row]!r} is not a whole number", path=p, line=row + 2, column=fold
        )
    return dict(zip(frame[user].str.strip_chars().to_list(), folds.to_list(), strict=True))


def prepare(
    read: EventLog,
    *,
    items: pl.DataFrame | None = None,
    config: PrepareConfig = PrepareConfig(),
    progress: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Clean, index and split ``read`` (see the module docstring for the steps).

    ``items`` (ITEM_ID + feature columns) wins over ``read.items``. ``progress`` gets one line per step.
    """
    say = progress or (lambda _message: None)
    source = None if read.source is None else str(read.source)
    events = _conform(read.events, _EVENT_DTYPES, "events")
    reader_rejects = _conform(read.rejects, _REJECT_DTYPES, "rejects")
    rows_read = int(read.rows_read)
    if rows_read != events.height + reader_rejects.height:
        raise ValueError(
            f"reader bug: rows_read={rows_read} but {events.height} events + {reader_rejects.height} rejects"
        )

    # 1. Missing values. A blank behaviour name is as good as none: it goes through the behaviour policy.
    blank = [b for b in events[BEHAVIOR].unique().drop_nulls().to_list() if not normalize_behavior(b)]
    if blank:
        events = events.with_columns(
            pl.when(pl.col(BEHAVIOR).is_in(blank)).then(None).otherwise(pl.col(BEHAVIOR)).alias(BEHAVIOR)
        )
    events, missing_rejects, filled = _missing_values(events, config.missing)
    rejects = pl.concat([reader_rejects, missing_rejects]).sort(LINE, maintain_order=True)
    say(f"missing values: {missing_rejects.height} rows rejected, {sum(filled.values())} values filled")
    if config.strict and rejects.height:
        first = rejects.row(0, named=True)
        raise InputError(
            f"{first[REASON]} ({rejects.height} rejected rows in total; strict mode allows none): "
            "fix the input or prepare without strict",
            path=source,
            line=first[LINE],
        )
    if events.height == 0:
        raise InputError("no usable events (every row was rejected); see rejects.csv", path=source)

    # 2. Ids and behaviours to integer codes (and 6. the final order); every later step works on integers.
    frame, codes = _encode(events, config)
    del events
    say(f"encoded {frame.height} events: {codes.user_raw.len()} users, {codes.item_raw.len()} items")
    filtered_by_step = {"behavior_whitelist": 0, "max_seq_len": 0, "k_core": 0, "min_seq_len": 0}
    if config.behaviors.keep is not None:
        allowed = [i for i, name in enumerate(codes.behaviors.names) if name in config.behaviors.keep]
        before = frame.height
        frame = frame.filter(pl.col(BEHAVIOR_IDX).is_in(allowed))
        filtered_by_step["behavior_whitelist"] = before - frame.height
        say(f"behaviour whitelist: {filtered_by_step['behavior_whitelist']} events removed")

    # 3. De-duplication.
    frame, duplicates = _dedup(frame, config.dedup)
    say(f"duplicates: {duplicates['exact']} exact, {duplicates['window']} within the window")

    # 4. Filters.
    keep, removed, rounds = _filter_mask(
        frame[USER_IDX].to_numpy(), frame[ITEM_IDX].to_numpy(), config.filters
    )
    filtered_by_step.update(removed)
    if not keep.all():
        frame = frame.filter(pl.Series(keep))
    say(f"filters: {sum(removed.values())} events removed ({rounds} round(s))")
    if frame.height == 0:
        raise InputError(
            "no events left after de-duplication and filters; relax the filters or the behaviour whitelist",
            path=source,
        )

    # 5. Vocabularies.
    dataset = _reindex(frame, codes)
    del frame

    # 7. Split.
    split_codes, split_info = split_events(
        dataset.events,
        config.split,
        dataset.behaviors,
        clock=str(getattr(read, "clock", CLOCK_TIMESTAMPS)),
        user_ids=dataset.users[USER_ID],
        read_folds=read_user_folds,
    )
    dataset.events = dataset.events.with_columns(split_codes)
    dataset.sequences = None  # the split changed: rebuild the CSR arrays from the events
    split_info["repeated_targets"] = {
        SPLIT_NAMES[code]: repeated_targets(dataset.seqs, code) for code in (VALID, TEST)
    }
    say(f"split: {split_summary(split_info)}")

    # 8. Items.
    dataset.items, items_info = _item_table(dataset.items, items if items is not None else read.items)

    # 9. Report.
    pseudonymized = config.pseudonymize.enabled
    if pseudonymized:
        # Reader RAW text may hold the user id anywhere in the line; it cannot be pseudonymised reliably.
        rejects = rejects.with_columns(pl.lit(None, pl.Utf8).alias(RAW))
    rows = {
        "read": rows_read,
        "rejected": rejects.height,
        "duplicates": sum(duplicates.values()),
        "filtered": sum(filtered_by_step.values()),
        "kept": dataset.events.height,
    }
    if rows["read"] != rows["kept"] + rows["rejected"] + rows["duplicates"] + rows["filtered"]:
        raise AssertionError(f"row accounting does not add up: {rows}")
    by_reason = rejects.group_by(REASON).len().sort(["len", REASON], descending=[True, False])
    events = dataset.events
    behavior_counts = np.bincount(events[BEHAVIOR_IDX].to_numpy(), minlength=len(dataset.behaviors))
    dataset.report = {
        "source": source,
        "rows": rows,
        "rejected_by_reason": dict(by_reason.iter_rows()),
        "filled": filled,
        "duplicates_by_kind": duplicates,
        "filtered_by_step": filtered_by_step,
        "k_core_rounds": rounds,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "behaviors": {
            name: int(n) for name, n in zip(dataset.behaviors[1:], behavior_counts[1:], strict=True)
        },
        "behavior_mapping": dict(sorted(codes.behaviors.mapping.items())[:200]),
        "clock": str(getattr(read, "clock", CLOCK_TIMESTAMPS)),
        "time_span": _time_span(events, str(getattr(read, "clock", CLOCK_TIMESTAMPS))),
        "sequence_length": _sequence_stats(np.bincount(events[USER_IDX].to_numpy())[1:]),
        "split": split_info,
        "items_table": items_info,
        "vocabulary": {
            "users": "1-based, sorted by user_id" + (" (the pseudonym)" if pseudonymized else ""),
            "items": "1-based, sorted by item_id",
            "behaviors": "0 = <pad>, then by descending count, ties by name",
        },
        "pseudonymized": pseudonymized,
        "rejects_raw": "removed (pseudonymised user ids)" if pseudonymized else "kept",
        "config": config.to_dict(),
    }
    say(f"kept {rows['kept']} of {rows['read']} rows: {dataset.n_users} users, {dataset.n_items} items")
    if config.social.trusts is not None:
        # 10. A trust graph as context: trusted users' TRAIN-period events copied into trustors' histories
        # (data/social.py). rows.kept stays the log's own events; report.social counts the copies.
        from nextaction.data.social import add_trusted_events, read_edges

        dataset, social = add_trusted_events(
            dataset,
            read_edges(config.social.trusts),
            max_events=config.social.max_events,
            prefix=config.social.prefix,
        )
        say(
            f"trust graph: {social['context_events']} trusted events for {social['trustors_with_context']} users"
        )
    return PrepareResult(dataset=dataset, rejects=rejects)


def _as_int(value: Any) -> int | None:
    return None if value is None else int(value)


# ------------------------------------------------------------------------------------------------ display


def report_table(report: Mapping[str, Any]) -> Table:
    """The report as one Rich table with a section per step (for the CLI)."""
    table = Table(title="prepare", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")

    def section(title: str, values: Mapping[str, Any] | None) -> None:
        if not values:
            return
        table.add_section()
        table.add_row(f"[dim]{title}[/dim]", "")
        for name, value in values.items():
            table.add_row(f"  {name}", _fmt(value))

    section("rows", report.get("rows"))
    section("rejected by reason", dict(list(report.get("rejected_by_reason", {}).items())[:10]))
    section("filled", {k: v for k, v in report.get("filled", {}).items() if v})
    section("duplicates", {k: v for k, v in report.get("duplicates_by_kind", {}).items() if v})
    section("filtered", {k: v for k, v in report.get("filtered_by_step", {}).items() if v})
    section(
        "vocabulary",
        {"users": report.get("users"), "items": report.get("items"), **report.get("behaviors", {})},
    )
    section("time span", {"clock": report.get("clock", CLOCK_TIMESTAMPS), **report.get("time_span", {})})
    section("sequence length", report.get("sequence_length"))
    split = report.get("split") or {}
    split_rows = {"kind": split.get("kind")}
    for key in ("target_behavior", "valid_cutoff", "test_cutoff"):
        if split.get(key):
            split_rows[key] = split[key]
    for name in SPLIT_NAMES:
        events = split.get("events", {}).get(name, 0)
        users = split.get("users", {}).get(name, 0)
        split_rows[name] = f"{_fmt(events)} events · {_fmt(users)} users"
    test_repeats = split.get("repeated_targets", {}).get("test")
    if test_repeats and test_repeats["targets"]:
        split_rows["test targets repeating a history item"] = (
            f"{test_repeats['share']:.1%} ({_fmt(test_repeats['repeats'])} of {_fmt(test_repeats['targets'])})"
        )
    section("split", split_rows)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


__all__ = [
    "EventLog",
    "PrepareResult",
    "prepare",
    "report_table",
]
