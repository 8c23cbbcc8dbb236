"""A seeded generator of realistic event logs, for demos, tests and benchmarks.

The log is built so that every model family has something real to learn:

* **tastes** — each user has a Dirichlet mix over categories, so popularity *per user* differs from global
  popularity;
* **popularity** — items are Zipf-popular within their category;
* **sequences** — every item has a few planted successors (``SyntheticLog.transitions``) that very often come
  next within a session, so a sequence model (or item-to-item counts) beats popularity clearly;
* **revisits** — later sessions often open with an item the user saw recently, so "repeat recent" works;
* **funnel** — views are sometimes carted and carts sometimes bought (same item, seconds to minutes later);
* **time** — seconds between events within a session, hours to days between sessions;
* **text** — titles combine category nouns with shared colours/styles, so a text model can learn topics.

Everything is vectorised with numpy over all events (no per-event or per-user Python loops); the only loop
walks the successor chains one step at a time, over all chains at once (a few dozen steps).
``n_events`` and ``n_users`` are honoured exactly; the items table always has ``n_items`` rows, though the
least popular items may never occur in the events.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextaction.config import known_options
from nextaction.data.schema import BEHAVIOR, DEFAULT_BEHAVIOR, ITEM_ID, TIMESTAMP, USER_ID, VALUE
from nextaction.errors import InputError

TITLE: str = "title"
CATEGORY: str = "category"
PRICE: str = "price"
NEXT_ITEM_ID: str = "next_item_id"
WEIGHT: str = "weight"

FUNNEL: tuple[str, ...] = ("view", "cart", "buy")
_MS_PER_S = 1000
_MS_PER_DAY = 86_400_000

# Category name → nouns. Nouns are the topical signal in titles; colours and styles below are shared noise.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "shoes": ("running shoe", "sneaker", "ankle boot", "sandal", "loafer", "hiking boot"),
    "kitchen": ("frying pan", "chef knife", "cutting board", "saucepan", "mixing bowl", "kettle"),
    "books": ("novel", "cookbook", "biography", "poetry collection", "travel guide", "thriller"),
    "toys": ("building blocks", "plush bear", "puzzle", "toy car", "doll house", "kite"),
    "beauty": ("lipstick", "face cream", "mascara", "shampoo", "perfume", "nail polish"),
    "electronics": ("headphones", "phone charger", "bluetooth speaker", "smartwatch", "webcam", "keyboard"),
    "garden": ("flower pot", "garden hose", "pruning shears", "seed kit", "watering can", "rake"),
    "sports": ("yoga mat", "dumbbell", "tennis racket", "football", "jump rope", "cycling helmet"),
    "music": ("acoustic guitar", "vinyl record", "drum sticks", "ukulele", "guitar strings", "harmonica"),
    "pets": ("dog collar", "cat tree", "pet bed", "dog leash", "bird feeder", "aquarium filter"),
    "office": ("notebook", "desk lamp", "stapler", "office chair", "fountain pen", "file organizer"),
    "jewelry": ("necklace", "silver ring", "bracelet", "earrings", "pendant", "brooch"),
    "baby": ("baby stroller", "pacifier", "baby blanket", "high chair", "baby bottle", "teether"),
    "automotive": ("car wax", "floor mats", "tire inflator", "dash cam", "seat cover", "wiper blades"),
    "camping": ("tent", "sleeping bag", "camping stove", "headlamp", "water bottle", "backpack"),
    "decor": ("wall clock", "picture frame", "scented candle", "throw pillow", "vase", "table lamp"),
    "games": ("board game", "card game", "chess set", "game controller", "dice set", "jigsaw"),
    "bags": ("tote bag", "wallet", "suitcase", "messenger bag", "duffel bag", "clutch"),
    "tools": ("cordless drill", "screwdriver set", "hammer", "tape measure", "wrench", "toolbox"),
    "grocery": ("green tea", "coffee beans", "olive oil", "dark chocolate", "pasta", "honey"),
    "health": ("vitamin c", "first aid kit", "thermometer", "protein powder", "face mask", "massager"),
    "clothing": ("t-shirt", "hoodie", "denim jeans", "rain jacket", "wool sweater", "summer dress"),
    "watches": ("chronograph", "dive watch", "watch strap", "pocket watch", "field watch", "dress watch"),
    "art": ("watercolor set", "sketchbook", "oil paints", "paint brushes", "easel", "charcoal pencils"),
}
_COLOURS = (
    "crimson", "navy", "ivory", "black", "white", "olive", "teal", "amber", "silver", "rose", "slate", "coral",
)  # fmt: skip
_STYLES = (
    "classic", "vintage", "compact", "premium", "lightweight", "deluxe", "eco", "modern", "rustic", "pro",
    "handmade", "travel",
)  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ren", "to", "vu", "zar", "bel", "qui", "dor", "sen", "fa", "gri", "nox")


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """What to generate. The realism knobs below the first block rarely need changing."""

    n_events: int = 100_000
    n_users: int | None = None  # default: n_events // 20 (≈ 20 events per user)
    n_items: int | None = None  # default: max(5 per category, n_events // 50)
    n_categories: int = 20
    behaviors: bool = True  # False: one behaviour, "interact", and no funnel
    seed: int = 0

    taste_concentration: float = 0.15  # Dirichlet alpha per category; small = users stick to few topics
    zipf_exponent: float = 1.0  # item popularity within a category ∝ rank^-exponent
    n_successors: int = 3  # planted "next" items per item
    same_category_successor: float = 0.85  # share of successors drawn from the item's own category
    follow_rate: float = 0.6  # P(the next view in a session is a planted successor of the current one)
    session_break_rate: float = 0.2  # P(a view starts a new session): 5 views per session on average
    revisit_rate: float = 0.3  # P(a later session opens by revisiting one of the user's recent items)
    cart_rate: float = 0.10  # P(a view is followed by a cart of the same item)
    revisit_cart_rate: float = 0.25  # the same for revisits: people come back to buy
    buy_rate: float = 0.4  # P(a cart is followed by a buy of the same item)
    start_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z; users start within start_spread_days after
    start_spread_days: float = 60.0

    def __post_init__(self) -> None:
        def bad(what: str) -> InputError:
            return InputError(f"synthetic: {what}")

        if self.n_events < 1:
            raise bad(f"n_events must be at least 1, got {self.n_events}")
        # Tastes are a dense users × categories matrix: 200 keeps it under 1 GB at 10M events.
        if not 1 <= self.n_categories <= 200:
            raise bad(f"n_categories must be between 1 and 200, got {self.n_categories}")
        if not 1 <= self.users <= self.n_events:
            raise bad(f"n_users must be between 1 and n_events ({self.n_events}), got {self.n_users}")
        if self.items < self.n_categories:
            raise bad(f"n_items must be at least n_categories ({self.n_categories}), got {self.n_items}")
        if self.n_successors < 1:
            raise bad(f"n_successors must be at least 1, got {self.n_successors}")
        if self.taste_concentration <= 0 or self.zipf_exponent < 0 or self.start_spread_days < 0:
            raise bad("taste_concentration must be > 0; zipf_exponent and start_spread_days >= 0")
        for name in ("same_category_successor", "follow_rate", "session_break_rate", "revisit_rate",
                     "cart_rate", "revisit_cart_rate", "buy_rate"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise bad(f"{name} must be between 0 and 1, got {value}")

    @property
    def users(self) -> int:
        return self.n_users if self.n_users is not None else max(1, self.n_events // 20)

    @property
    def items(self) -> int:
        return self.n_items if self.n_items is not None else max(5 * self.n_categories, self.n_events // 50)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticConfig:
        return cls(**known_options(cls, data, "synthetic"))


@dataclass(frozen=True)
class SyntheticLog:
    """A generated log: events, the item table and the planted successors (the ground truth)."""

    events: pl.DataFrame  # USER_ID, ITEM_ID, TIMESTAMP (Int64 ms), BEHAVIOR, VALUE (price on buys) — by time
    items: pl.DataFrame  # ITEM_ID, title, category, price
    transitions: pl.DataFrame  # ITEM_ID, next_item_id, weight: P(next | a follow step), per planted pair
    config: SyntheticConfig

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``events.csv`` and ``items.csv`` into ``out_dir`` (atomically); return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return _write_csv(self.events, out / "events.csv"), _write_csv(self.items, out / "items.csv")


def synthetic(
    *,
    n_events: int = 100_000,
    n_users: int | None = None,
    n_items: int | None = None,
    n_categories: int = 20,
    behaviors: bool = True,
    seed: int = 0,
) -> SyntheticLog:
    """Generate a realistic event log; the same arguments always give identical frames.

    Use :func:`generate` with a :class:`SyntheticConfig` to change the realism knobs.
    """
    return generate(
        SyntheticConfig(
            n_events=n_events,
            n_users=n_users,
            n_items=n_items,
            n_categories=n_categories,
            behaviors=behaviors,
            seed=seed,
        )
    )


def generate(config: SyntheticConfig) -> SyntheticLog:
    rng = np.random.default_rng(config.seed)
    catalog = _Catalog.build(config, rng)
    n_users = config.users

    # 1. How many views ("slots") to draw so that views + carts + buys comes out near n_events.
    revisit_share = config.session_break_rate * config.revisit_rate
    cart = (1 - revisit_share) * config.cart_rate + revisit_share * config.revisit_cart_rate
    per_view = 1 + cart * (1 + config.buy_rate) if config.behaviors else 1.0
    n_views = min(config.n_events, max(n_users, round(config.n_events / per_view)))

    # 2. Views per user: heavy-tailed (log-normal activity), at least one each.
    activity = rng.lognormal(0.0, 1.0, n_users)
    views_per_user = 1 + rng.multinomial(n_views - n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users), views_per_user)
    user_first = np.zeros(n_views, dtype=bool)
    user_first[np.cumsum(views_per_user) - views_per_user] = True

    # 3. Sessions and revisits (a later session may open with an item seen recently).
    session_start = user_first | (rng.random(n_views) < config.session_break_rate)
    revisit = session_start & ~user_first & (rng.random(n_views) < config.revisit_rate)
    item = _draw_items(config, catalog, rng, user, session_start, revisit)

    # 4. Funnel: each view becomes 1 (view), 2 (+cart) or 3 (+buy) events; then fix the total exactly.
    if config.behaviors:
        p_cart = np.where(revisit, config.revisit_cart_rate, config.cart_rate)
        u = rng.random(n_views)
        size = 1 + (u < p_cart).astype(np.int64) + (u < p_cart * config.buy_rate)
        _fix_total(size, config.n_events, rng)
    else:
        size = np.ones(n_views, dtype=np.int64)

    # 5. Expand to events and lay them out in time.
    slot = np.repeat(np.arange(n_views), size)
    step = np.arange(config.n_events) - np.repeat(np.cumsum(size) - size, size)  # 0 view, 1 cart, 2 buy
    timestamp = _timestamps(config, rng, slot, step, user, user_first, session_start)

    ev_item = item[slot]
    if config.behaviors:
        behavior = pl.Series(BEHAVIOR, FUNNEL, dtype=pl.Utf8).gather(step)
        value = pl.Series(VALUE, np.where(step == 2, catalog.price[ev_item], np.nan)).fill_nan(None)
    else:
        behavior = pl.repeat(DEFAULT_BEHAVIOR, config.n_events, eager=True, dtype=pl.Utf8).alias(BEHAVIOR)
        value = pl.repeat(None, config.n_events, eager=True, dtype=pl.Float64).alias(VALUE)
    events = (
        pl.DataFrame(
            {
                USER_ID: user[slot] + 1,
                ITEM_ID: catalog.external[ev_item],
                TIMESTAMP: timestamp,
                BEHAVIOR: behavior,
                VALUE: value,
            }
        )
        .sort([TIMESTAMP, USER_ID], maintain_order=True)
        .with_columns(pl.format("u{}", USER_ID).alias(USER_ID), pl.format("i{}", ITEM_ID).alias(ITEM_ID))
    )
    return SyntheticLog(
        events=events, items=catalog.table(), transitions=catalog.transitions(config), config=config
    )


@dataclass(frozen=True)
class _Catalog:
    """Items in internal order: grouped by category, most popular first within each category."""

    category: np.ndarray  # (I,) category of each item
    cat_first: np.ndarray  # (C+1,) first item of each category, then I
    popularity_cdf: np.ndarray  # (I,) category + cumulative popularity within it, in (c, c + 1]
    share: np.ndarray  # (C,) category share of all popularity
    successors: np.ndarray  # (I, K) planted next items
    external: np.ndarray  # (I,) the external item number (ids are shuffled so ids say nothing)
    price: np.ndarray  # (I,)
    titles: pl.Series
    category_names: list[str]

    @classmethod
    def build(cls, config: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
        n_items, n_cats = config.items, config.n_categories
        sizes = 1 + rng.multinomial(n_items - n_cats, rng.dirichlet(np.full(n_cats, 5.0)))
        cat_first = np.concatenate([[0], np.cumsum(sizes)])
        category = np.repeat(np.arange(n_cats), sizes)
        rank = np.arange(n_items) - cat_first[category] + 1
        weight = rank ** -float(config.zipf_exponent)
        share = np.bincount(category, weight) / weight.sum()
        cdf = _grouped_cdf(weight, category, cat_first)

        # Successors come mostly from the same category, favouring (less steeply) popular items.
        k = config.n_successors
        src_cat = np.repeat(category, k)
        other = rng.choice(n_cats, size=src_cat.size, p=share)
        succ_cat = np.where(rng.random(src_cat.size) < config.same_category_successor, src_cat, other)
        succ_cdf = _grouped_cdf(np.sqrt(weight), category, cat_first)
        successors = _sample_in_category(succ_cdf, cat_first, succ_cat, rng)
        own = np.repeat(np.arange(n_items), k)
        successors = np.where(successors == own, (own + 1) % n_items, successors).reshape(n_items, k)

        cat_price = np.exp(rng.normal(3.0, 0.8, n_cats))
        price = np.round(cat_price[category] * rng.lognormal(0.0, 0.4, n_items), 2)
        names, nouns = _vocabulary(n_cats)
        noun_of = [noun for group in nouns for noun in group]
        n_nouns = np.array([len(group) for group in nouns])
        noun_idx = (np.cumsum(n_nouns) - n_nouns)[category] + rng.integers(0, n_nouns[category])
        titles = pl.select(
            pl.concat_str(
                pl.Series(_COLOURS).gather(rng.integers(0, len(_COLOURS), n_items)),
                pl.Series(_STYLES).gather(rng.integers(0, len(_STYLES), n_items)),
                pl.Series(noun_of).gather(noun_idx),
                separator=" ",
            ).alias(TITLE)
        ).to_series()
        return cls(
            category=category,
            cat_first=cat_first,
            popularity_cdf=cdf,
            share=share,
            successors=successors,
            external=rng.permutation(n_items) + 1,
            price=price,
            titles=titles,
            category_names=names,
        )

    def table(self) -> pl.DataFrame:
        return (
            pl.DataFrame(
                {
                    ITEM_ID: self.external,
                    TITLE: self.titles,
                    CATEGORY: pl.Series(self.category_names).gather(self.category),
                    PRICE: self.price,
                }
            )
            .sort(ITEM_ID)
            .with_columns(pl.format("i{}", ITEM_ID).alias(ITEM_ID))
        )

    def transitions(self, config: SyntheticConfig) -> pl.DataFrame:
        n_items, k = self.successors.shape
        return pl.DataFrame(
            {
                ITEM_ID: np.repeat(self.external, k),
                NEXT_ITEM_ID: self.external[self.successors.ravel()],
                WEIGHT: np.tile(_successor_weights(k), n_items),
            }
        ).with_columns(
            pl.format("i{}", ITEM_ID).alias(ITEM_ID), pl.format("i{}", NEXT_ITEM_ID).alias(NEXT_ITEM_ID)
        )


def _successor_weights(k: int) -> np.ndarray:
    weights = 0.5 ** np.arange(k)
    return weights / weights.sum()


def _grouped_cdf(weight: np.ndarray, group: np.ndarray, first: np.ndarray) -> np.ndarray:
    """group + cumulative share of ``weight`` within the group: one sorted array for all groups."""
    cum = np.cumsum(weight)
    before = np.concatenate([[0.0], cum])[first[:-1]]
    total = np.bincount(group, weight)
    cdf = (cum - before[group]) / total[group]
    cdf[first[1:] - 1] = 1.0  # exact group ends, whatever the rounding
    return group + cdf


def _sample_in_category(
    cdf: np.ndarray, cat_first: np.ndarray, cat: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    picked = np.searchsorted(cdf, cat + rng.random(cat.size), side="right")
    # c + r can round up to c + 1 for r just below 1: stay inside the category.
    return np.minimum(picked, cat_first[cat + 1] - 1)


def _draw_items(
    config: SyntheticConfig,
    catalog: _Catalog,
    rng: np.random.Generator,
    user: np.ndarray,
    session_start: np.ndarray,
    revisit: np.ndarray,
) -> np.ndarray:
    """The item of every view: fresh draws from the user's taste, successor chains, revisits."""
    n_users, n_cats = config.users, config.n_categories
    stream = np.flatnonzero(~revisit)  # views that are not revisits
    s_user = user[stream]
    # A chain restarts at the first non-revisit view of each session, else with P(1 - follow_rate).
    after_revisit = np.zeros(stream.size, dtype=bool)
    after_revisit[1:] = revisit[stream[1:] - 1]
    fresh = session_start[stream] | after_revisit | (rng.random(stream.size) >= config.follow_rate)

    # Fresh draws: category from the user's Dirichlet taste, then a Zipf-popular item inside it.
    taste = rng.dirichlet(np.full(n_cats, config.taste_concentration * n_cats) * catalog.share, n_users)
    user_first_cat = np.arange(n_users + 1) * n_cats
    taste_cdf = _grouped_cdf(taste.ravel(), np.repeat(np.arange(n_users), n_cats), user_first_cat)
    f_user = s_user[fresh]
    flat = _sample_in_category(taste_cdf, user_first_cat, f_user, rng)
    s_item = np.zeros(stream.size, dtype=np.int64)
    s_item[fresh] = _sample_in_category(
        catalog.popularity_cdf, catalog.cat_first, flat - f_user * n_cats, rng
    )

    # Follow the chains one step at a time, all chains together.
    k = config.n_successors
    choice = rng.choice(k, size=stream.size, p=_successor_weights(k))
    frontier = np.flatnonzero(~fresh)
    frontier = frontier[fresh[frontier - 1]]  # position 0 is always fresh (a user's first view)
    while frontier.size:
        s_item[frontier] = catalog.successors[s_item[frontier - 1], choice[frontier]]
        frontier = frontier + 1
        frontier = frontier[frontier < stream.size]
        frontier = frontier[~fresh[frontier]]

    item = np.empty(user.size, dtype=np.int64)
    item[stream] = s_item
    # A revisit repeats one of the user's last three non-revisit views (never before the user's first).
    rv = np.flatnonzero(revisit)
    ordinal = np.cumsum(~revisit) - 1  # stream position of each non-revisit view; for a revisit: of the last
    first_of_user = np.searchsorted(s_user, user[rv])
    target = np.maximum(ordinal[rv] + 1 - rng.integers(1, 4, rv.size), first_of_user)
    item[rv] = s_item[target]
    return item


def _fix_total(size: np.ndarray, n_events: int, rng: np.random.Generator) -> None:
    """Nudge funnel sizes (in place, one step per view) until they sum to exactly ``n_events``."""
    while (diff := n_events - int(size.sum())) != 0:
        room = np.flatnonzero(size < 3) if diff > 0 else np.flatnonzero(size > 1)
        picked = rng.choice(room, size=min(abs(diff), room.size), replace=False)
        size[picked] += 1 if diff > 0 else -1


def _timestamps(
    config: SyntheticConfig,
    rng: np.random.Generator,
    slot: np.ndarray,
    step: np.ndarray,
    user: np.ndarray,
    user_first: np.ndarray,
    session_start: np.ndarray,
) -> np.ndarray:
    """Gap before each event (log-normal, by kind), summed per user from the user's start time."""
    # kind: 0 within a session, 1 new session, 2 cart after view, 3 buy after cart
    kind = np.where(step > 0, step + 1, session_start[slot].astype(np.int64))
    median_s = np.array([30.0, 20 * 3600.0, 20.0, 90.0])
    sigma = np.array([1.0, 1.2, 0.8, 1.0])
    floor_s = np.array([1.0, 1800.0, 1.0, 1.0])
    gap_s = np.maximum(
        np.exp(np.log(median_s[kind]) + sigma[kind] * rng.standard_normal(kind.size)), floor_s[kind]
    )
    gap = (gap_s * _MS_PER_S).astype(np.int64)
    first_event = (step == 0) & user_first[slot]
    gap[first_event] = 0
    ev_user = user[slot]
    start = config.start_ms + (rng.random(config.users) * config.start_spread_days * _MS_PER_DAY).astype(
        np.int64
    )
    total = np.cumsum(gap)
    return total - total[np.flatnonzero(first_event)][ev_user] + start[ev_user]


def _vocabulary(n_cats: int) -> tuple[list[str], list[tuple[str, ...]]]:
    """Category names and nouns; past the built-in list, invented words keep topics distinct."""
    names = list(_CATEGORIES)[:n_cats]
    nouns = [_CATEGORIES[n] for n in names]
    n_syl = len(_SYLLABLES)
    for c in range(len(names), n_cats):
        word = "".join(_SYLLABLES[(c // n_syl**i) % n_syl] for i in range(3))
        names.append(word)
        nouns.append(tuple(f"{word} {base}" for base in ("kit", "set", "pack", "piece", "unit", "bundle")))
    return names, nouns


def _write_csv(frame: pl.DataFrame, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        frame.write_csv(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; this is an ordinary output file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
