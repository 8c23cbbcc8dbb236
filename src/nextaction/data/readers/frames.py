"""JSON Lines, Parquet files and in-memory DataFrames as frames of source columns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from nextaction.data.readers.events import LN, RAW_TEXT, WHY
from nextaction.data.readers.lines import check_file, read_lines
from nextaction.errors import InputError

# -------------------------------------------------------------------------------- JSON lines and frames


def jsonl_frame(path: Path) -> pl.DataFrame:
    """Decode JSON objects, one per line: ``LN``, ``RAW_TEXT``, ``WHY`` plus one column per key."""
    lines = read_lines(path)
    if lines.height == 0:
        raise InputError("is empty", path=path)
    good = lines.filter(pl.col(WHY).is_null())
    try:
        decoded = good[RAW_TEXT].str.json_decode(infer_schema_length=None)
        if not isinstance(decoded.dtype, pl.Struct):
            raise pl.exceptions.ComputeError("not objects")
        frame = pl.concat([good, decoded.struct.unnest()], how="horizontal")
    except pl.exceptions.PolarsError:
        frame = _jsonl_careful(good)
    return pl.concat([lines.filter(pl.col(WHY).is_not_null()), frame], how="diagonal_relaxed").sort(LN)


def _jsonl_careful(lines: pl.DataFrame) -> pl.DataFrame:
    """Line-by-line JSON decoding (values as text), used only when a line is not valid JSON."""
    records: list[dict[str, str | None]] = []
    for line_no, raw in zip(lines[LN].to_list(), lines[RAW_TEXT].to_list(), strict=True):
        record: dict[str, str | None] = {LN: line_no, RAW_TEXT: raw}  # type: ignore[dict-item]
        try:
            value = json.loads(raw)
        except ValueError as err:
            record[WHY] = f"invalid JSON: {err}"
        else:
            if isinstance(value, dict):
                record.update({str(k): scalar_text(v) for k, v in value.items() if k not in record})
            else:
                record[WHY] = "line is not a JSON object"
        records.append(record)
    schema = {LN: pl.Int64, RAW_TEXT: pl.String, WHY: pl.String}
    if not records:
        return pl.DataFrame(schema=schema)
    frame = pl.DataFrame(records, infer_schema_length=None)
    if WHY not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(WHY))
    return frame.with_columns(pl.col(LN).cast(pl.Int64))


def read_parquet_file(path: Path, *, columns: list[str] | None = None) -> pl.DataFrame:
    return parquet_call(path, lambda p: pl.read_parquet(p, columns=columns))


def parquet_call(path: Path, call: Callable[[Path], Any]) -> Any:
    check_file(path)
    try:
        return call(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"is not a readable Parquet file ({first})", path=path) from None


def is_dataframe(source: Any) -> bool:
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        return True
    return type(source).__module__.startswith("pandas") and type(source).__name__ == "DataFrame"


def as_polars(source: Any) -> pl.DataFrame:
    if isinstance(source, pl.LazyFrame):
        return source.collect()
    if isinstance(source, pl.DataFrame):
        return source
    include_index = any(name is not None for name in source.index.names)  # e.g. set_index("user")
    try:
        return pl.from_pandas(source, include_index=include_index)
    except Exception:  # pyarrow refuses object columns that mix types (ids like "a" and 1): use text
        mixed = {
            c: source[c].map(scalar_text, na_action="ignore")
            for c in source.columns
            if source[c].dtype == object
        }
        return pl.from_pandas(source.assign(**mixed), include_index=include_index)


def scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------------------------- small side tables


def side_table(path: str | Path, *, what: str, hint: str, header: bool | None = True) -> pl.DataFrame:
    """A small side table (fold file, trust graph …) as text columns: CSV, or TSV when its first line has a
    tab. ``header`` None: a header unless the first two fields are whole numbers. ``what`` names the setting
    in errors, ``hint`` says what to give."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what}: no such file; {hint}", path=p)
    with open(p, encoding="utf-8", errors="replace") as f:
        head = f.readline()
    sep = "\t" if "\t" in head else ","
    if header is None:
        first = head.strip().split(sep)
        header = not (len(first) >= 2 and all(x.strip().lstrip("-").isdigit() for x in first[:2]))
    try:
        return pl.read_csv(p, separator=sep, has_header=header, infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise InputError(f"{what} is not a readable CSV ({err})", path=p) from None
