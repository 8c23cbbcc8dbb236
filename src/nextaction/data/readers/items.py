"""Item tables: :func:`read_items`, and the item files of MovieLens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import polars as pl

from nextaction.data.readers.columns import ALIASES, check_mapping, find_alias, resolve_column
from nextaction.data.readers.events import LN, RAW_TEXT, ids, missing_if_empty
from nextaction.data.readers.frames import as_polars, is_dataframe, jsonl_frame, read_parquet_file
from nextaction.data.readers.lines import read_table
from nextaction.data.schema import ITEM_ID
from nextaction.errors import InputError

# Item-table columns of the formats that bring one (MovieLens, Taobao).
TITLE: Final = "title"
GENRES: Final = "genres"  # genre names joined by "|"
RELEASE_DATE: Final = "release_date"
CATEGORY: Final = "category"  # Taobao's item category
IMDB_URL: Final = "imdb_url"

# ML-100k's u.item genre flags, in file order (used when u.genre is not next to it).
_ML100K_GENRES: Final = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def read_items(
    source: str | os.PathLike[str] | Any, *, mapping: Mapping[str, str | None] | None = None
) -> pl.DataFrame:
    """Read an item table: ``ITEM_ID`` (Utf8) plus the other columns (numbers where a column is numeric).

    Understands MovieLens item files by name (``u.item``, ``movies.dat``, ``movies.csv``) and otherwise
    csv/tsv/parquet/jsonl files or DataFrames with an item id column (alias or ``mapping={"item": …}``).
    """
    user_mapping = check_mapping(mapping)
    if is_dataframe(source):
        return _item_table(as_polars(source), user_mapping, path=None)
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
            frame = read_parquet_file(path)
        elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            frame = jsonl_frame(path).drop(LN, RAW_TEXT)
        else:
            table = read_table(path, separator=None, header=True)
            frame = table.strict_frame(table.names, path)
            return _item_table(frame, user_mapping, path=path, text=True)
        return _item_table(frame, user_mapping, path=path)
    except InputError as err:
        if err.path is not None:
            raise
        raise InputError(err.message, path=path, line=err.line, column=err.column) from None


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
        source = find_alias(frame.columns, ALIASES[ITEM_ID])
    elif source not in frame.columns:
        source = resolve_column(source, frame.columns, key="item")
    if source is None:
        raise InputError(
            f"no item id column; columns found: {', '.join(frame.columns)}; name it with --map item=…",
            path=path,
        )
    if ITEM_ID in frame.columns and source != ITEM_ID:
        raise InputError(f"has both '{ITEM_ID}' and '{source}'; choose one with --map item=…", path=path)
    id_column = ids(frame[source]).alias(ITEM_ID)
    rest = _numeric_columns(frame.drop(source)) if text else frame.drop(source)
    table = pl.DataFrame([id_column, *rest.get_columns()])
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
    table = read_table(path, separator="|", header=False, names=names, quoting=False, encoding="latin-1")
    frame = table.strict_frame(names, path)
    genre_list = pl.concat_list(
        [pl.when(pl.col(flag) == "1").then(pl.lit(name)) for flag, name in zip(flags, genres, strict=True)]
    )
    return frame.select(
        ids(frame[ITEM_ID]).alias(ITEM_ID),
        pl.col(TITLE),
        genre_list.list.drop_nulls().list.join("|").alias(GENRES),
        pl.col(RELEASE_DATE).str.to_date("%d-%b-%Y", strict=False),
        pl.col(IMDB_URL),
    )


def _ml_dat_items(path: Path) -> pl.DataFrame:
    """ML-1M/10M ``movies.dat``: ``id::title::genres`` (ML-1M is Latin-1, ML-10M UTF-8)."""
    encoding = _guess_encoding(path)
    names = [ITEM_ID, TITLE, GENRES]
    table = read_table(path, separator="::", header=False, names=names, quoting=False, encoding=encoding)
    frame = table.strict_frame(names, path)
    return frame.with_columns(ids(frame[ITEM_ID]).alias(ITEM_ID))


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
        column = missing_if_empty(frame[name]) if frame[name].dtype == pl.String else frame[name]
        if column.dtype == pl.String and column.null_count() < len(column):
            for dtype in (pl.Int64, pl.Float64):
                cast = column.cast(dtype, strict=False)
                if cast.null_count() == column.null_count():
                    column = cast
                    break
        columns.append(column)
    return pl.DataFrame(columns)
