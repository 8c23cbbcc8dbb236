"""Turn a timestamp column of any common shape into ``Int64`` milliseconds since the Unix epoch.

Accepted shapes (one per column; a value in another shape is a reject, not a guess):

* **epoch numbers** (integers or decimals, as numbers or as text). The unit is detected from the median
  magnitude of the column's non-negative values:

  ==========================  ============  =====================================================
  median ``v``                unit          why this range
  ==========================  ============  =====================================================
  ``v < 1e11``                seconds       1e11 s is the year 5138; small integers such as
                                            positions or day numbers count as seconds too
  ``1e11 <= v < 1e14``        milliseconds  1e11 ms is 1973-03, 1e14 ms is the year 5138
  ``1e14 <= v < 1e17``        microseconds  same window, 1000 times finer
  ``v >= 1e17``               nanoseconds   same window again (int64 ns ends in 2262)
  ==========================  ============  =====================================================

  A value whose own magnitude falls in another unit's range (a millisecond value in a column of
  seconds) is rejected as a mixed-unit value. Negative numbers, NaN and infinities are rejected.
* **ISO-8601 text**: ``YYYY-MM-DD`` optionally followed by ``T`` or a space, ``HH:MM[:SS[.fff…]]`` and an
  optional ``Z`` or ``±HH[:MM]`` offset. Text without an offset is taken as UTC. Fractions finer than a
  millisecond are truncated.
* **Polars/pandas datetimes and dates** (naive ones are taken as UTC).

Times before 1970 (negative epoch values) are rejected in every shape.

:func:`to_millis` returns the milliseconds and, per row, the reason the value was rejected (or null).
Missing values (null, empty text) are neither: they stay null in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from nextaction.errors import InputError

SECONDS: Final = "s"
MILLIS: Final = "ms"
MICROS: Final = "us"
NANOS: Final = "ns"
UNITS: Final = (SECONDS, MILLIS, MICROS, NANOS)
_UNIT_NAMES: Final = {
    SECONDS: "seconds",
    MILLIS: "milliseconds",
    MICROS: "microseconds",
    NANOS: "nanoseconds",
}
# Lower magnitude bound of each unit (see the table in the module docstring).
_LOWER: Final = {SECONDS: 0.0, MILLIS: 1e11, MICROS: 1e14, NANOS: 1e17}
_UPPER: Final = {SECONDS: 1e11, MILLIS: 1e14, MICROS: 1e17, NANOS: float("inf")}
_TO_MS: Final = {SECONDS: 1000.0, MILLIS: 1.0, MICROS: 1e-3, NANOS: 1e-6}

_MS_PER_DAY: Final = 86_400_000
_NUMBER_RE: Final = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^(?i:[+-]?(?:nan|inf|infinity))$"
# The date and time parts sit at fixed offsets once this matches; see _parse_iso.
_ISO_RE: Final = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_ISO_TAIL_RE: Final = r"^(?:[.,](\d+))?(?:[Zz]|([+-])(\d{2}):?(\d{2})?)?$"
# Layouts Polars parses in one fast pass when a whole column uses one of them (no offsets: those are rarer).
_DATE_LAYOUT: Final = "%Y-%m-%d"
_ISO_LAYOUTS: Final = tuple(
    f"%Y-%m-%d{sep}%H:%M{seconds}{zulu}"
    for sep in ("T", " ")
    for seconds in (":%S", ":%S%.f", "")
    for zulu in ("Z", "")
)
_LAYOUT_SAMPLE: Final = 1000  # ISO values tried against each layout
_UNIT_SAMPLE: Final = 100_000  # values looked at to detect the unit (a strided sample of big columns)


def reasons(frame: pl.DataFrame, cases: Sequence[tuple[pl.Expr, pl.Expr]]) -> pl.Series:
    """Per row, the message of the first case whose condition holds (null when none does).

    Messages are built only for the rows that need one: building text for every row of a 10M-row
    column costs seconds, while the conditions are cheap.
    """
    code = pl.when(cases[0][0]).then(pl.lit(0, dtype=pl.Int8))
    for i, (condition, _) in enumerate(cases[1:], start=1):
        code = code.when(condition).then(pl.lit(i, dtype=pl.Int8))
    codes = frame.select(code.alias("code")).to_series()
    out = pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias("reason")
    rows = codes.is_not_null().arg_true()
    if rows.is_empty():
        return out
    picked = frame[rows].with_columns(codes.gather(rows).alias("__code__"))
    message = pl.when(pl.col("__code__") == 0).then(cases[0][1])
    for i, (_, text) in enumerate(cases[1:], start=1):
        message = message.when(pl.col("__code__") == i).then(text)
    return out.scatter(rows, picked.select(message.cast(pl.String)).to_series())


def detect_unit(values: pl.Series) -> str:
    """The epoch unit of a numeric column, from the median magnitude of its non-negative values."""
    if len(values) > _UNIT_SAMPLE:
        values = values.gather_every(len(values) // _UNIT_SAMPLE)
    as_float = values.cast(pl.Float64)
    finite = as_float.filter(as_float.is_finite() & (as_float >= 0))
    if finite.is_empty():
        return SECONDS
    return _unit_of(float(finite.median()))  # type: ignore[arg-type]


def _unit_of(magnitude: float) -> str:
    for unit in (NANOS, MICROS, MILLIS):
        if magnitude >= _LOWER[unit]:
            return unit
    return SECONDS


def to_millis(values: pl.Series, *, unit: str | None = None) -> tuple[pl.Series, pl.Series]:
    """Convert ``values`` to epoch milliseconds.

    ``unit`` forces the epoch unit of numeric values (a format that knows it, e.g. OTTO's milliseconds);
    otherwise it is detected. Returns ``(millis Int64, reason Utf8)``: a row has a millisecond value, or a
    reason it was rejected, or neither when the value is missing. Raises :class:`InputError` when the
    column holds no timestamps at all (it is most likely the wrong column).
    """
    if unit is not None and unit not in UNITS:
        raise ValueError(f"unknown epoch unit {unit!r}; expected one of {UNITS}")
    name = values.name
    dtype = values.dtype
    if dtype == pl.Null:
        return pl.repeat(None, len(values), dtype=pl.Int64, eager=True).alias(name), _no_reasons(len(values))
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        millis = values.dt.epoch("ms") if dtype != pl.Date else values.cast(pl.Int64) * _MS_PER_DAY
        frame = pl.DataFrame({"ms": millis, "shown": values.cast(pl.String)})
        why = pl.lit("timestamp '") + pl.col("shown") + pl.lit("' is before 1970 (negative epoch time)")
        reason = reasons(frame, [(pl.col("ms") < 0, why)])
        return frame.select(pl.when(pl.col("ms") >= 0).then(pl.col("ms")).alias(name)).to_series(), reason
    if dtype.is_integer() or dtype.is_float():
        return _from_numbers(values, values, unit)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return _from_text(values.cast(pl.String), unit)
    raise InputError(
        f"has type {dtype}; timestamps must be epoch numbers, ISO-8601 text or datetimes", column=name
    )


def compact_integers(values: pl.Series) -> pl.Series:
    """Text whose every value is an integer written plainly (``"1433221969"``) as ``Int64``; else as is.

    For holding a big text column until it is converted: 8 bytes a value instead of 16–30. :func:`to_millis`
    gives the same result for both, reasons included, because the text is exactly the integer's own
    (no ``+``, leading zeros or blanks) and is quoted the same; casting back to text restores it exactly.
    """
    if values.dtype != pl.String:
        return values
    as_int = values.cast(pl.Int64, strict=False)
    return as_int if as_int.cast(pl.String).eq_missing(values).all() else values


def _no_reasons(n: int) -> pl.Series:
    return pl.repeat(None, n, dtype=pl.String, eager=True).alias("reason")


def _from_numbers(numbers: pl.Series, shown: pl.Series, unit: str | None) -> tuple[pl.Series, pl.Series]:
    """Numeric values → ms. ``shown`` is how each value is quoted in a reject reason (the source text)."""
    name = numbers.name
    detected = unit is None
    unit = unit or detect_unit(numbers)
    frame = pl.DataFrame({"v": numbers, "f": numbers.cast(pl.Float64), "shown": shown})
    f = pl.col("f")
    # Cast inside the message: reasons() builds messages for the rejected rows only, and numbers as text
    # for a whole 10M-row column would cost seconds and hundreds of MB.
    quoted = pl.lit("timestamp '") + pl.col("shown").cast(pl.String) + pl.lit("'")
    cases: list[tuple[pl.Expr, pl.Expr]] = [(f < 0, quoted + pl.lit(" is negative"))]
    if numbers.dtype.is_float():
        cases += [
            (f.is_nan(), quoted + pl.lit(" is NaN")),
            (f.is_infinite(), quoted + pl.lit(" is not finite")),
        ]
    unit_name = _UNIT_NAMES[unit]
    if detected:
        # A value outside the detected unit's range most likely uses another unit (mixed units).
        for other in UNITS:
            if other != unit:
                in_other = (f >= _LOWER[other]) & (f < _UPPER[other])
                why = f" looks like {_UNIT_NAMES[other]} but the column holds {unit_name} (mixed units)"
                cases.append((in_other, quoted + pl.lit(why)))
    else:
        # Keep the result inside int64 milliseconds (and a sane calendar: before the year 5138).
        cases.append((f * _TO_MS[unit] >= 1e14, quoted + pl.lit(f" is out of range for {unit_name}")))
    reason = reasons(frame, cases)
    if numbers.dtype.is_integer():
        millis = _scale_int(pl.col("v").cast(pl.Int64), unit)
    else:
        millis = pl.when(f.is_finite()).then((f * _TO_MS[unit]).round(0)).cast(pl.Int64, strict=False)
    if reason.null_count() < len(reason):
        millis = pl.when(pl.lit(reason).is_null()).then(millis)
    return frame.select(millis.alias(name)).to_series(), reason


def _scale_int(v: pl.Expr, unit: str) -> pl.Expr:
    # Integer arithmetic: float would lose precision for µs/ns values (> 2**53).
    if unit == SECONDS:
        return pl.when(v.abs() < 10**14).then(v * 1000)
    if unit == MILLIS:
        return v
    return v.floordiv(1000 if unit == MICROS else 1_000_000)


def _from_text(text: pl.Series, unit: str | None) -> tuple[pl.Series, pl.Series]:
    name = text.name
    as_int = text.cast(pl.Int64, strict=False)
    if as_int.null_count() == text.null_count():  # the common case: every value is an integer
        return _from_numbers(as_int.alias(name), text, unit)
    s = text.str.strip_chars()
    s = pl.select(pl.when(s != "").then(s)).to_series().alias(name)
    present = s.is_not_null()
    is_iso = s.str.contains(_ISO_RE)
    n_iso = int(is_iso.sum())
    if n_iso == int(present.sum()):  # the other common case: every value is ISO-8601
        return _parse_iso(s, is_iso)
    as_int = s.cast(pl.Int64, strict=False)
    is_number = s.str.contains(_NUMBER_RE)
    n_number = int(is_number.sum())
    if n_number == 0 and n_iso == 0:
        example = s.filter(present)[0]
        raise InputError(
            f"holds no timestamps (e.g. {example!r}): expected epoch seconds/milliseconds or ISO-8601 "
            "dates like 2015-06-01T12:00:00Z; map another column with --map time=…",
            column=name,
        )
    quoted = pl.lit("timestamp '") + pl.col("s") + pl.lit("'")
    frame = pl.DataFrame({"s": s, "num": is_number, "iso": is_iso})
    if n_number >= n_iso:
        numbers = pl.Series(name, _numbers_keeping_ints(s, as_int))
        millis, reason = _from_numbers(numbers.alias(name), s, unit)
        other = (
            pl.col("iso"),
            quoted + pl.lit(" is an ISO-8601 date but the rest of the column holds epoch numbers"),
        )
        invalid = (
            pl.col("s").is_not_null() & ~pl.col("num"),
            quoted + pl.lit(" is not a number like the rest"),
        )
    else:
        millis, reason = _parse_iso(s, is_iso)
        other = (
            pl.col("num"),
            quoted + pl.lit(" is a number but the rest of the column holds ISO-8601 dates"),
        )
        invalid = (
            pl.col("s").is_not_null() & ~pl.col("iso"),
            quoted + pl.lit(" is not a valid ISO-8601 date"),
        )
    mismatch = reasons(frame, [other, invalid])
    out = pl.DataFrame({"ms": millis, "reason": reason, "mismatch": mismatch}).select(
        pl.when(pl.col("mismatch").is_null()).then(pl.col("ms")).alias(name),
        pl.coalesce("mismatch", "reason").alias("reason"),
    )
    return out[name], out["reason"]


def _numbers_keeping_ints(s: pl.Series, as_int: pl.Series) -> pl.Series:
    """Float64 for a column mixing integers and decimals; the integers stay exact as far as float allows."""
    as_float = s.cast(pl.Float64, strict=False)
    return pl.select(pl.coalesce(as_int.cast(pl.Float64), as_float)).to_series()


def _parse_iso(s: pl.Series, is_iso: pl.Series) -> tuple[pl.Series, pl.Series]:
    """ISO-8601 text → ms. Columns in one common layout go through Polars' strptime in a single pass;
    the values it cannot take (offsets, other layouts, invalid dates) go through :func:`_parse_iso_slices`.
    """
    fast = _strptime_common_layout(s, is_iso)
    if fast is None:
        return _parse_iso_slices(s, is_iso)
    fast = pl.select(pl.when(is_iso).then(fast)).to_series().alias(s.name)
    rest = (is_iso & (fast.is_null() | (fast < 0))).arg_true()  # the slicing parser explains those
    why = pl.repeat(None, len(s), dtype=pl.String, eager=True).alias("reason")
    if not rest.is_empty():
        millis, reason = _parse_iso_slices(s.gather(rest), is_iso.gather(rest))
        fast = fast.scatter(rest, millis)
        why = why.scatter(rest, reason)
    return fast, why


def _strptime_common_layout(s: pl.Series, is_iso: pl.Series) -> pl.Series | None:
    """Epoch ms via the first of :data:`_ISO_LAYOUTS` that fits a sample of the column, or None."""
    sample = s.filter(is_iso).head(_LAYOUT_SAMPLE)
    if sample.is_empty():
        return None
    if sample.str.to_date(_DATE_LAYOUT, strict=False).null_count() == 0:
        return s.str.to_date(_DATE_LAYOUT, strict=False).cast(pl.Int64) * _MS_PER_DAY
    for layout in _ISO_LAYOUTS:
        if sample.str.to_datetime(layout, time_unit="ms", strict=False).null_count() == 0:
            return s.str.to_datetime(layout, time_unit="ms", strict=False).dt.epoch("ms")
    return None


def _parse_iso_slices(s: pl.Series, is_iso: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Parse ISO-8601 text by fixed offsets (``_ISO_RE`` guarantees them) and explain invalid values."""
    name = s.name
    frame = pl.DataFrame({"s": s, "iso": is_iso})
    s_ = pl.col("s")
    has_time = s_.str.len_bytes() > 10
    has_sec = s_.str.slice(16, 1) == ":"
    tail = pl.when(has_sec).then(s_.str.slice(19)).when(has_time).then(s_.str.slice(16)).otherwise(pl.lit(""))
    frame = frame.with_columns(
        date=s_.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
        hh=pl.when(has_time).then(s_.str.slice(11, 2).cast(pl.Int64, strict=False)).otherwise(0),
        mi=pl.when(has_time).then(s_.str.slice(14, 2).cast(pl.Int64, strict=False)).otherwise(0),
        ss=pl.when(has_sec).then(s_.str.slice(17, 2).cast(pl.Int64, strict=False)).otherwise(0),
        tail=tail.str.extract_groups(_ISO_TAIL_RE),
    ).unnest("tail")
    frac, sign, tz_h, tz_m = (pl.col(str(i)) for i in range(1, 5))
    frac_ms = frac.str.slice(0, 3).str.pad_end(3, "0").cast(pl.Int64).fill_null(0)
    tz_h_i = tz_h.cast(pl.Int64).fill_null(0)
    tz_m_i = tz_m.cast(pl.Int64).fill_null(0)
    offset_ms = (tz_h_i * 60 + tz_m_i) * 60_000 * pl.when(sign == "-").then(-1).otherwise(1)
    quoted = pl.lit("timestamp '") + s_ + pl.lit("'")
    frame = frame.with_columns(tz_h=tz_h_i, tz_m=tz_m_i, offset=offset_ms, frac_ms=frac_ms)
    bad_time = (pl.col("hh") > 23) | (pl.col("mi") > 59) | (pl.col("ss") > 59)
    bad_time = bad_time | (pl.col("tz_h") > 23) | (pl.col("tz_m") > 59)
    reason = reasons(
        frame,
        [
            (~pl.col("iso"), pl.lit(None, dtype=pl.String)),  # not ISO at all: the caller explains
            (pl.col("date").is_null(), quoted + pl.lit(" is not a valid ISO-8601 date")),
            (bad_time, quoted + pl.lit(" has an invalid time of day")),
            (pl.col("date").cast(pl.Int64) < 0, quoted + pl.lit(" is before 1970 (negative epoch time)")),
        ],
    )
    millis = (
        pl.col("date").cast(pl.Int64) * _MS_PER_DAY
        + pl.col("hh") * 3_600_000
        + pl.col("mi") * 60_000
        + pl.col("ss") * 1000
        + pl.col("frac_ms")
        - pl.col("offset")
    )
    ok = pl.lit(reason).is_null() & pl.col("iso")
    return frame.select(pl.when(ok).then(millis).alias(name)).to_series(), reason
