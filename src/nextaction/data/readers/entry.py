"""The entry points for event logs: :func:`read_events`, :func:`detect_format`, :func:`parse_mapping`."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nextaction.data.readers.columns import ORDER, check_mapping, norm
from nextaction.data.readers.events import ReadResult
from nextaction.data.readers.formats import (
    DATAFRAME,
    KAGGLE_RETAILROCKET,
    READERS,
    Request,
    movielens_ratings,
    read_dataframe,
)
from nextaction.data.readers.frames import as_polars, is_dataframe
from nextaction.data.readers.lines import SEPARATORS, looks_like_sequences, magic, parse_separator, peek_lines
from nextaction.data.schema import CLOCK_POSITIONS, TIMESTAMP
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
_TAOBAO_ROW_RE: Final = re.compile(r"^\d+,\d+,\d+,(?:pv|buy|cart|fav),\d+$")
_PARQUET_MAGIC: Final = b"PAR1"


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
    ``"::"`` too). ``{"order": column}`` reads a log that only numbers each user's events (no clock): the
    position stands in for the time (position p = p seconds) and the result says ``clock="positions"``.
    """
    user_mapping = check_mapping(mapping)
    order = user_mapping.pop(ORDER, None)
    if order is not None:
        user_mapping[TIMESTAMP] = order
        read = read_events(source, format=format, mapping=user_mapping, separator=separator)
        return dataclasses.replace(read, clock=CLOCK_POSITIONS)
    if format is not None and format not in FORMATS and format != DATAFRAME:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)} (or leave it out)")
    sep = parse_separator(separator)
    if is_dataframe(source):
        if format not in (None, DATAFRAME):
            raise InputError(f"format {format!r} is for files; in-memory DataFrames need no format")
        if sep is not None:
            raise InputError("--sep applies to delimited text files, not to a DataFrame")
        return read_dataframe(as_polars(source), user_mapping)
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
    request = Request(path=path, mapping=user_mapping, separator=sep)
    try:
        return READERS[fmt](request)
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
    check_mapping(mapping)
    return mapping


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess a file's format from its name and first lines (see the module docstring of each reader)."""
    path = Path(path)
    if path.is_dir():
        if movielens_ratings(path, required=False) is not None:
            return "movielens"
        raise InputError(
            "is a directory without MovieLens ratings (u.data, ratings.dat, ratings.csv); pass the events file",
            path=path,
        )
    name = path.name.lower().removesuffix(".gz")  # Polars reads gzip-compressed text transparently
    suffix = Path(name).suffix
    if magic(path) == _PARQUET_MAGIC:
        return "parquet"
    if name in ("u.data", "ratings.dat") or (name == "ratings.csv" and (path.parent / "movies.csv").exists()):
        return "movielens"
    if name.startswith("userbehavior"):
        return "taobao"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    head = peek_lines(path)
    if not head:
        return "tsv" if suffix in (".tsv", ".tab") else "csv"  # empty: the reader says so
    if head[0].lstrip().startswith("{"):
        first = head[0]
        return "otto" if '"session"' in first and '"events"' in first else "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if tuple(norm(f) for f in head[0].split(",")) == KAGGLE_RETAILROCKET:
        return "retailrocket"
    if any(_TAOBAO_ROW_RE.match(line.strip()) for line in head[:2]):
        return "taobao"
    if suffix != ".csv" and not any(s in head[0] for s in SEPARATORS) and looks_like_sequences(head):
        return "sequences"
    return "csv"
