"""Vocabularies: external ids ↔ dense 1-based indices, behaviour names, and user-id pseudonyms.

Ordering rules (documented in the prepared dataset's report):

- users and items: by their stored id, sorted as strings (lexicographic, so ``"10" < "9"``). The order
  depends only on *which* ids survive cleaning, never on row order, so re-preparing a shuffled copy of a
  log gives the same indices. With pseudonymisation the stored user id is the pseudonym, and users are
  sorted by it (their order then says nothing about the raw ids).
- behaviours: ``behaviors[0] == "<pad>"``, then by descending event count, ties by name.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from typing import Final

import numpy as np
import polars as pl

from nextaction.errors import InputError

PAD_BEHAVIOR: Final = "<pad>"
HMAC_KEY_ENV: Final = "NEXTACTION_HMAC_KEY"
# Behaviour indices are stored as int8 in the sequence arrays; 0 is padding.
MAX_BEHAVIORS: Final = 127

# Keys are *normalised* names (see normalize_behavior); values are the canonical names we use.
BUILTIN_BEHAVIOR_ALIASES: Final[Mapping[str, str]] = {
    **dict.fromkeys(("pv", "view", "views", "pageview", "page_view", "detail", "detail_view"), "view"),
    **dict.fromkeys(("click", "clicks", "clk", "clicked"), "click"),
    **dict.fromkeys(
        ("cart", "carts", "addtocart", "add_to_cart", "addcart", "add_cart", "basket", "add_to_basket"),
        "cart",
    ),
    **dict.fromkeys(
        (
            "buy", "buys", "purchase", "purchases", "purchased", "transaction", "transactions",
            "order", "orders", "checkout", "conversion",
        ),
        "buy",
    ),
    **dict.fromkeys(
        ("fav", "favs", "favorite", "favorites", "favourite", "favourites", "collect", "wishlist"), "fav"
    ),
    **dict.fromkeys(("rate", "rating", "ratings", "rated"), "rate"),
    **dict.fromkeys(("like", "likes", "liked"), "like"),
}  # fmt: skip

_SEPARATORS = re.compile(r"[\s\-]+")


def normalize_behavior(name: str) -> str:
    """Case-insensitive, and spaces/hyphens become underscores: ``"Add-To Cart"`` → ``"add_to_cart"``."""
    return _SEPARATORS.sub("_", name.strip()).lower()


def behavior_alias_map(user_aliases: Mapping[str, str], *, builtin: bool = True) -> dict[str, str]:
    """The alias map in effect: built-ins (if enabled) overridden and extended by the user's map."""
    merged = dict(BUILTIN_BEHAVIOR_ALIASES) if builtin else {}
    merged.update({normalize_behavior(k): normalize_behavior(v) for k, v in user_aliases.items()})
    return merged


def behavior_vocab(counts: Mapping[str, int]) -> list[str]:
    """``["<pad>", most frequent, …]``: descending count, ties by name (deterministic)."""
    names = sorted(counts, key=lambda name: (-counts[name], name))
    if len(names) > MAX_BEHAVIORS:
        raise InputError(
            f"{len(names)} behaviour types, at most {MAX_BEHAVIORS} are supported; "
            "keep fewer with a behaviour whitelist or map them together with behaviour aliases"
        )
    return [PAD_BEHAVIOR, *names]


def hmac_key(configured: str | None) -> bytes:
    """The pseudonymisation key: the configured one, else the environment variable."""
    key = configured if configured is not None else os.environ.get(HMAC_KEY_ENV)
    if not key:
        raise InputError(
            f"pseudonymisation needs a secret key: set the environment variable {HMAC_KEY_ENV} "
            "(or the config's pseudonymize.key)"
        )
    return key.encode()


def pseudonymize(ids: pl.Series, key: bytes, hex_chars: int) -> pl.Series:
    """Keyed HMAC-SHA256 of each id, as the first ``hex_chars`` hex digits.

    Called on the *unique* ids (one call per user, not per event); ``hmac.digest`` is the C one-shot.
    """
    digests = [hmac.digest(key, s.encode(), "sha256").hex()[:hex_chars] for s in ids.to_list()]
    return pl.Series(ids.name, digests, dtype=pl.Utf8)


def dense_lut(codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the codes that occur as 1..K, keeping their order.

    Returns ``(lut, present)``: ``lut[code]`` is the new 1-based index (0 for codes that do not occur)
    and ``present`` the boolean mask of codes that occur. Monotone, so a frame sorted by code stays
    sorted by the new index.
    """
    present = np.bincount(codes, minlength=n_codes) > 0
    lut = np.cumsum(present, dtype=np.int64).astype(np.int32)
    lut[~present] = 0
    return lut, present


def category_codes(items: pl.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Categorical item columns as codes: ((n_items + 1, F) int64, each column's vocabulary size).

    ``items`` is a prepared item table (row i has item_idx i + 1). Values are compared as text and coded
    1 … n in sorted order (row 0 and missing values are 0, "unknown"), so the codes depend only on the
    table. A multi-valued cell ("37|54") is one category: the combination is what the column says.
    """
    from nextaction.data.schema import ITEM_ID, ITEM_IDX

    items = items.sort(ITEM_IDX)
    codes = np.zeros((items.height + 1, len(columns)), dtype=np.int64)
    sizes: list[int] = []
    for f, column in enumerate(columns):
        if column not in items.columns:
            known = [c for c in items.columns if c not in (ITEM_ID, ITEM_IDX)]
            raise InputError(
                f"model.categorical names {column!r}, which the item table does not have; its columns: "
                f"{', '.join(known) or 'none (pass --items FILE)'}"
            )
        text = items[column].cast(pl.String).str.strip_chars()
        values = sorted(set(text.drop_nulls().to_list()) - {""})
        lookup = {v: i + 1 for i, v in enumerate(values)}
        codes[1:, f] = [lookup.get(v, 0) if v is not None else 0 for v in text.to_list()]
        sizes.append(len(values) + 1)
    return codes, tuple(sizes)
