"""Timestamp parsing: epoch unit detection, ISO-8601 text, datetimes, and what is rejected."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextaction.data.timestamps import (
    MICROS,
    MILLIS,
    NANOS,
    SECONDS,
    compact_integers,
    detect_unit,
    reasons,
    to_millis,
)
from nextaction.errors import InputError

T0 = 1_433_221_969  # 2015-06-02T05:12:49Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def convert(values: list, **kwargs) -> tuple[list, list]:
    millis, why = to_millis(pl.Series("ts", values), **kwargs)
    assert millis.dtype == pl.Int64
    assert why.dtype == pl.String
    assert len(millis) == len(why) == len(values)
    # A row has a value, a reason, or neither (missing), never both.
    assert not (millis.is_not_null() & why.is_not_null()).any()
    return millis.to_list(), why.to_list()


@pytest.mark.parametrize(
    ("values", "unit"),
    [
        ([T0, T0 + 1], SECONDS),
        ([1, 2, 3], SECONDS),  # positions count as seconds
        ([T0 * 1000], MILLIS),
        ([T0 * 1_000_000], MICROS),
        ([T0 * 1_000_000_000], NANOS),
        ([99_999_999_999], SECONDS),  # just below 1e11
        ([100_000_000_000], MILLIS),  # 1e11
        ([float(T0) + 0.5], SECONDS),
    ],
)
def test_unit_detection(values: list, unit: str) -> None:
    assert detect_unit(pl.Series(values)) == unit


@pytest.mark.parametrize("scale", [1, 1000, 1_000_000, 1_000_000_000])
def test_every_unit_converts_to_the_same_millis(scale: int) -> None:
    millis, why = convert([T0 * scale, (T0 + 60) * scale])
    assert millis == [T0 * 1000, (T0 + 60) * 1000]
    assert why == [None, None]


def test_text_integers_and_decimals() -> None:
    assert convert([str(T0), f"{T0}.25", " 12 "]) == ([T0 * 1000, T0 * 1000 + 250, 12_000], [None] * 3)


def test_positions_are_seconds() -> None:
    assert convert([0, 1, 2]) == ([0, 1000, 2000], [None, None, None])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-06-01", datetime(2015, 6, 1, tzinfo=UTC)),
        ("2015-06-01T10:20", datetime(2015, 6, 1, 10, 20, tzinfo=UTC)),
        ("2015-06-01 10:20:30", datetime(2015, 6, 1, 10, 20, 30, tzinfo=UTC)),
        ("2015-06-01T10:20:30Z", datetime(2015, 6, 1, 10, 20, 30, tzinfo=UTC)),
        ("2015-06-01T10:20:30.5Z", datetime(2015, 6, 1, 10, 20, 30, 500_000, tzinfo=UTC)),
        ("2015-06-01T10:20:30.123456789", datetime(2015, 6, 1, 10, 20, 30, 123_000, tzinfo=UTC)),
        ("2015-06-01T10:20:30+02:00", datetime(2015, 6, 1, 8, 20, 30, tzinfo=UTC)),
        ("2015-06-01T10:20:30-0130", datetime(2015, 6, 1, 11, 50, 30, tzinfo=UTC)),
        ("2015-06-01T10:20+05", datetime(2015, 6, 1, 5, 20, tzinfo=UTC)),
    ],
)
def test_iso_8601(text: str, expected: datetime) -> None:
    millis, why = convert([text, "2015-01-01"])
    assert why == [None, None]
    assert millis[0] == (expected - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2015-13-45", "timestamp '2015-13-45' is not a valid ISO-8601 date"),
        ("2015-02-29", "timestamp '2015-02-29' is not a valid ISO-8601 date"),
        ("2015-06-01T24:00", "timestamp '2015-06-01T24:00' has an invalid time of day"),
        ("01/06/2015", "timestamp '01/06/2015' is not a valid ISO-8601 date"),
        ("1969-12-31", "timestamp '1969-12-31' is before 1970 (negative epoch time)"),
        ("1433221969", "timestamp '1433221969' is a number but the rest of the column holds ISO-8601 dates"),
    ],
)
def test_invalid_or_mixed_iso_values_are_rejects(text: str, reason: str) -> None:
    millis, why = convert(["2015-06-01", "2015-06-02", text])
    assert millis[2] is None
    assert why == [None, None, reason]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-5", "timestamp '-5' is negative"),
        ("nan", "timestamp 'nan' is NaN"),
        ("inf", "timestamp 'inf' is not finite"),
        (
            "2015-06-01",
            "timestamp '2015-06-01' is an ISO-8601 date but the rest of the column holds epoch numbers",
        ),
        (
            "1433221969000",
            "timestamp '1433221969000' looks like milliseconds but the column holds seconds (mixed units)",
        ),
        ("soon", "timestamp 'soon' is not a number like the rest"),
    ],
)
def test_bad_numbers_are_rejects(value: str, reason: str) -> None:
    millis, why = convert([str(T0), str(T0 + 1), value])
    assert millis == [T0 * 1000, (T0 + 1) * 1000, None]
    assert why == [None, None, reason]


def test_float_column_nan_and_negative() -> None:
    millis, why = convert([1.5, float("nan"), -2.0, None])
    assert millis == [1500, None, None, None]
    assert why == [None, "timestamp 'NaN' is NaN", "timestamp '-2.0' is negative", None]


def test_missing_values_are_neither_values_nor_rejects() -> None:
    assert convert([str(T0), "", "  ", None]) == ([T0 * 1000, None, None, None], [None] * 4)
    assert convert([None, None]) == ([None, None], [None, None])


def test_explicit_unit_is_trusted_but_bounded() -> None:
    assert convert([5, T0 * 1000], unit=MILLIS) == ([5, T0 * 1000], [None, None])
    millis, why = convert([T0 * 1_000_000], unit=SECONDS)
    assert millis == [None]
    assert why == [f"timestamp '{T0 * 1_000_000}' is out of range for seconds"]


def test_datetime_and_date_columns() -> None:
    aware = pl.Series([datetime(2015, 6, 1, 2, tzinfo=UTC)]).dt.convert_time_zone("Europe/Berlin")
    assert to_millis(aware)[0].to_list() == [1_433_124_000_000]
    naive = pl.Series([datetime(2015, 6, 1, 2), None])
    assert to_millis(naive)[0].to_list() == [1_433_124_000_000, None]
    assert to_millis(pl.Series([date(2015, 6, 1)]))[0].to_list() == [1_433_116_800_000]
    millis, why = to_millis(pl.Series([date(1969, 12, 31), date(1970, 1, 1)]))
    assert millis.to_list() == [None, 0]
    assert why.to_list() == ["timestamp '1969-12-31' is before 1970 (negative epoch time)", None]


def test_a_column_of_non_timestamps_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"column 'ts': holds no timestamps \(e.g. 'yesterday'\)"):
        to_millis(pl.Series("ts", ["yesterday", "today"]))
    with pytest.raises(InputError, match="timestamps must be"):
        to_millis(pl.Series("ts", [[1], [2]]))


def test_reasons_builds_messages_only_where_needed() -> None:
    frame = pl.DataFrame({"x": [1, -1, 5, None]})
    out = reasons(frame, [(pl.col("x") < 0, pl.lit("neg")), (pl.col("x") > 3, pl.lit("big"))])
    assert out.to_list() == [None, "neg", "big", None]


@settings(max_examples=50, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)))
def test_iso_text_matches_python(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    shifted = (moment + timedelta(hours=3)).replace(tzinfo=None).isoformat() + "+03:00"
    millis, why = convert([text, shifted])
    expected = (moment - EPOCH) // timedelta(milliseconds=1)  # exact, unlike float timestamp()
    assert millis == [expected, expected]
    assert why == [None, None]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4_000_000_000), min_size=1, max_size=30))
def test_seconds_round_trip(seconds: list[int]) -> None:
    # Every second count up to 2096 is below 1e11, so any such column is detected as seconds.
    assert convert(seconds) == ([s * 1000 for s in seconds], [None] * len(seconds))
    assert convert([s * 1000 for s in seconds], unit=MILLIS) == (
        [s * 1000 for s in seconds],
        [None] * len(seconds),
    )


@pytest.mark.parametrize(
    ("values", "compacted"),
    [
        ([str(T0), "-5", "0", None, str(T0 * 1000)], True),
        (["+5", str(T0)], False),
        (["007"], False),
        (["-0"], False),
        ([f" {T0}"], False),
        ([""], False),
        (["1.5"], False),
        (["2015-06-01"], False),
        (["9223372036854775808"], False),  # beyond int64
    ],
)
def test_compact_integers_keeps_what_to_millis_sees(values: list, compacted: bool) -> None:
    text = pl.Series("ts", values, dtype=pl.String)
    compact = compact_integers(text)
    assert compact.dtype == (pl.Int64 if compacted else pl.String)
    assert compact.name == "ts"
    assert compact.cast(pl.String).to_list() == values
    expected = (to_millis(text)[0].to_list(), to_millis(text)[1].to_list())
    assert (to_millis(compact)[0].to_list(), to_millis(compact)[1].to_list()) == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-(10**12), 2**63 - 1) | st.none(), min_size=1, max_size=20))
def test_integer_text_and_integers_convert_alike(values: list[int | None]) -> None:
    # Reasons quote the integer as text, exactly as the text column would (mixed units, negatives).
    numbers = pl.Series("ts", values, dtype=pl.Int64)
    text = numbers.cast(pl.String)
    assert compact_integers(text).dtype == pl.Int64
    assert to_millis(numbers)[0].to_list() == to_millis(text)[0].to_list()
    assert to_millis(numbers)[1].to_list() == to_millis(text)[1].to_list()
