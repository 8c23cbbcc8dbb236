"""One reader per format family (:data:`READERS`), from a :class:`Request` to a :class:`ReadResult`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from nextaction.data.readers.columns import ALIASES, CATEGORY_ALIASES, SHORT, find_alias, norm, resolve_column
from nextaction.data.readers.events import LN, RAW_TEXT, WHY, ReadResult, ids, rejects_of, result, to_events
from nextaction.data.readers.frames import jsonl_frame, parquet_call, read_parquet_file, scalar_text
from nextaction.data.readers.items import CATEGORY, read_items
from nextaction.data.readers.lines import FIELDS, SEPARATORS, Table, peek_lines, read_lines, read_table
from nextaction.data.schema import BEHAVIOR, CLOCK_POSITIONS, ITEM_ID, LINE, TIMESTAMP, USER_ID, VALUE
from nextaction.data.timestamps import MILLIS, SECONDS
from nextaction.errors import InputError

DATAFRAME: Final = "dataframe"  # the format reported for in-memory pandas/Polars frames
RATING: Final = "rating"  # the behaviour of MovieLens events
KAGGLE_RETAILROCKET: Final = ("timestamp", "visitorid", "event", "itemid", "transactionid")
_REQUIRED: Final = (USER_ID, ITEM_ID, TIMESTAMP)


@dataclass(frozen=True, kw_only=True)
class Request:
    path: Path
    mapping: dict[str, str | None]
    separator: str | None


# --------------------------------------------------------------------------------------------- formats


def _read_delimited(request: Request, *, default_separator: str | None = None, fmt: str) -> ReadResult:
    table = read_table(request.path, separator=request.separator or default_separator, header=None)
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = to_events(table.slices(colmap.values()), colmap)
    return result(events, [rejects], fmt=fmt, source=request.path)


def _read_csv(request: Request) -> ReadResult:
    return _read_delimited(request, fmt="csv")


def _read_tsv(request: Request) -> ReadResult:
    return _read_delimited(request, default_separator="\t", fmt="tsv")


def _read_parquet(request: Request) -> ReadResult:
    # Match columns on the schema first so that only the used columns are read from disk.
    columns = list(parquet_call(request.path, pl.read_parquet_schema))
    colmap = _match_columns(columns, request.mapping)
    frame = read_parquet_file(request.path, columns=list(dict.fromkeys(colmap.values())))
    return _read_frame(frame, request.mapping, fmt="parquet", source=str(request.path))


def read_dataframe(frame: pl.DataFrame, mapping: dict[str, str | None]) -> ReadResult:
    return _read_frame(frame, mapping, fmt=DATAFRAME, source="<DataFrame>")


def _read_frame(frame: pl.DataFrame, mapping: dict[str, str | None], *, fmt: str, source: str) -> ReadResult:
    """Typed columns (Parquet, DataFrames): LINE is the 1-based row number."""
    if frame.height == 0:
        raise InputError("has no rows", path=source)
    colmap = _match_columns(frame.columns, mapping)
    used = frame.select(list(dict.fromkeys(colmap.values())))
    used = used.with_row_index(LN, offset=1).with_columns(pl.col(LN).cast(pl.Int64))
    events, rejects = to_events([used], colmap)
    return result(events, [rejects], fmt=fmt, source=source)


def _read_jsonl(request: Request) -> ReadResult:
    frame = jsonl_frame(request.path)
    bad = frame.filter(pl.col(WHY).is_not_null())
    good = frame.filter(pl.col(WHY).is_null()).drop(WHY)
    columns = [c for c in good.columns if c not in (LN, RAW_TEXT)]
    colmap = _match_columns(columns, request.mapping)
    events, rejects = to_events([good.select(LN, RAW_TEXT, *dict.fromkeys(colmap.values()))], colmap)
    return result(events, [rejects_of(bad), rejects], fmt="jsonl", source=request.path)


def _read_sequences(request: Request) -> ReadResult:
    """``user item item …`` per line; item ``k`` (1-based position after the user) gets ``k * 1000`` ms."""
    lines = read_lines(request.path)
    if lines.height == 0:
        raise InputError("is empty", path=request.path)
    tokens = pl.col(RAW_TEXT).str.extract_all(r"\S+")
    lines = lines.with_columns(tokens.alias(FIELDS)).with_columns(
        pl.when(pl.col(WHY).is_null() & (pl.col(FIELDS).list.len() < 2))
        .then(pl.lit("line has a user id but no items"))
        .otherwise(pl.col(WHY))
        .alias(WHY)
    )
    good = lines.filter(pl.col(WHY).is_null())
    events = (
        good.select(
            pl.col(LN).alias(LINE),
            pl.col(FIELDS).list.first().alias(USER_ID),
            pl.col(FIELDS).list.slice(1).alias(ITEM_ID),
            pl.int_ranges(1, pl.col(FIELDS).list.len()).alias(TIMESTAMP),
        )
        .explode(ITEM_ID, TIMESTAMP)
        .with_columns(
            pl.col(TIMESTAMP).cast(pl.Int64) * 1000,
            pl.lit(None, dtype=pl.String).alias(BEHAVIOR),
            pl.lit(None, dtype=pl.Float64).alias(VALUE),
        )
    )
    return result(events, [rejects_of(lines)], fmt="sequences", source=request.path, clock=CLOCK_POSITIONS)


def _read_movielens(request: Request) -> ReadResult:
    """ML-100k ``u.data``, ML-1M/10M ``ratings.dat`` or ml-latest ``ratings.csv`` (a folder or the file)."""
    ratings = movielens_ratings(request.path, required=True)
    assert ratings is not None  # required=True raises instead
    name = ratings.name.lower()
    if name == "u.data" or (name != "ratings.dat" and "\t" in "".join(peek_lines(ratings)[:1])):
        table = read_table(ratings, separator="\t", header=False, names=[USER_ID, ITEM_ID, VALUE, TIMESTAMP])
        items_file = ratings.parent / "u.item"
    elif name == "ratings.dat" or "::" in "".join(peek_lines(ratings)[:1]):
        names = [USER_ID, ITEM_ID, VALUE, TIMESTAMP]
        table = read_table(ratings, separator="::", header=False, names=names, quoting=False)
        items_file = ratings.parent / "movies.dat"
    else:
        table = read_table(ratings, separator=",", header=True)
        items_file = ratings.parent / "movies.csv"
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = to_events(table.slices(colmap.values()), colmap, unit=SECONDS, behavior=RATING)
    items = read_items(items_file) if items_file.is_file() else None
    return result(events, [rejects], fmt="movielens", source=ratings, items=items)


def movielens_ratings(path: Path, *, required: bool) -> Path | None:
    if not path.is_dir():
        return path
    for name in ("u.data", "ratings.dat", "ratings.csv"):
        if (path / name).is_file():
            return path / name
    if required:
        raise InputError("has no MovieLens ratings file (u.data, ratings.dat or ratings.csv)", path=path)
    return None


def _read_retailrocket(request: Request) -> ReadResult:
    """Kaggle ``events.csv`` (ms timestamps); any other layout (e.g. the preprocessed one) reads as csv."""
    head = peek_lines(request.path)
    if not head or tuple(norm(f) for f in head[0].split(",")) != KAGGLE_RETAILROCKET:
        return _read_delimited(request, fmt="retailrocket")
    table = read_table(request.path, separator=request.separator or ",", header=True)
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = to_events(table.slices(colmap.values()), colmap, unit=MILLIS)
    return result(events, [rejects], fmt="retailrocket", source=request.path)


def _read_taobao(request: Request) -> ReadResult:
    """``UserBehavior.csv``: ``user,item,category,behavior,timestamp`` (seconds), with or without a header."""
    names = [USER_ID, ITEM_ID, CATEGORY, BEHAVIOR, TIMESTAMP]
    table = read_table(request.path, separator=request.separator or ",", header=None, names=names)
    colmap = _match_columns(table.names, request.mapping, table=table)
    category = find_alias(table.names, CATEGORY_ALIASES, exclude=colmap.values())
    if category is None:
        events, rejects = to_events(table.slices(colmap.values()), colmap, unit=SECONDS)
        return result(events, [rejects], fmt="taobao", source=request.path)
    parts: list[pl.DataFrame] = []

    def with_items(frames: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        # The item table comes from the same slices (every line with the right fields, whatever its
        # timestamp), so that the file is split only once.
        for frame in frames:
            good = frame.select(colmap[ITEM_ID], category, WHY).filter(pl.col(WHY).is_null())
            items = pl.DataFrame(
                [ids(good[colmap[ITEM_ID]]).alias(ITEM_ID), ids(good[category]).alias(CATEGORY)]
            )
            parts.append(items.drop_nulls(ITEM_ID).unique(ITEM_ID, keep="first", maintain_order=True))
            yield frame

    events, rejects = to_events(with_items(table.slices([*colmap.values(), category])), colmap, unit=SECONDS)
    items = pl.concat(parts).unique(ITEM_ID, keep="first", maintain_order=True)
    return result(events, [rejects], fmt="taobao", source=request.path, items=items)


_OTTO_DTYPE: Final = pl.Struct(
    {
        "session": pl.Int64,
        "events": pl.List(pl.Struct({"aid": pl.Int64, "ts": pl.Int64, "type": pl.String})),
    }
)


def _read_otto(request: Request) -> ReadResult:
    """OTTO JSON Lines: one session per line; every event of a session gets the session's line number."""
    lines = read_lines(request.path)
    if lines.height == 0:
        raise InputError("is empty", path=request.path)
    good = lines.filter(pl.col(WHY).is_null())
    try:
        sessions = good.with_columns(pl.col(RAW_TEXT).str.json_decode(_OTTO_DTYPE).alias(FIELDS))
        sessions = sessions.with_columns(
            pl.when(pl.col(FIELDS).struct.field("events").is_null())
            .then(pl.lit("line has no 'events' list"))
            .when(pl.col(FIELDS).struct.field("events").list.len() == 0)
            .then(pl.lit("session has no events"))
            .alias(WHY)
        )
        line_rejects = sessions.filter(pl.col(WHY).is_not_null())
        events = (
            sessions.filter(pl.col(WHY).is_null())
            .select(
                LN,
                pl.col(FIELDS).struct.field("session").alias("session"),
                pl.col(FIELDS).struct.field("events").alias("event"),
            )
            .explode("event")
            .with_columns(pl.col("event").struct.json_encode().alias(RAW_TEXT))
            .unnest("event")
        )
    except pl.exceptions.PolarsError:
        events, line_rejects = _otto_careful(good)
    colmap = {USER_ID: "session", ITEM_ID: "aid", TIMESTAMP: "ts", BEHAVIOR: "type"}
    _require_columns(colmap, events.columns)
    events, rejects = to_events([events], colmap, unit=MILLIS)
    bad = [rejects_of(lines), rejects_of(line_rejects)]
    return result(events, [*bad, rejects], fmt="otto", source=request.path)


def _require_columns(colmap: Mapping[str, str], columns: list[str]) -> None:
    missing = [c for c in colmap.values() if c not in columns]
    if missing:
        raise InputError(f"no {', '.join(missing)} field in any line; is this an OTTO sessions file?")


def _otto_careful(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Line-by-line OTTO parsing, used only when the vectorised decoder reports a malformed line."""
    rows: list[tuple[int, str | None, str | None, str | None, str | None, str]] = []
    bad: list[tuple[int, str, str]] = []
    for line_no, raw in zip(lines[LN].to_list(), lines[RAW_TEXT].to_list(), strict=True):
        try:
            record = json.loads(raw)
        except ValueError as err:
            bad.append((line_no, f"invalid JSON: {err}", raw))
            continue
        events = record.get("events") if isinstance(record, dict) else None
        if not isinstance(events, list):
            bad.append((line_no, "line has no 'events' list", raw))
            continue
        if not events:
            bad.append((line_no, "session has no events", raw))
            continue
        session = scalar_text(record.get("session"))
        for event in events:
            if not isinstance(event, dict):
                bad.append((line_no, "event is not a JSON object", json.dumps(event)))
                continue
            aid, ts, kind = (scalar_text(event.get(k)) for k in ("aid", "ts", "type"))
            rows.append((line_no, session, aid, ts, kind, json.dumps(event)))
    schema = {LN: pl.Int64, "session": pl.String, "aid": pl.String, "ts": pl.String, "type": pl.String}
    events = pl.DataFrame(rows, schema={**schema, RAW_TEXT: pl.String}, orient="row")
    rejects = pl.DataFrame(bad, schema={LN: pl.Int64, WHY: pl.String, RAW_TEXT: pl.String}, orient="row")
    return events, rejects


READERS: Final[dict[str, Callable[[Request], ReadResult]]] = {
    "csv": _read_csv,
    "tsv": _read_tsv,
    "parquet": _read_parquet,
    "jsonl": _read_jsonl,
    "sequences": _read_sequences,
    "movielens": _read_movielens,
    "retailrocket": _read_retailrocket,
    "taobao": _read_taobao,
    "otto": _read_otto,
}


# ---------------------------------------------------------------------------------- column matching


def _match_columns(
    columns: list[str], mapping: dict[str, str | None], *, table: Table | None = None
) -> dict[str, str]:
    """Canonical column → source column: the explicit mapping first, then aliases; required ones must exist."""
    colmap: dict[str, str] = {}
    for canonical, wanted in mapping.items():
        if wanted is not None:
            colmap[canonical] = resolve_column(wanted, columns, key=SHORT[canonical])
    for canonical, aliases in ALIASES.items():
        if canonical not in colmap and canonical not in mapping:
            found = find_alias(columns, aliases, exclude=colmap.values())
            if found is not None:
                colmap[canonical] = found
    missing = [c for c in _REQUIRED if c not in colmap]
    if missing:
        if table is not None and len(columns) == 1:
            raise _wrong_separator(table)
        wanted = ",".join(f"{SHORT[c]}=…" for c in _REQUIRED)
        raise InputError(
            f"no column for {', '.join(SHORT[c] for c in missing)}; columns found: {', '.join(columns)};"
            f" name them with --map {wanted}"
        )
    return colmap


def _wrong_separator(table: Table) -> InputError:
    sample = table.header or _first_good_line(table)
    others = [s for s in (*SEPARATORS, " ") if s != table.separator and s in sample]
    shown = sample if len(sample) <= 60 else sample[:57] + "..."
    advice = (
        f"the file seems to use {others[0]!r}: pass --sep {others[0]!r}" if others else "pass the right --sep"
    )
    return InputError(
        f"every line is a single column when split on {table.separator!r} (first line {shown!r}); {advice}"
    )


def _first_good_line(table: Table) -> str:
    for frame in table.slices([]):  # almost always found in the first slice
        good = frame.filter(pl.col(WHY).is_null())
        if good.height:
            return good[RAW_TEXT][0]
    return ""
