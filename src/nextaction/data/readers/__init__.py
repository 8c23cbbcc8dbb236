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

The modules, lowest first; each imports only from modules listed before it: ``events`` (the event
frame, rejects and :class:`ReadResult`) and ``columns`` (column aliases, ``mapping`` keys); ``lines`` (lines
and fields); ``frames`` (JSON Lines, Parquet, DataFrames); ``items`` (item tables, :func:`read_items`);
``formats`` (one reader per format); ``entry`` (:func:`read_events`, :func:`detect_format`,
:func:`parse_mapping`).
"""

from nextaction.data.readers.columns import MAPPING_KEYS
from nextaction.data.readers.entry import FORMATS, detect_format, parse_mapping, read_events
from nextaction.data.readers.events import EVENTS_SCHEMA, REJECTS_SCHEMA, ReadResult
from nextaction.data.readers.items import read_items
from nextaction.data.readers.lines import MAX_LINE_BYTES

__all__ = [
    "EVENTS_SCHEMA",
    "FORMATS",
    "MAPPING_KEYS",
    "MAX_LINE_BYTES",
    "REJECTS_SCHEMA",
    "ReadResult",
    "detect_format",
    "parse_mapping",
    "read_events",
    "read_items",
]
