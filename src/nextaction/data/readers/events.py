"""The event frame every reader ends in: typed event columns from source fields, rejects, ReadResult."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from nextaction.data.schema import (
    BEHAVIOR,
    CLOCK_TIMESTAMPS,
    ITEM_ID,
    LINE,
    RAW,
    REASON,
    TIMESTAMP,
    USER_ID,
    VALUE,
)
from nextaction.data.timestamps import compact_integers, reasons, to_millis
from nextaction.errors import InputError

EVENTS_SCHEMA: Final = {
    LINE: pl.Int64,
    USER_ID: pl.String,
    ITEM_ID: pl.String,
    TIMESTAMP: pl.Int64,
    BEHAVIOR: pl.String,
    VALUE: pl.Float64,
}
REJECTS_SCHEMA: Final = {LINE: pl.Int64, REASON: pl.String, RAW: pl.String}

# Bookkeeping columns while reading; odd names so that they never collide with a file's own columns.
LN: Final = "__nextaction_line__"
RAW_TEXT: Final = "__nextaction_raw__"
WHY: Final = "__nextaction_reason__"
_VALUE_WHY: Final = "__nextaction_value_reason__"


@dataclass(frozen=True, kw_only=True)
class ReadResult:
    """What a reader produced: usable events, rejected rows, and the item table when the format has one."""

    events: pl.DataFrame  # EVENTS_SCHEMA, in source order
    rejects: pl.DataFrame  # REJECTS_SCHEMA, by line
    rows_read: int  # events.height + rejects.height
    format: str
    source: str
    items: pl.DataFrame | None = None  # ITEM_ID + feature columns
    clock: str = CLOCK_TIMESTAMPS  # CLOCK_POSITIONS: TIMESTAMP is only the order of events (sequences)


# ------------------------------------------------------------------------------------------- events


def missing_if_empty(text: pl.Series) -> pl.Series:
    """Stripped text with empty strings as null (missing). Skips the copies when there is nothing to do."""
    stripped = text.str.strip_chars()
    if (stripped == "").any():
        stripped = pl.select(pl.when(stripped != "").then(stripped)).to_series()
    return stripped.alias(text.name)


def ids(column: pl.Series) -> pl.Series:
    """External ids as text; empty or NaN ids are missing (null). Integral floats lose their '.0'."""
    dtype = column.dtype
    if dtype == pl.String:
        return missing_if_empty(column)
    if dtype.is_float():
        clean = pl.select(pl.when(column.is_finite()).then(column)).to_series()
        finite = clean.drop_nulls()
        if (finite == finite.round(0)).all() and (finite.abs() < 2**53).all():
            return clean.cast(pl.Int64).cast(pl.String).alias(column.name)
        return clean.cast(pl.String).alias(column.name)
    if dtype.is_nested() or dtype == pl.Binary:
        raise InputError(f"holds {dtype} values; ids must be text or numbers", column=column.name)
    return column.cast(pl.String).alias(column.name)


def _values(column: pl.Series) -> tuple[pl.Series, pl.Series]:
    """VALUE as Float64: NaN and empty text are missing; text that is not a number or ±inf is a reject."""
    name = column.name
    if column.dtype == pl.String:
        text = missing_if_empty(column)
        number = text.cast(pl.Float64, strict=False)
    elif column.dtype.is_numeric() or column.dtype in (pl.Boolean, pl.Null):
        number = column.cast(pl.Float64)
        text = number.cast(pl.String)
    else:
        raise InputError(f"holds {column.dtype} values; the value column must be numeric", column=name)
    frame = pl.DataFrame({"t": text, "n": number})
    quoted = pl.lit("value '") + pl.col("t") + pl.lit("'")
    reason = reasons(
        frame,
        [
            (pl.col("t").is_not_null() & pl.col("n").is_null(), quoted + pl.lit(" is not a number")),
            (pl.col("n").is_infinite(), quoted + pl.lit(" is not finite")),
        ],
    )
    number = pl.select(pl.when(number.is_finite()).then(number)).to_series()  # NaN → missing
    return number.alias(name), reason


def _text(column: pl.Series) -> pl.Series:
    if column.dtype.is_nested():
        raise InputError(f"holds {column.dtype} values; behaviours must be text", column=column.name)
    return missing_if_empty(column.cast(pl.String))


def to_events(
    frames: Iterable[pl.DataFrame],
    colmap: Mapping[str, str],
    *,
    unit: str | None = None,
    behavior: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed canonical events from frames of source rows, and the rejects among them.

    A frame holds ``LN``, the source columns, and optionally ``RAW_TEXT`` (the line's text) and ``WHY`` (rows
    rejected already). Ids, behaviours and values are converted frame by frame (a slice of a big file at a
    time); timestamps once for all frames together, because their shape and unit are decided from the
    whole column. ``unit`` fixes the epoch unit of numeric timestamps; ``behavior`` is a constant
    behaviour for formats that have one (MovieLens ratings).
    """
    parts, sources = _event_slices(frames, colmap, behavior=behavior)
    events = pl.concat(parts, rechunk=False)  # no copy: a chunk per slice
    millis = events[TIMESTAMP]
    why = [events[WHY]]  # the first reason wins: rejected already, then the timestamp, then the value
    if TIMESTAMP in colmap:
        millis, ts_reason = _timestamps(events[TIMESTAMP].alias(colmap[TIMESTAMP]), events[WHY], unit)
        why.append(ts_reason)
    why = [w for w in (*why, events[_VALUE_WHY]) if w.null_count() < events.height]
    # Numbers in one chunk: prepare sorts by them, and sorting chunked columns copies them (it took ~350 MB
    # more for 10M events). Text stays in its slices: a copy would add ~500 MB to this peak for little.
    # (A new frame, since drop() and with_columns() copy every column once their chunks differ.)
    events = pl.DataFrame(
        [
            events[LINE].rechunk(),
            events[USER_ID],
            events[ITEM_ID],
            millis.rechunk().alias(TIMESTAMP),
            events[BEHAVIOR],
            events[VALUE].rechunk(),
        ]
    )
    if not why:
        return events, pl.DataFrame(schema=REJECTS_SCHEMA)
    reason = pl.select(pl.coalesce(why)).to_series()
    rejected = reason.is_not_null()
    bad = pl.concat(sources, rechunk=False).filter(rejected)
    text = [pl.col(c).cast(pl.String).fill_null("") for c in bad.columns]
    raw = (
        bad[RAW_TEXT]
        if RAW_TEXT in bad.columns
        else bad.select(pl.concat_str(text, separator=",")).to_series()
    )
    line = events[LINE].filter(rejected)
    rejects = pl.DataFrame({LINE: line, REASON: reason.filter(rejected), RAW: raw})
    return events.filter(~rejected), rejects


def _event_slices(
    frames: Iterable[pl.DataFrame], colmap: Mapping[str, str], *, behavior: str | None
) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """Per frame: its events before their timestamps are converted, and what a reject's RAW is made of
    (``RAW_TEXT``, or else the used source columns).

    The events are ``LINE``, ``USER_ID``, ``ITEM_ID``, ``TIMESTAMP`` (the source values), ``BEHAVIOR``,
    ``VALUE``, ``WHY`` (the reason a row was rejected already) and ``_VALUE_WHY``. Rows rejected already
    are converted too, as nonsense, and dropped at the end with the others: dropping them here would copy
    every slice that has one.
    """
    parts: list[pl.DataFrame] = []
    sources: list[pl.DataFrame] = []
    for frame in frames:
        n = frame.height
        earlier = frame[WHY] if WHY in frame.columns else _constant(None, n, pl.String)
        columns: dict[str, pl.Series] = {
            LINE: frame[LN].cast(pl.Int64),
            USER_ID: ids(frame[colmap[USER_ID]]),
            ITEM_ID: ids(frame[colmap[ITEM_ID]]),
            TIMESTAMP: _constant(None, n, pl.Int64),
        }
        if TIMESTAMP in colmap:
            times = frame[colmap[TIMESTAMP]]
            if earlier.null_count() < n:  # the fields of a rejected line must not keep the others text
                times = pl.select(pl.when(earlier.is_null()).then(times)).to_series()
            # Held until every slice is read: compacted, as it is most of what a slice keeps beyond events.
            columns[TIMESTAMP] = compact_integers(times)
        if behavior is not None:
            columns[BEHAVIOR] = _constant(behavior, n, pl.String)
        elif BEHAVIOR in colmap:
            columns[BEHAVIOR] = _text(frame[colmap[BEHAVIOR]])
        else:
            columns[BEHAVIOR] = _constant(None, n, pl.String)
        if VALUE in colmap:
            columns[VALUE], columns[_VALUE_WHY] = _values(frame[colmap[VALUE]])
        else:
            columns[VALUE] = _constant(None, n, pl.Float64)
            columns[_VALUE_WHY] = _constant(None, n, pl.String)
        columns[WHY] = earlier
        parts.append(pl.DataFrame({name: series.alias(name) for name, series in columns.items()}))
        sources.append(
            frame.select(RAW_TEXT)
            if RAW_TEXT in frame.columns
            else frame.select(*dict.fromkeys(colmap.values()))
        )
    if len({part.schema[TIMESTAMP] for part in parts}) > 1:  # some slices' timestamps were compacted
        parts = [part.with_columns(pl.col(TIMESTAMP).cast(pl.String)) for part in parts]
    return parts, sources


def _timestamps(values: pl.Series, earlier: pl.Series, unit: str | None) -> tuple[pl.Series, pl.Series]:
    """:func:`to_millis` of the rows without an ``earlier`` reason: only their values decide the unit and
    shape of the column. The other rows get neither milliseconds nor a reason."""
    if earlier.null_count() == len(earlier):
        return to_millis(values, unit=unit)
    rows = earlier.is_null().arg_true()
    millis, reason = to_millis(values.gather(rows), unit=unit)
    explained = reason.is_not_null().arg_true()
    return (
        _constant(None, len(values), pl.Int64).scatter(rows, millis),
        _constant(None, len(values), pl.String).scatter(rows.gather(explained), reason.gather(explained)),
    )


def _constant(value: str | None, n: int, dtype: pl.DataType | type[pl.DataType]) -> pl.Series:
    return pl.repeat(value, n, dtype=dtype, eager=True)


def rejects_of(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of a bookkeeping frame that carry a reason, as a reject frame."""
    bad = frame.filter(pl.col(WHY).is_not_null())
    return bad.select(
        pl.col(LN).cast(pl.Int64).alias(LINE), pl.col(WHY).alias(REASON), pl.col(RAW_TEXT).alias(RAW)
    )


def result(
    events: pl.DataFrame,
    rejects: list[pl.DataFrame],
    *,
    fmt: str,
    source: str | Path,
    items: pl.DataFrame | None = None,
    clock: str = CLOCK_TIMESTAMPS,
) -> ReadResult:
    events = events.select([pl.col(c).cast(t) for c, t in EVENTS_SCHEMA.items()])
    parts = [r.select([pl.col(c).cast(t) for c, t in REJECTS_SCHEMA.items()]) for r in rejects]
    all_rejects = pl.concat([pl.DataFrame(schema=REJECTS_SCHEMA), *parts]).sort(LINE, maintain_order=True)
    return ReadResult(
        events=events,
        rejects=all_rejects,
        rows_read=events.height + all_rejects.height,
        format=fmt,
        source=str(source),
        items=items,
        clock=clock,
    )
