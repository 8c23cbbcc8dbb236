"""Text files as lines (stage 1 of the package docstring) and delimited lines as fields (stage 2)."""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from nextaction.data.readers.columns import ALIASES, CATEGORY_ALIASES, norm
from nextaction.data.readers.events import LN, RAW_TEXT, WHY, rejects_of
from nextaction.data.schema import LINE, REASON
from nextaction.data.timestamps import reasons
from nextaction.errors import InputError

MAX_LINE_BYTES: Final = 1 << 20  # no event row is this long; such a line is a broken file, so a reject
# Lines split into fields at a time. Split fields take several times the bytes of their line (a list per
# line, then a copy per column): all lines of a 10M-row, 354 MB file at once peaked at 3.3 GB.
SLICE_ROWS: Final = 1 << 20
# Bookkeeping column of a line's split fields (the other bookkeeping columns: see readers.events).
FIELDS: Final = "__nextaction_fields__"

_RAW_SHOWN: Final = 200  # characters of an over-long line kept in RAW
_PEEK_BYTES: Final = 1 << 16
_SNIFF_LINES: Final = 50
SEPARATORS: Final = (",", "\t", ";", "|", "::")
_SEPARATOR_NAMES: Final = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
}
_NUMBER_RE: Final = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ARCHIVES: Final = {
    b"PK\x03\x04": "a zip archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"BZh": "bzip2-compressed",
}


# ----------------------------------------------------------------------------------- lines and fields


def read_lines(path: Path, *, encoding: str = "utf-8") -> pl.DataFrame:
    """One row per non-blank line: ``LN`` (1-based), ``RAW_TEXT`` (text), ``WHY`` (reject reason or null)."""
    check_file(path)
    frame = _lines_fast(path) if encoding == "utf-8" else None
    if frame is None:
        frame = _lines_careful(path, encoding)
    length = pl.col(RAW_TEXT).str.len_bytes()
    if frame.select((length > MAX_LINE_BYTES).any()).item():
        why = pl.format(f"line is longer than {MAX_LINE_BYTES} bytes ({{}} bytes)", length)
        frame = frame.with_columns(
            pl.coalesce(WHY, reasons(frame, [(length > MAX_LINE_BYTES, why)])).alias(WHY),
            pl.when(length > MAX_LINE_BYTES)
            .then(pl.col(RAW_TEXT).str.slice(0, _RAW_SHOWN) + pl.lit("…"))
            .otherwise(pl.col(RAW_TEXT))
            .alias(RAW_TEXT),
        )
    if frame.height and frame[RAW_TEXT][0].startswith("\ufeff"):  # a UTF-8 byte-order mark is not data
        frame = frame.with_columns(pl.col(RAW_TEXT).str.strip_prefix("\ufeff"))
    blank = pl.col(RAW_TEXT).str.contains(r"^\s*$")
    if frame.select(blank.any()).item():  # blank lines are not rows
        frame = frame.filter(~blank)
    _require_text(frame, path)
    return frame


def check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file; check the path", path=path)
    if path.is_dir():
        raise InputError("is a directory; pass a file", path=path)
    if path.stat().st_size == 0:
        raise InputError("is empty", path=path)
    first_bytes = magic(path)
    for prefix, what in _ARCHIVES.items():
        if first_bytes.startswith(prefix):
            raise InputError(f"is {what}; unpack it and pass the file inside", path=path)


def magic(path: Path) -> bytes:
    if not path.is_file():
        return b""
    with path.open("rb") as handle:
        return handle.read(4)


def _require_text(lines: pl.DataFrame, path: Path) -> None:
    """Refuse files whose first lines are all undecodable: binary data or another encoding, not rows."""
    head = lines.head(_SNIFF_LINES)
    if head.height and head[WHY].eq_missing("invalid UTF-8").all():
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
            schema={RAW_TEXT: pl.String},
            encoding="utf8-lossy",
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:
        return None
    frame = raw.with_row_index(LN, offset=1).with_columns(pl.col(LN).cast(pl.Int64))
    if frame.select(pl.col(RAW_TEXT).str.ends_with("\r").any()).item():  # Windows line ends
        frame = frame.with_columns(pl.col(RAW_TEXT).str.strip_suffix("\r"))
    # Invalid bytes became U+FFFD; unless the file also holds real U+FFFD characters, those lines are bad.
    replaced = frame[RAW_TEXT].str.contains("\ufffd", literal=True)
    if replaced.any():
        if "\ufffd".encode() in path.read_bytes():
            return None
        return frame.with_columns(pl.when(replaced).then(pl.lit("invalid UTF-8")).alias(WHY))
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias(WHY))


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
            LN: pl.int_range(1, len(texts) + 1, eager=True, dtype=pl.Int64),
            RAW_TEXT: pl.Series(texts, dtype=pl.String),
            WHY: pl.Series(why, dtype=pl.String),
        }
    )


def peek_lines(path: Path) -> list[str]:
    """The first non-blank lines of a file (up to 64 KiB), decoded leniently, for sniffing."""
    if path.is_dir() or not path.exists():
        return []
    opener = gzip.open if magic(path).startswith(_GZIP_MAGIC) else open
    with opener(path, "rb") as handle:
        chunk = handle.read(_PEEK_BYTES)
    lines = chunk.decode("utf-8", "replace").removeprefix("\ufeff").split("\n")
    if len(chunk) == _PEEK_BYTES and len(lines) > 1:
        lines.pop()  # cut in the middle
    return [line.rstrip("\r") for line in lines if line.strip()][:_SNIFF_LINES]


@dataclass(frozen=True)
class Table:
    """Delimited text: its data lines, not split yet (see :meth:`slices`), and how to split them."""

    lines: pl.DataFrame  # LN, RAW_TEXT, WHY — every data line (not the header)
    names: list[str]
    separator: str
    quoting: bool
    header: str | None  # the header line, when the file has one

    def slices(self, wanted: Iterable[str]) -> Iterator[pl.DataFrame]:
        """``LN``, ``RAW_TEXT``, ``WHY`` and the wanted columns (Utf8), :data:`SLICE_ROWS` lines at a time.

        Lines with a reason in ``WHY`` (invalid UTF-8, malformed quoting, a wrong number of fields) are
        rejects; their columns are meaningless.
        """
        position = {name: i for i, name in enumerate(self.names)}
        fields = pl.col(FIELDS)
        columns = [fields.list.get(position[n], null_on_oob=True).alias(n) for n in dict.fromkeys(wanted)]
        count = fields.list.len()
        wrong = count != len(self.names)
        why = pl.format(
            f"expected {len(self.names)} fields separated by {self.separator!r}, found {{}}", count
        )
        for start in range(0, self.lines.height, SLICE_ROWS):
            lines = _split_fields(self.lines.slice(start, SLICE_ROWS), self.separator, self.quoting)
            if lines.select(wrong.any()).item():
                lines = lines.with_columns(pl.coalesce(WHY, reasons(lines, [(wrong, why)])).alias(WHY))
            yield lines.select(LN, RAW_TEXT, WHY, *columns)

    def strict_frame(self, wanted: Iterable[str], path: Path) -> pl.DataFrame:
        """The wanted columns of every line, for small files read strictly (item tables): a reject raises."""
        frame = pl.concat(self.slices(wanted))
        _raise_first_reject(rejects_of(frame), path)
        return frame.drop(LN, RAW_TEXT, WHY)


def _raise_first_reject(rejects: pl.DataFrame, path: Path) -> None:
    if rejects.height:
        first = rejects.row(0, named=True)
        raise InputError(
            f"{first[REASON]}; fix the item file (item tables are read strictly)", path=path, line=first[LINE]
        )


def read_table(
    path: Path,
    *,
    separator: str | None,
    header: bool | None,
    names: list[str] | None = None,
    quoting: bool = True,
    encoding: str = "utf-8",
) -> Table:
    """Delimited text. ``header=None`` detects one; ``names`` name the columns of a header-less file."""
    lines = read_lines(path, encoding=encoding)
    if lines.height == 0:
        raise InputError("is empty (only blank lines)", path=path)
    head = lines.head(_SNIFF_LINES)[RAW_TEXT].to_list()
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
    return Table(lines=lines, names=names, separator=sep, quoting=quoting, header=header_line)


def _split_fields(lines: pl.DataFrame, sep: str, quoting: bool) -> pl.DataFrame:
    """Add ``FIELDS``. Lines with a double quote are parsed as CSV quoting; malformed quoting is a reject."""
    raw = pl.col(RAW_TEXT)
    has_quote = raw.str.contains('"', literal=True)
    if not quoting or not lines.select(has_quote.any()).item():
        return lines.with_columns(raw.str.split(sep).alias(FIELDS))
    plain = lines.filter(~has_quote).with_columns(raw.str.split(sep).alias(FIELDS))
    # Prefixing the separator makes every field one non-empty match: "<sep>"quoted"" or "<sep>plain".
    esc = re.escape(sep)
    # A plain field may hold quotes but not start with one: an unclosed quote then fails to match.
    pattern = f'{esc}("(?:[^"]|"")*"|(?:[^{esc}"][^{esc}]*)?)'
    quoted = lines.filter(has_quote).with_columns((pl.lit(sep) + raw).str.extract_all(pattern).alias(FIELDS))
    matched = pl.col(FIELDS).list.eval(pl.element().str.len_bytes()).list.sum()
    field = pl.element().str.slice(1)
    unquoted = (
        pl.when(field.str.starts_with('"') & field.str.ends_with('"') & (field.str.len_chars() >= 2))
        .then(field.str.slice(1, field.str.len_chars() - 2).str.replace_all('""', '"', literal=True))
        .otherwise(field)
    )
    malformed = pl.when(matched != raw.str.len_bytes() + 1).then(
        pl.lit("malformed quoting (a quote inside an unquoted field, or an unclosed quote)")
    )
    quoted = quoted.with_columns(pl.coalesce(WHY, malformed).alias(WHY), pl.col(FIELDS).list.eval(unquoted))
    return pl.concat([plain, quoted]).sort(LN)


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
    for sep in SEPARATORS:
        counts = [line.count(sep) for line in unquoted]
        if counts[0] == 0:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if best is None or score > best:
            best, found = score, sep
    if found is None and len({len(line.split(" ")) for line in unquoted}) == 1 and " " in unquoted[0]:
        return " "
    return found


def looks_like_sequences(head: list[str]) -> bool:
    """Whitespace-separated tokens whose count varies from line to line (``user item item …``)."""
    counts = [len(line.split()) for line in head]
    return counts[0] >= 2 and (len(set(counts)) > 1 or len(counts) == 1)


def _looks_like_header(first: list[str], second: list[str] | None) -> bool:
    known = {alias for aliases in (*ALIASES.values(), CATEGORY_ALIASES) for alias in aliases}
    if any(norm(field) in known for field in first):
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


def parse_separator(separator: str | None) -> str | None:
    if separator is None:
        return None
    if separator == "":
        raise InputError("--sep is empty; give a delimiter such as ',' or '\\t'")
    return _SEPARATOR_NAMES.get(separator.lower(), separator)
