"""Read event logs in common shapes into the canonical event frame (see docs/ARCHITECTURE.md, stage 1).

Every reader ends in the same place: :class:`ReadResult` with ``events`` (``LINE``, ``USER_ID``, ``ITEM_ID``,
``TIMESTAMP`` in ms, ``BEHAVIOR``, ``VALUE``) and ``rejects`` (``LINE``, ``REASON``, ``RAW``).

Text files are read in two steps, both vectorised in Polars:

1. **lines**: the file is read as one text column (one row per physical line, so line numbers are exact).
   Lines with invalid UTF-8 or longer than :data:`MAX_LINE_BYTES` are marked as rejects. Blank lines are
   not rows and are skipped. If Polars cannot read the file this way (a NUL byte, or genuine U+FFFD
   characters mixed with invalid bytes) a careful line-by-line Python path produces the same frame.
2. **fields**: lines are split on the separator (``str.split``; lines containing a double quote go through
   a CSV-quoting regex). A line with the wrong number of fields becomes a reject with its line number.
   Lines are split and converted to typed events :data:`SLICE_ROWS` at a time, so that the split fields
   of a big file are never all held at once; timestamps are converted once for the whole column, since
   their shape and unit are decided from all of its values (:func:`~nextaction.data.timestamps.to_millis`).

A row is one physical line: quoted fields may contain the separator but not a line break.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from nextaction.data.schema import (
    BEHAVIOR,
    EVENT_COLUMNS,
    ITEM_ID,
    LINE,
    RAW,
    REASON,
    TIMESTAMP,
    USER_ID,
    VALUE,
)
from nextaction.data.timestamps import MILLIS, SECONDS, compact_integers, reasons, to_millis
from nextaction.errors import InputError

FORMATS: Final = (
    "csv",
    "tsv",
    "parquet",
    "jsonl",
    "sequences",
    "movielens",
    "retailrocket",
    "taobao",
    "otto",
)
DATAFRAME: Final = "dataframe"  # the format reported for in-memory pandas/Polars frames
MAX_LINE_BYTES: Final = 1 << 20  # no event row is this long; such a line is a broken file, so a reject
# Lines split into fields at a time. Split fields take several times the bytes of their line (a list per
# line, then a copy per column): all lines of a 10M-row, 354 MB file at once peaked at 3.3 GB.
SLICE_ROWS: Final = 1 << 20
RATING: Final = "rating"  # the behaviour of MovieLens events
# Item-table columns of the formats that bring one (MovieLens, Taobao).
TITLE: Final = "title"
GENRES: Final = "genres"  # genre names joined by "|"
RELEASE_DATE: Final = "release_date"
CATEGORY: Final = "category"  # Taobao's item category
IMDB_URL: Final = "imdb_url"

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
_LN: Final = "__nextaction_line__"
_RAW: Final = "__nextaction_raw__"
_WHY: Final = "__nextaction_reason__"
_FIELDS: Final = "__nextaction_fields__"
_VALUE_WHY: Final = "__nextaction_value_reason__"

_RAW_SHOWN: Final = 200  # characters of an over-long line kept in RAW
_PEEK_BYTES: Final = 1 << 16
_SNIFF_LINES: Final = 50
_SEPARATORS: Final = (",", "\t", ";", "|", "::")
_SEPARATOR_NAMES: Final = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
}
_NUMBER_RE: Final = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_TAOBAO_ROW_RE: Final = re.compile(r"^\d+,\d+,\d+,(?:pv|buy|cart|fav),\d+$")
_KAGGLE_RETAILROCKET: Final = ("timestamp", "visitorid", "event", "itemid", "transactionid")
_PARQUET_MAGIC: Final = b"PAR1"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ARCHIVES: Final = {
    b"PK\x03\x04": "a zip archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"BZh": "bzip2-compressed",
}

# Column-name aliases, compared after _norm() (lower case, letters and digits only). Earlier aliases win
# when several columns match, e.g. "timestamp" over "date".
_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    USER_ID: (
        "userid", "user", "visitorid", "visitor", "sessionid", "session", "customerid", "customer",
        "clientid", "uid", "reviewerid",
    ),
    ITEM_ID: (
        "itemid", "item", "aid", "movieid", "movie", "productid", "product", "articleid", "asin", "sku",
        "iid", "contentid",
    ),
    TIMESTAMP: (
        "timestamp", "time", "ts", "datetime", "eventtime", "createdat", "unixtime", "unixreviewtime",
        "date",
    ),
    BEHAVIOR: (
        "behavior", "behaviour", "behaviortype", "behaviourtype", "eventtype", "event", "type", "action",
        "interaction",
    ),
    VALUE: ("value", "rating", "price", "score", "amount", "weight", "quantity"),
}  # fmt: skip
_CATEGORY_ALIASES: Final = ("category", "categoryid", "cat", "catid")
_REQUIRED: Final = (USER_ID, ITEM_ID, TIMESTAMP)
# The names --map uses for the canonical columns.
_SHORT: Final = {USER_ID: "user", ITEM_ID: "item", TIMESTAMP: "time", BEHAVIOR: "behavior", VALUE: "value"}
# Keys accepted in ``mapping``: the short names, the canonical column names, and the British spelling.
MAPPING_KEYS: Final = {
    **{short: canonical for canonical, short in _SHORT.items()},
    **{canonical: canonical for canonical in EVENT_COLUMNS},
    "behaviour": BEHAVIOR,
}

# ML-100k's u.item genre flags, in file order (used when u.genre is not next to it).
_ML100K_GENRES: Final = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ReadResult:
    """What a reader produced: usable events, rejected rows, and the item table when the format has one."""

    events: pl.DataFrame  # EVENTS_SCHEMA, in source order
    rejects: pl.DataFrame  # REJECTS_SCHEMA, by line
    rows_read: int  # events.height + rejects.height
    format: str
    source: str
    items: pl.DataFrame | None = None  # ITEM_ID + feature columns


@dataclass(frozen=True, kw_only=True)
class _Request:
    path: Path
    mapping: dict[str, str | None]
    separator: str | None


def read_events(
    source: str | os.PathLike[str] | Any,
    *,
    format: str | None = None,
    mapping: Mapping[str, str | None] | None = None,
    separator: str | None = None,
) -> ReadResult:
    """Read an event log from a file, a folder (MovieLens) or an in-memory pandas/Polars DataFrame.

    ``format`` is one of :data:`FORMATS` or None to detect it (:func:`detect_format`). ``mapping`` names
    source columns, e.g. ``{"user": "visitorid", "time": "ts"}`` (keys: :data:`MAPPING_KEYS`; a None or
    empty value means "no such column"); unmapped columns are matched by common aliases. ``separator``
    overrides delimiter sniffing for delimited text (``"\\t"``/``"tab"`` work; several characters like
    ``"::"`` too).
    """
    user_mapping = _check_mapping(mapping)
    if format is not None and format not in FORMATS and format != DATAFRAME:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)} (or leave it out)")
    sep = _parse_separator(separator)
    if _is_dataframe(source):
        if format not in (None, DATAFRAME):
            raise InputError(f"format {format!r} is for files; in-memory DataFrames need no format")
        if sep is not None:
            raise InputError("--sep applies to delimited text files, not to a DataFrame")
        return _read_dataframe(_as_polars(source), user_mapping)
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise InputError("no such file or directory; check the path", path=path)
    fmt = format or detect_format(path)
    if fmt == DATAFRAME:
        raise InputError("format 'dataframe' is for in-memory DataFrames; pass --format csv, parquet, …")
    if path.is_dir() and fmt != "movielens":
        raise InputError(
            "is a directory; pass the events file (only --format movielens takes a folder)", path=path
        )
    if sep is not None and fmt not in ("csv", "tsv", "retailrocket", "taobao"):
        raise InputError(f"--sep applies to delimited text (csv, tsv, …), not to format {fmt!r}", path=path)
    if user_mapping and fmt in ("sequences", "otto"):
        raise InputError(f"--map does not apply to format {fmt!r}: its layout is fixed", path=path)
    request = _Request(path=path, mapping=user_mapping, separator=sep)
    try:
        return _READERS[fmt](request)
    except InputError as err:
        if err.path is not None:
            raise
        raise InputError(err.message, path=path, line=err.line, column=err.column) from None


def read_items(
    source: str | os.PathLike[str] | Any, *, mapping: Mapping[str, str | None] | None = None
) -> pl.DataFrame:
    """Read an item table: ``ITEM_ID`` (Utf8) plus the other columns (numbers where a column is numeric).

    Understands MovieLens item files by name (``u.item``, ``movies.dat``, ``movies.csv``) and otherwise
    csv/tsv/parquet/jsonl files or DataFrames with an item id column (alias or ``mapping={"item": …}``).
    """
    user_mapping = _check_mapping(mapping)
    if _is_dataframe(source):
        return _item_table(_as_polars(source), user_mapping, path=None)
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise InputError("no such file or directory; check the path", path=path)
    if path.is_dir():
        raise InputError("is a directory; pass the item file", path=path)
    try:
        name = path.name.lower()
        if name == "u.item":
            return _ml100k_items(path)
        if name == "movies.dat":
            return _ml_dat_items(path)
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = _read_parquet_file(path)
        elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            frame = _jsonl_frame(path).drop(_LN, _RAW)
        else:
            table = _read_table(path, separator=None, header=True)
            frame = table.strict_frame(table.names, path)
            return _item_table(frame, user_mapping, path=path, text=True)
        return _item_table(frame, user_mapping, path=path)
    except InputError as err:
        if err.path is not None:
            raise
        raise InputError(err.message, path=path, line=err.line, column=err.column) from None


def parse_mapping(text: str | None) -> dict[str, str | None]:
    """Parse the CLI's ``--map user=visitorid,item=itemid,time=ts`` into a ``mapping`` for read_events.

    An empty column name (``behavior=``) means "the file has no such column".
    """
    mapping: dict[str, str | None] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, eq, column = part.partition("=")
        if not eq or not key.strip():
            raise InputError(
                f"--map expects key=column pairs like user=visitorid,time=ts; got {part.strip()!r}"
            )
        mapping[key.strip()] = column.strip() or None
    _check_mapping(mapping)
    return mapping


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess a file's format from its name and first lines (see the module docstring of each reader)."""
    path = Path(path)
    if path.is_dir():
        if _movielens_ratings(path, required=False) is not None:
            return "movielens"
        raise InputError(
            "is a directory without MovieLens ratings (u.data, ratings.dat, ratings.csv); pass the events file",
            path=path,
        )
    name = path.name.lower().removesuffix(".gz")  # Polars reads gzip-compressed text transparently
    suffix = Path(name).suffix
    if _magic(path) == _PARQUET_MAGIC:
        return "parquet"
    if name in ("u.data", "ratings.dat") or (name == "ratings.csv" and (path.parent / "movies.csv").exists()):
        return "movielens"
    if name.startswith("userbehavior"):
        return "taobao"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    head = _peek_lines(path)
    if not head:
        return "tsv" if suffix in (".tsv", ".tab") else "csv"  # empty: the reader says so
    if head[0].lstrip().startswith("{"):
        first = head[0]
        return "otto" if '"session"' in first and '"events"' in first else "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if tuple(_norm(f) for f in head[0].split(",")) == _KAGGLE_RETAILROCKET:
        return "retailrocket"
    if any(_TAOBAO_ROW_RE.match(line.strip()) for line in head[:2]):
        return "taobao"
    if suffix != ".csv" and not any(s in head[0] for s in _SEPARATORS) and _looks_like_sequences(head):
        return "sequences"
    return "csv"


# --------------------------------------------------------------------------------------------- formats


def _read_delimited(request: _Request, *, default_separator: str | None = None, fmt: str) -> ReadResult:
    table = _read_table(request.path, separator=request.separator or default_separator, header=None)
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = _to_events(table.slices(colmap.values()), colmap)
    return _result(events, [rejects], fmt=fmt, source=request.path)


def _read_csv(request: _Request) -> ReadResult:
    return _read_delimited(request, fmt="csv")


def _read_tsv(request: _Request) -> ReadResult:
    return _read_delimited(request, default_separator="\t", fmt="tsv")


def _read_parquet(request: _Request) -> ReadResult:
    # Match columns on the schema first so that only the used columns are read from disk.
    columns = list(_parquet_call(request.path, pl.read_parquet_schema))
    colmap = _match_columns(columns, request.mapping)
    frame = _read_parquet_file(request.path, columns=list(dict.fromkeys(colmap.values())))
    return _read_frame(frame, request.mapping, fmt="parquet", source=str(request.path))


def _read_dataframe(frame: pl.DataFrame, mapping: dict[str, str | None]) -> ReadResult:
    return _read_frame(frame, mapping, fmt=DATAFRAME, source="<DataFrame>")


def _read_frame(frame: pl.DataFrame, mapping: dict[str, str | None], *, fmt: str, source: str) -> ReadResult:
    """Typed columns (Parquet, DataFrames): LINE is the 1-based row number."""
    if frame.height == 0:
        raise InputError("has no rows", path=source)
    colmap = _match_columns(frame.columns, mapping)
    used = frame.select(list(dict.fromkeys(colmap.values())))
    used = used.with_row_index(_LN, offset=1).with_columns(pl.col(_LN).cast(pl.Int64))
    events, rejects = _to_events([used], colmap)
    return _result(events, [rejects], fmt=fmt, source=source)


def _read_jsonl(request: _Request) -> ReadResult:
    frame = _jsonl_frame(request.path)
    bad = frame.filter(pl.col(_WHY).is_not_null())
    good = frame.filter(pl.col(_WHY).is_null()).drop(_WHY)
    columns = [c for c in good.columns if c not in (_LN, _RAW)]
    colmap = _match_columns(columns, request.mapping)
    events, rejects = _to_events([good.select(_LN, _RAW, *dict.fromkeys(colmap.values()))], colmap)
    return _result(events, [_rejects_of(bad), rejects], fmt="jsonl", source=request.path)


def _read_sequences(request: _Request) -> ReadResult:
    """``user item item …`` per line; item ``k`` (1-based position after the user) gets ``k * 1000`` ms."""
    lines = _read_lines(request.path)
    if lines.height == 0:
        raise InputError("is empty", path=request.path)
    tokens = pl.col(_RAW).str.extract_all(r"\S+")
    lines = lines.with_columns(tokens.alias(_FIELDS)).with_columns(
        pl.when(pl.col(_WHY).is_null() & (pl.col(_FIELDS).list.len() < 2))
        .then(pl.lit("line has a user id but no items"))
        .otherwise(pl.col(_WHY))
        .alias(_WHY)
    )
    good = lines.filter(pl.col(_WHY).is_null())
    events = (
        good.select(
            pl.col(_LN).alias(LINE),
            pl.col(_FIELDS).list.first().alias(USER_ID),
            pl.col(_FIELDS).list.slice(1).alias(ITEM_ID),
            pl.int_ranges(1, pl.col(_FIELDS).list.len()).alias(TIMESTAMP),
        )
        .explode(ITEM_ID, TIMESTAMP)
        .with_columns(
            pl.col(TIMESTAMP).cast(pl.Int64) * 1000,
            pl.lit(None, dtype=pl.String).alias(BEHAVIOR),
            pl.lit(None, dtype=pl.Float64).alias(VALUE),
        )
    )
    return _result(events, [_rejects_of(lines)], fmt="sequences", source=request.path)


def _read_movielens(request: _Request) -> ReadResult:
    """ML-100k ``u.data``, ML-1M/10M ``ratings.dat`` or ml-latest ``ratings.csv`` (a folder or the file)."""
    ratings = _movielens_ratings(request.path, required=True)
    assert ratings is not None  # required=True raises instead
    name = ratings.name.lower()
    if name == "u.data" or (name != "ratings.dat" and "\t" in "".join(_peek_lines(ratings)[:1])):
        table = _read_table(ratings, separator="\t", header=False, names=[USER_ID, ITEM_ID, VALUE, TIMESTAMP])
        items_file = ratings.parent / "u.item"
    elif name == "ratings.dat" or "::" in "".join(_peek_lines(ratings)[:1]):
        names = [USER_ID, ITEM_ID, VALUE, TIMESTAMP]
        table = _read_table(ratings, separator="::", header=False, names=names, quoting=False)
        items_file = ratings.parent / "movies.dat"
    else:
        table = _read_table(ratings, separator=",", header=True)
        items_file = ratings.parent / "movies.csv"
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = _to_events(table.slices(colmap.values()), colmap, unit=SECONDS, behavior=RATING)
    items = read_items(items_file) if items_file.is_file() else None
    return _result(events, [rejects], fmt="movielens", source=ratings, items=items)


def _movielens_ratings(path: Path, *, required: bool) -> Path | None:
    if not path.is_dir():
        return path
    for name in ("u.data", "ratings.dat", "ratings.csv"):
        if (path / name).is_file():
            return path / name
    if required:
        raise InputError("has no MovieLens ratings file (u.data, ratings.dat or ratings.csv)", path=path)
    return None


def _read_retailrocket(request: _Request) -> ReadResult:
    """Kaggle ``events.csv`` (ms timestamps); any other layout (e.g. the preprocessed one) reads as csv."""
    head = _peek_lines(request.path)
    if not head or tuple(_norm(f) for f in head[0].split(",")) != _KAGGLE_RETAILROCKET:
        return _read_delimited(request, fmt="retailrocket")
    table = _read_table(request.path, separator=request.separator or ",", header=True)
    colmap = _match_columns(table.names, request.mapping, table=table)
    events, rejects = _to_events(table.slices(colmap.values()), colmap, unit=MILLIS)
    return _result(events, [rejects], fmt="retailrocket", source=request.path)


def _read_taobao(request: _Request) -> ReadResult:
    """``UserBehavior.csv``: ``user,item,category,behavior,timestamp`` (seconds), with or without a header."""
    names = [USER_ID, ITEM_ID, CATEGORY, BEHAVIOR, TIMESTAMP]
    table = _read_table(request.path, separator=request.separator or ",", header=None, names=names)
    colmap = _match_columns(table.names, request.mapping, table=table)
    category = _find_alias(table.names, _CATEGORY_ALIASES, exclude=colmap.values())
    if category is None:
        events, rejects = _to_events(table.slices(colmap.values()), colmap, unit=SECONDS)
        return _result(events, [rejects], fmt="taobao", source=request.path)
    parts: list[pl.DataFrame] = []

    def with_items(frames: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        # The item table comes from the same slices (every line with the right fields, whatever its
        # timestamp), so that the file is split only once.
        for frame in frames:
            good = frame.select(colmap[ITEM_ID], category, _WHY).filter(pl.col(_WHY).is_null())
            items = pl.DataFrame(
                [_ids(good[colmap[ITEM_ID]]).alias(ITEM_ID), _ids(good[category]).alias(CATEGORY)]
            )
            parts.append(items.drop_nulls(ITEM_ID).unique(ITEM_ID, keep="first", maintain_order=True))
            yield frame

    events, rejects = _to_events(with_items(table.slices([*colmap.values(), category])), colmap, unit=SECONDS)
    items = pl.concat(parts).unique(ITEM_ID, keep="first", maintain_order=True)
    return _result(events, [rejects], fmt="taobao", source=request.path, items=items)


_OTTO_DTYPE: Final = pl.Struct(
    {
        "session": pl.Int64,
        "events": pl.List(pl.Struct({"aid": pl.Int64, "ts": pl.Int64, "type": pl.String})),
    }
)


def _read_otto(request: _Request) -> ReadResult:
    """OTTO JSON Lines: one session per line; every event of a session gets the session's line number."""
    lines = _read_lines(request.path)
    if lines.height == 0:
        raise InputError("is empty", path=request.path)
    good = lines.filter(pl.col(_WHY).is_null())
    try:
        sessions = good.with_columns(pl.col(_RAW).str.json_decode(_OTTO_DTYPE).alias(_FIELDS))
        sessions = sessions.with_columns(
            pl.when(pl.col(_FIELDS).struct.field("events").is_null())
            .then(pl.lit("line has no 'events' list"))
            .when(pl.col(_FIELDS).struct.field("events").list.len() == 0)
            .then(pl.lit("session has no events"))
            .alias(_WHY)
        )
        line_rejects = sessions.filter(pl.col(_WHY).is_not_null())
        events = (
            sessions.filter(pl.col(_WHY).is_null())
            .select(
                _LN,
                pl.col(_FIELDS).struct.field("session").alias("session"),
                pl.col(_FIELDS).struct.field("events").alias("event"),
            )
            .explode("event")
            .with_columns(pl.col("event").struct.json_encode().alias(_RAW))
            .unnest("event")
        )
    except pl.exceptions.PolarsError:
        events, line_rejects = _otto_careful(good)
    colmap = {USER_ID: "session", ITEM_ID: "aid", TIMESTAMP: "ts", BEHAVIOR: "type"}
    _require_columns(colmap, events.columns)
    events, rejects = _to_events([events], colmap, unit=MILLIS)
    bad = [_rejects_of(lines), _rejects_of(line_rejects)]
    return _result(events, [*bad, rejects], fmt="otto", source=request.path)


def _require_columns(colmap: Mapping[str, str], columns: list[str]) -> None:
    missing = [c for c in colmap.values() if c not in columns]
    if missing:
        raise InputError(f"no {', '.join(missing)} field in any line; is this an OTTO sessions file?")


def _otto_careful(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Line-by-line OTTO parsing, used only when the vectorised decoder reports a malformed line."""
    rows: list[tuple[int, str | None, str | None, str | None, str | None, str]] = []
    bad: list[tuple[int, str, str]] = []
    for line_no, raw in zip(lines[_LN].to_list(), lines[_RAW].to_list(), strict=True):
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
        session = _scalar_text(record.get("session"))
        for event in events:
            if not isinstance(event, dict):
                bad.append((line_no, "event is not a JSON object", json.dumps(event)))
                continue
            aid, ts, kind = (_scalar_text(event.get(k)) for k in ("aid", "ts", "type"))
            rows.append((line_no, session, aid, ts, kind, json.dumps(event)))
    schema = {_LN: pl.Int64, "session": pl.String, "aid": pl.String, "ts": pl.String, "type": pl.String}
    events = pl.DataFrame(rows, schema={**schema, _RAW: pl.String}, orient="row")
    rejects = pl.DataFrame(bad, schema={_LN: pl.Int64, _WHY: pl.String, _RAW: pl.String}, orient="row")
    return events, rejects


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


_READERS: Final[dict[str, Callable[[_Request], ReadResult]]] = {
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


# ---------------------------------------------------------------------------------------- item tables


def _item_table(
    frame: pl.DataFrame, mapping: dict[str, str | None], *, path: Path | None, text: bool = False
) -> pl.DataFrame:
    """``ITEM_ID`` first, then the other columns; ``text`` columns (from CSV) become numbers where they are.

    The id column itself stays text: "007" is not item 7.
    """
    if frame.height == 0:
        raise InputError("has no item rows", path=path)
    source = mapping.get(ITEM_ID) if ITEM_ID in mapping else None
    if source is None:
        source = _find_alias(frame.columns, _ALIASES[ITEM_ID])
    elif source not in frame.columns:
        source = _resolve_column(source, frame.columns, key="item")
    if source is None:
        raise InputError(
            f"no item id column; columns found: {', '.join(frame.columns)}; name it with --map item=…",
            path=path,
        )
    if ITEM_ID in frame.columns and source != ITEM_ID:
        raise InputError(f"has both '{ITEM_ID}' and '{source}'; choose one with --map item=…", path=path)
    ids = _ids(frame[source]).alias(ITEM_ID)
    rest = _numeric_columns(frame.drop(source)) if text else frame.drop(source)
    table = pl.DataFrame([ids, *rest.get_columns()])
    nulls = table[ITEM_ID].is_null()
    if nulls.any():
        row = int(nulls.arg_true()[0]) + 1
        raise InputError(f"item row {row} has no item id; every item needs one", path=path, column=source)
    dup = table[ITEM_ID].is_duplicated()
    if dup.any():
        rows = (dup.arg_true()[:2] + 1).to_list()
        raise InputError(
            f"item id {table[ITEM_ID][rows[0] - 1]!r} appears more than once (rows {rows[0]} and {rows[1]});"
            " an item table needs one row per item",
            path=path,
            column=source,
        )
    return table


def _ml100k_items(path: Path) -> pl.DataFrame:
    """``u.item``: ``id|title|release date|video release date|IMDb URL|19 genre flags`` in Latin-1."""
    genres = list(_ML100K_GENRES)
    genre_file = path.parent / "u.genre"
    if genre_file.is_file():
        pairs = [line.split("|") for line in genre_file.read_text(encoding="latin-1").splitlines()]
        numbered = sorted((int(p[1]), p[0]) for p in pairs if len(p) == 2 and p[1].strip().isdigit())
        if len(numbered) == len(genres):  # otherwise u.genre is not the list u.item uses: keep ours
            genres = [name for _, name in numbered]
    flags = [f"genre_{i}" for i in range(len(genres))]
    names = [ITEM_ID, TITLE, RELEASE_DATE, "video_release_date", IMDB_URL, *flags]
    table = _read_table(path, separator="|", header=False, names=names, quoting=False, encoding="latin-1")
    frame = table.strict_frame(names, path)
    genre_list = pl.concat_list(
        [pl.when(pl.col(flag) == "1").then(pl.lit(name)) for flag, name in zip(flags, genres, strict=True)]
    )
    return frame.select(
        _ids(frame[ITEM_ID]).alias(ITEM_ID),
        pl.col(TITLE),
        genre_list.list.drop_nulls().list.join("|").alias(GENRES),
        pl.col(RELEASE_DATE).str.to_date("%d-%b-%Y", strict=False),
        pl.col(IMDB_URL),
    )


def _ml_dat_items(path: Path) -> pl.DataFrame:
    """ML-1M/10M ``movies.dat``: ``id::title::genres`` (ML-1M is Latin-1, ML-10M UTF-8)."""
    encoding = _guess_encoding(path)
    names = [ITEM_ID, TITLE, GENRES]
    table = _read_table(path, separator="::", header=False, names=names, quoting=False, encoding=encoding)
    frame = table.strict_frame(names, path)
    return frame.with_columns(_ids(frame[ITEM_ID]).alias(ITEM_ID))


def _guess_encoding(path: Path) -> str:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _numeric_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Empty text becomes null; text columns whose every value is a number become Int64/Float64."""
    columns = []
    for name in frame.columns:
        column = _missing_if_empty(frame[name]) if frame[name].dtype == pl.String else frame[name]
        if column.dtype == pl.String and column.null_count() < len(column):
            for dtype in (pl.Int64, pl.Float64):
                cast = column.cast(dtype, strict=False)
                if cast.null_count() == column.null_count():
                    column = cast
                    break
        columns.append(column)
    return pl.DataFrame(columns)


def _raise_first_reject(rejects: pl.DataFrame, path: Path) -> None:
    if rejects.height:
        first = rejects.row(0, named=True)
        raise InputError(
            f"{first[REASON]}; fix the item file (item tables are read strictly)", path=path, line=first[LINE]
        )


# ----------------------------------------------------------------------------------- lines and fields


def _read_lines(path: Path, *, encoding: str = "utf-8") -> pl.DataFrame:
    """One row per non-blank line: ``_LN`` (1-based), ``_RAW`` (text), ``_WHY`` (reject reason or null)."""
    _check_file(path)
    frame = _lines_fast(path) if encoding == "utf-8" else None
    if frame is None:
        frame = _lines_careful(path, encoding)
    length = pl.col(_RAW).str.len_bytes()
    if frame.select((length > MAX_LINE_BYTES).any()).item():
        why = pl.format(f"line is longer than {MAX_LINE_BYTES} bytes ({{}} bytes)", length)
        frame = frame.with_columns(
            pl.coalesce(_WHY, reasons(frame, [(length > MAX_LINE_BYTES, why)])).alias(_WHY),
            pl.when(length > MAX_LINE_BYTES)
            .then(pl.col(_RAW).str.slice(0, _RAW_SHOWN) + pl.lit("…"))
            .otherwise(pl.col(_RAW))
            .alias(_RAW),
        )
    if frame.height and frame[_RAW][0].startswith("\ufeff"):  # a UTF-8 byte-order mark is not data
        frame = frame.with_columns(pl.col(_RAW).str.strip_prefix("\ufeff"))
    blank = pl.col(_RAW).str.contains(r"^\s*$")
    if frame.select(blank.any()).item():  # blank lines are not rows
        frame = frame.filter(~blank)
    _require_text(frame, path)
    return frame


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file; check the path", path=path)
    if path.is_dir():
        raise InputError("is a directory; pass a file", path=path)
    if path.stat().st_size == 0:
        raise InputError("is empty", path=path)
    magic = _magic(path)
    for prefix, what in _ARCHIVES.items():
        if magic.startswith(prefix):
            raise InputError(f"is {what}; unpack it and pass the file inside", path=path)


def _magic(path: Path) -> bytes:
    if not path.is_file():
        return b""
    with path.open("rb") as handle:
        return handle.read(4)


def _require_text(lines: pl.DataFrame, path: Path) -> None:
    """Refuse files whose first lines are all undecodable: binary data or another encoding, not rows."""
    head = lines.head(_SNIFF_LINES)
    if head.height and head[_WHY].eq_missing("invalid UTF-8").all():
        raise InputError(
            "is not UTF-8 text (a binary file, or another encoding: convert it to UTF-8 first)", path=path
        )


def _lines_fast(path: Path) -> pl.DataFrame | None:
    """Polars reads the file as a single text column; None when it cannot (the careful path then does)."""
    try:
        raw = pl.read_csv(
            path,
            has_header=False,
            separator="\x00",  # a byte text files do not contain: every line is one field
            quote_char=None,
            schema={_RAW: pl.String},
            encoding="utf8-lossy",
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:
        return None
    frame = raw.with_row_index(_LN, offset=1).with_columns(pl.col(_LN).cast(pl.Int64))
    if frame.select(pl.col(_RAW).str.ends_with("\r").any()).item():  # Windows line ends
        frame = frame.with_columns(pl.col(_RAW).str.strip_suffix("\r"))
    # Invalid bytes became U+FFFD; unless the file also holds real U+FFFD characters, those lines are bad.
    replaced = frame[_RAW].str.contains("\ufffd", literal=True)
    if replaced.any():
        if "\ufffd".encode() in path.read_bytes():
            return None
        return frame.with_columns(pl.when(replaced).then(pl.lit("invalid UTF-8")).alias(_WHY))
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias(_WHY))


def _lines_careful(path: Path, encoding: str) -> pl.DataFrame:
    """The same frame as :func:`_lines_fast`, decoding each line in Python (slow but exact)."""
    data = path.read_bytes()
    if data.startswith(_GZIP_MAGIC):
        data = gzip.decompress(data)
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    texts: list[str] = []
    why: list[str | None] = []
    for part in parts:
        try:
            texts.append(part.decode(encoding).removesuffix("\r"))
            why.append(None)
        except UnicodeDecodeError:
            texts.append(part.decode(encoding, "replace").removesuffix("\r"))
            why.append("invalid UTF-8")
    return pl.DataFrame(
        {
            _LN: pl.int_range(1, len(texts) + 1, eager=True, dtype=pl.Int64),
            _RAW: pl.Series(texts, dtype=pl.String),
            _WHY: pl.Series(why, dtype=pl.String),
        }
    )


def _peek_lines(path: Path) -> list[str]:
    """The first non-blank lines of a file (up to 64 KiB), decoded leniently, for sniffing."""
    if path.is_dir() or not path.exists():
        return []
    opener = gzip.open if _magic(path).startswith(_GZIP_MAGIC) else open
    with opener(path, "rb") as handle:
        chunk = handle.read(_PEEK_BYTES)
    lines = chunk.decode("utf-8", "replace").removeprefix("\ufeff").split("\n")
    if len(chunk) == _PEEK_BYTES and len(lines) > 1:
        lines.pop()  # cut in the middle
    return [line.rstrip("\r") for line in lines if line.strip()][:_SNIFF_LINES]


@dataclass(frozen=True)
class _Table:
    """Delimited text: its data lines, not split yet (see :meth:`slices`), and how to split them."""

    lines: pl.DataFrame  # _LN, _RAW, _WHY — every data line (not the header)
    names: list[str]
    separator: str
    quoting: bool
    header: str | None  # the header line, when the file has one

    def slices(self, wanted: Iterable[str]) -> Iterator[pl.DataFrame]:
        """``_LN``, ``_RAW``, ``_WHY`` and the wanted columns (Utf8), :data:`SLICE_ROWS` lines at a time.

        Lines with a reason in ``_WHY`` (invalid UTF-8, malformed quoting, a wrong number of fields) are
        rejects; their columns are meaningless.
        """
        position = {name: i for i, name in enumerate(self.names)}
        fields = pl.col(_FIELDS)
        columns = [fields.list.get(position[n], null_on_oob=True).alias(n) for n in dict.fromkeys(wanted)]
        count = fields.list.len()
        wrong = count != len(self.names)
        why = pl.format(
            f"expected {len(self.names)} fields separated by {self.separator!r}, found {{}}", count
        )
        for start in range(0, self.lines.height, SLICE_ROWS):
            lines = _split_fields(self.lines.slice(start, SLICE_ROWS), self.separator, self.quoting)
            if lines.select(wrong.any()).item():
                lines = lines.with_columns(pl.coalesce(_WHY, reasons(lines, [(wrong, why)])).alias(_WHY))
            yield lines.select(_LN, _RAW, _WHY, *columns)

    def strict_frame(self, wanted: Iterable[str], path: Path) -> pl.DataFrame:
        """The wanted columns of every line, for small files read strictly (item tables): a reject raises."""
        frame = pl.concat(self.slices(wanted))
        _raise_first_reject(_rejects_of(frame), path)
        return frame.drop(_LN, _RAW, _WHY)


def _read_table(
    path: Path,
    *,
    separator: str | None,
    header: bool | None,
    names: list[str] | None = None,
    quoting: bool = True,
    encoding: str = "utf-8",
) -> _Table:
    """Delimited text. ``header=None`` detects one; ``names`` name the columns of a header-less file."""
    lines = _read_lines(path, encoding=encoding)
    if lines.height == 0:
        raise InputError("is empty (only blank lines)", path=path)
    head = lines.head(_SNIFF_LINES)[_RAW].to_list()
    sep = separator or _sniff_separator(head) or ","
    quoting = quoting and len(sep) == 1
    first = _split_line(head[0], sep, quoting)
    second = _split_line(head[1], sep, quoting) if len(head) > 1 else None
    if header is None:
        header = _looks_like_header(first, second)
    header_line = None
    if header:
        header_line = head[0]
        names = _dedupe([f.strip() for f in first])
        lines = lines.slice(1)
        if lines.height == 0:
            raise InputError("has a header but no data rows", path=path)
    elif names is None:
        names = [f"column_{i}" for i in range(1, len(first) + 1)]
    return _Table(lines=lines, names=names, separator=sep, quoting=quoting, header=header_line)


def _split_fields(lines: pl.DataFrame, sep: str, quoting: bool) -> pl.DataFrame:
    """Add ``_FIELDS``. Lines with a double quote are parsed as CSV quoting; malformed quoting is a reject."""
    raw = pl.col(_RAW)
    has_quote = raw.str.contains('"', literal=True)
    if not quoting or not lines.select(has_quote.any()).item():
        return lines.with_columns(raw.str.split(sep).alias(_FIELDS))
    plain = lines.filter(~has_quote).with_columns(raw.str.split(sep).alias(_FIELDS))
    # Prefixing the separator makes every field one non-empty match: "<sep>"quoted"" or "<sep>plain".
    esc = re.escape(sep)
    # A plain field may hold quotes but not start with one: an unclosed quote then fails to match.
    pattern = f'{esc}("(?:[^"]|"")*"|(?:[^{esc}"][^{esc}]*)?)'
    quoted = lines.filter(has_quote).with_columns((pl.lit(sep) + raw).str.extract_all(pattern).alias(_FIELDS))
    matched = pl.col(_FIELDS).list.eval(pl.element().str.len_bytes()).list.sum()
    field = pl.element().str.slice(1)
    unquoted = (
        pl.when(field.str.starts_with('"') & field.str.ends_with('"') & (field.str.len_chars() >= 2))
        .then(field.str.slice(1, field.str.len_chars() - 2).str.replace_all('""', '"', literal=True))
        .otherwise(field)
    )
    malformed = pl.when(matched != raw.str.len_bytes() + 1).then(
        pl.lit("malformed quoting (a quote inside an unquoted field, or an unclosed quote)")
    )
    quoted = quoted.with_columns(
        pl.coalesce(_WHY, malformed).alias(_WHY), pl.col(_FIELDS).list.eval(unquoted)
    )
    return pl.concat([plain, quoted]).sort(_LN)


def _split_line(line: str, sep: str, quoting: bool) -> list[str]:
    if quoting and '"' in line:
        return next(csv.reader([line], delimiter=sep), [])
    return line.split(sep)


def _sniff_separator(lines: list[str]) -> str | None:
    """The candidate that splits most of the first lines like the first one (then: the most fields).

    A single space counts only when no other candidate occurs and every line has the same number of
    whitespace-separated fields (so ``user item item …`` sequence files are not taken for it).
    """
    if not lines:
        return None
    unquoted = [re.sub(r'"[^"]*"', "", line) for line in lines]  # separators inside quotes do not count
    best: tuple[float, int] | None = None
    found = None
    for sep in _SEPARATORS:
        counts = [line.count(sep) for line in unquoted]
        if counts[0] == 0:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if best is None or score > best:
            best, found = score, sep
    if found is None and len({len(line.split(" ")) for line in unquoted}) == 1 and " " in unquoted[0]:
        return " "
    return found


def _looks_like_sequences(head: list[str]) -> bool:
    """Whitespace-separated tokens whose count varies from line to line (``user item item …``)."""
    counts = [len(line.split()) for line in head]
    return counts[0] >= 2 and (len(set(counts)) > 1 or len(counts) == 1)


def _looks_like_header(first: list[str], second: list[str] | None) -> bool:
    known = {alias for aliases in (*_ALIASES.values(), _CATEGORY_ALIASES) for alias in aliases}
    if any(_norm(field) in known for field in first):
        return True
    first_numeric = any(_NUMBER_RE.match(field.strip()) for field in first)
    if second is None:
        return not first_numeric
    return not first_numeric and any(_NUMBER_RE.match(field.strip()) for field in second)


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names, start=1):
        name = name.strip('"') or f"column_{i}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _parse_separator(separator: str | None) -> str | None:
    if separator is None:
        return None
    if separator == "":
        raise InputError("--sep is empty; give a delimiter such as ',' or '\\t'")
    return _SEPARATOR_NAMES.get(separator.lower(), separator)


# -------------------------------------------------------------------------------- JSON lines and frames


def _jsonl_frame(path: Path) -> pl.DataFrame:
    """Decode JSON objects, one per line: ``_LN``, ``_RAW``, ``_WHY`` plus one column per key."""
    lines = _read_lines(path)
    if lines.height == 0:
        raise InputError("is empty", path=path)
    good = lines.filter(pl.col(_WHY).is_null())
    try:
        decoded = good[_RAW].str.json_decode(infer_schema_length=None)
        if not isinstance(decoded.dtype, pl.Struct):
            raise pl.exceptions.ComputeError("not objects")
        frame = pl.concat([good, decoded.struct.unnest()], how="horizontal")
    except pl.exceptions.PolarsError:
        frame = _jsonl_careful(good)
    return pl.concat([lines.filter(pl.col(_WHY).is_not_null()), frame], how="diagonal_relaxed").sort(_LN)


def _jsonl_careful(lines: pl.DataFrame) -> pl.DataFrame:
    """Line-by-line JSON decoding (values as text), used only when a line is not valid JSON."""
    records: list[dict[str, str | None]] = []
    for line_no, raw in zip(lines[_LN].to_list(), lines[_RAW].to_list(), strict=True):
        record: dict[str, str | None] = {_LN: line_no, _RAW: raw}  # type: ignore[dict-item]
        try:
            value = json.loads(raw)
        except ValueError as err:
            record[_WHY] = f"invalid JSON: {err}"
        else:
            if isinstance(value, dict):
                record.update({str(k): _scalar_text(v) for k, v in value.items() if k not in record})
            else:
                record[_WHY] = "line is not a JSON object"
        records.append(record)
    schema = {_LN: pl.Int64, _RAW: pl.String, _WHY: pl.String}
    if not records:
        return pl.DataFrame(schema=schema)
    frame = pl.DataFrame(records, infer_schema_length=None)
    if _WHY not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(_WHY))
    return frame.with_columns(pl.col(_LN).cast(pl.Int64))


def _read_parquet_file(path: Path, *, columns: list[str] | None = None) -> pl.DataFrame:
    return _parquet_call(path, lambda p: pl.read_parquet(p, columns=columns))


def _parquet_call(path: Path, call: Callable[[Path], Any]) -> Any:
    _check_file(path)
    try:
        return call(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"is not a readable Parquet file ({first})", path=path) from None


def _is_dataframe(source: Any) -> bool:
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        return True
    return type(source).__module__.startswith("pandas") and type(source).__name__ == "DataFrame"


def _as_polars(source: Any) -> pl.DataFrame:
    if isinstance(source, pl.LazyFrame):
        return source.collect()
    if isinstance(source, pl.DataFrame):
        return source
    include_index = any(name is not None for name in source.index.names)  # e.g. set_index("user")
    try:
        return pl.from_pandas(source, include_index=include_index)
    except Exception:  # pyarrow refuses object columns that mix types (ids like "a" and 1): use text
        mixed = {
            c: source[c].map(_scalar_text, na_action="ignore")
            for c in source.columns
            if source[c].dtype == object
        }
        return pl.from_pandas(source.assign(**mixed), include_index=include_index)


# ---------------------------------------------------------------------------------- column matching


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.strip().strip('"').lower())


def _check_mapping(mapping: Mapping[str, str | None] | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, column in (mapping or {}).items():
        canonical = MAPPING_KEYS.get(key.strip().lower())
        if canonical is None:
            raise InputError(f"unknown --map key {key!r}; known keys: {', '.join(MAPPING_KEYS)}")
        if canonical in out:
            raise InputError(f"--map names the {_SHORT[canonical]} column twice")
        out[canonical] = column.strip() if isinstance(column, str) and column.strip() else None
    return out


def _find_alias(columns: list[str], aliases: Iterable[str], *, exclude: Iterable[str] = ()) -> str | None:
    taken = set(exclude)
    by_norm: dict[str, str] = {}
    for column in columns:
        if column not in taken:
            by_norm.setdefault(_norm(column), column)
    for alias in aliases:
        if alias in by_norm:
            return by_norm[alias]
    return None


def _resolve_column(wanted: str, columns: list[str], *, key: str) -> str:
    if wanted in columns:
        return wanted
    if wanted.isdigit() and f"column_{wanted}" in columns:  # --map user=1 for header-less files
        return f"column_{wanted}"
    matches = [c for c in columns if _norm(c) == _norm(wanted)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"--map {key}={wanted}: no such column; columns found: {', '.join(columns)}")


def _match_columns(
    columns: list[str], mapping: dict[str, str | None], *, table: _Table | None = None
) -> dict[str, str]:
    """Canonical column → source column: the explicit mapping first, then aliases; required ones must exist."""
    colmap: dict[str, str] = {}
    for canonical, wanted in mapping.items():
        if wanted is not None:
            colmap[canonical] = _resolve_column(wanted, columns, key=_SHORT[canonical])
    for canonical, aliases in _ALIASES.items():
        if canonical not in colmap and canonical not in mapping:
            found = _find_alias(columns, aliases, exclude=colmap.values())
            if found is not None:
                colmap[canonical] = found
    missing = [c for c in _REQUIRED if c not in colmap]
    if missing:
        if table is not None and len(columns) == 1:
            raise _wrong_separator(table)
        wanted = ",".join(f"{_SHORT[c]}=…" for c in _REQUIRED)
        raise InputError(
            f"no column for {', '.join(_SHORT[c] for c in missing)}; columns found: {', '.join(columns)};"
            f" name them with --map {wanted}"
        )
    return colmap


def _wrong_separator(table: _Table) -> InputError:
    sample = table.header or _first_good_line(table)
    others = [s for s in (*_SEPARATORS, " ") if s != table.separator and s in sample]
    shown = sample if len(sample) <= 60 else sample[:57] + "..."
    advice = (
        f"the file seems to use {others[0]!r}: pass --sep {others[0]!r}" if others else "pass the right --sep"
    )
    return InputError(
        f"every line is a single column when split on {table.separator!r} (first line {shown!r}); {advice}"
    )


def _first_good_line(table: _Table) -> str:
    for frame in table.slices([]):  # almost always found in the first slice
        good = frame.filter(pl.col(_WHY).is_null())
        if good.height:
            return good[_RAW][0]
    return ""


# ------------------------------------------------------------------------------------------- events


def _missing_if_empty(text: pl.Series) -> pl.Series:
    """Stripped text with empty strings as null (missing). Skips the copies when there is nothing to do."""
    stripped = text.str.strip_chars()
    if (stripped == "").any():
        stripped = pl.select(pl.when(stripped != "").then(stripped)).to_series()
    return stripped.alias(text.name)


def _ids(column: pl.Series) -> pl.Series:
    """External ids as text; empty or NaN ids are missing (null). Integral floats lose their '.0'."""
    dtype = column.dtype
    if dtype == pl.String:
        return _missing_if_empty(column)
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
        text = _missing_if_empty(column)
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
    return _missing_if_empty(column.cast(pl.String))


def _to_events(
    frames: Iterable[pl.DataFrame],
    colmap: Mapping[str, str],
    *,
    unit: str | None = None,
    behavior: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed canonical events from frames of source rows, and the rejects among them.

    A frame holds ``_LN``, the source columns, and optionally ``_RAW`` (the line's text) and ``_WHY`` (rows
    rejected already). Ids, behaviours and values are converted frame by frame (a slice of a big file at a
    time); timestamps once for all frames together, because their shape and unit are decided from the
    whole column. ``unit`` fixes the epoch unit of numeric timestamps; ``behavior`` is a constant
    behaviour for formats that have one (MovieLens ratings).
    """
    parts, sources = _event_slices(frames, colmap, behavior=behavior)
    events = pl.concat(parts, rechunk=False)  # no copy: a chunk per slice
    millis = events[TIMESTAMP]
    why = [events[_WHY]]  # the first reason wins: rejected already, then the timestamp, then the value
    if TIMESTAMP in colmap:
        millis, ts_reason = _timestamps(events[TIMESTAMP].alias(colmap[TIMESTAMP]), events[_WHY], unit)
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
    raw = bad[_RAW] if _RAW in bad.columns else bad.select(pl.concat_str(text, separator=",")).to_series()
    line = events[LINE].filter(rejected)
    rejects = pl.DataFrame({LINE: line, REASON: reason.filter(rejected), RAW: raw})
    return events.filter(~rejected), rejects


def _event_slices(
    frames: Iterable[pl.DataFrame], colmap: Mapping[str, str], *, behavior: str | None
) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """Per frame: its events before their timestamps are converted, and what a reject's RAW is made of
    (``_RAW``, or else the used source columns).

    The events are ``LINE``, ``USER_ID``, ``ITEM_ID``, ``TIMESTAMP`` (the source values), ``BEHAVIOR``,
    ``VALUE``, ``_WHY`` (the reason a row was rejected already) and ``_VALUE_WHY``. Rows rejected already
    are converted too, as nonsense, and dropped at the end with the others: dropping them here would copy
    every slice that has one.
    """
    parts: list[pl.DataFrame] = []
    sources: list[pl.DataFrame] = []
    for frame in frames:
        n = frame.height
        earlier = frame[_WHY] if _WHY in frame.columns else _constant(None, n, pl.String)
        columns: dict[str, pl.Series] = {
            LINE: frame[_LN].cast(pl.Int64),
            USER_ID: _ids(frame[colmap[USER_ID]]),
            ITEM_ID: _ids(frame[colmap[ITEM_ID]]),
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
        columns[_WHY] = earlier
        parts.append(pl.DataFrame({name: series.alias(name) for name, series in columns.items()}))
        sources.append(
            frame.select(_RAW) if _RAW in frame.columns else frame.select(*dict.fromkeys(colmap.values()))
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


def _rejects_of(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of a bookkeeping frame that carry a reason, as a reject frame."""
    bad = frame.filter(pl.col(_WHY).is_not_null())
    return bad.select(
        pl.col(_LN).cast(pl.Int64).alias(LINE), pl.col(_WHY).alias(REASON), pl.col(_RAW).alias(RAW)
    )


def _result(
    events: pl.DataFrame,
    rejects: list[pl.DataFrame],
    *,
    fmt: str,
    source: str | Path,
    items: pl.DataFrame | None = None,
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
    )
