"""Column names: the aliases that recognise a file's columns, and the ``mapping`` (``--map``) keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from nextaction.data.schema import BEHAVIOR, EVENT_COLUMNS, ITEM_ID, TIMESTAMP, USER_ID, VALUE
from nextaction.errors import InputError

# Column-name aliases, compared after norm() (lower case, letters and digits only). Earlier aliases win
# when several columns match, e.g. "timestamp" over "date".
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    USER_ID: (
        "userid", "user", "visitorid", "visitor", "sessionid", "session", "customerid", "customer",
        "clientid", "uid", "reviewerid",
    ),
    ITEM_ID: (
        "itemid", "item", "aid", "movieid", "movie", "productid", "product", "articleid", "asin", "sku",
        "iid", "contentid", "threadid", "thread", "problemid", "questionid", "exerciseid",
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
CATEGORY_ALIASES: Final = ("category", "categoryid", "cat", "catid")
# ``--map order=…``: a column that only orders each user's events (a position, no clock). It stands in for
# the time column: position p becomes p seconds, and the log is marked as having no clock (CLOCK_POSITIONS),
# so no time gap is learned from it and splits go by position, never by date.
ORDER: Final = "order"
# The names --map uses for the canonical columns.
SHORT: Final = {
    USER_ID: "user",
    ITEM_ID: "item",
    TIMESTAMP: "time",
    BEHAVIOR: "behavior",
    VALUE: "value",
    ORDER: "order",
}
# Keys accepted in ``mapping``: the short names, the canonical column names, and the British spelling.
MAPPING_KEYS: Final = {
    **{short: canonical for canonical, short in SHORT.items()},
    **{canonical: canonical for canonical in EVENT_COLUMNS},
    "behaviour": BEHAVIOR,
}


# ---------------------------------------------------------------------------------- column matching


def norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.strip().strip('"').lower())


def check_mapping(mapping: Mapping[str, str | None] | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, column in (mapping or {}).items():
        canonical = MAPPING_KEYS.get(key.strip().lower())
        if canonical is None:
            raise InputError(f"unknown --map key {key!r}; known keys: {', '.join(MAPPING_KEYS)}")
        if canonical in out:
            raise InputError(f"--map names the {SHORT[canonical]} column twice")
        out[canonical] = column.strip() if isinstance(column, str) and column.strip() else None
    if out.get(ORDER) is not None and out.get(TIMESTAMP) is not None:
        raise InputError(
            "--map names both a time and an order column; give one: time for dated logs, order for"
            " logs that only number each user's events"
        )
    return out


def find_alias(columns: list[str], aliases: Iterable[str], *, exclude: Iterable[str] = ()) -> str | None:
    taken = set(exclude)
    by_norm: dict[str, str] = {}
    for column in columns:
        if column not in taken:
            by_norm.setdefault(norm(column), column)
    for alias in aliases:
        if alias in by_norm:
            return by_norm[alias]
    return None


def resolve_column(wanted: str, columns: list[str], *, key: str) -> str:
    if wanted in columns:
        return wanted
    if wanted.isdigit() and f"column_{wanted}" in columns:  # --map user=1 for header-less files
        return f"column_{wanted}"
    matches = [c for c in columns if norm(c) == norm(wanted)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"--map {key}={wanted}: no such column; columns found: {', '.join(columns)}")
