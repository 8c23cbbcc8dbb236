from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextaction.data.schema import BEHAVIOR, DEFAULT_BEHAVIOR, ITEM_ID, TIMESTAMP, USER_ID, VALUE
from nextaction.data.synthetic import (
    CATEGORY,
    NEXT_ITEM_ID,
    TITLE,
    WEIGHT,
    SyntheticConfig,
    generate,
    synthetic,
)
from nextaction.errors import InputError

NEXT = "next"


@pytest.fixture(scope="module")
def log():
    return synthetic(n_events=60_000, seed=3)


def by_user(events: pl.DataFrame) -> pl.DataFrame:
    return events.sort([USER_ID, TIMESTAMP], maintain_order=True)


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    a, b = synthetic(n_events=5_000, seed=7), synthetic(n_events=5_000, seed=7)
    assert a.events.equals(b.events)
    assert a.items.equals(b.items)
    assert a.transitions.equals(b.transitions)
    assert not synthetic(n_events=5_000, seed=8).events.equals(a.events)


def test_schema_and_id_types(log):
    assert log.events.schema == pl.Schema(
        {USER_ID: pl.Utf8, ITEM_ID: pl.Utf8, TIMESTAMP: pl.Int64, BEHAVIOR: pl.Utf8, VALUE: pl.Float64}
    )
    assert log.items.columns[:3] == [ITEM_ID, TITLE, CATEGORY]
    assert log.items[ITEM_ID].is_unique().all()
    # Every event's item is in the item table; buys carry the item's price, other events no value.
    assert log.events.join(log.items, on=ITEM_ID, how="anti").height == 0
    assert (log.events[VALUE].is_not_null() == (log.events[BEHAVIOR] == "buy")).all()
    # The log is in time order, like a real export.
    assert log.events[TIMESTAMP].is_sorted()


@settings(max_examples=15, deadline=None)
@given(
    n_events=st.integers(1, 3_000),
    user_share=st.floats(0.0, 1.0),
    behaviors=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sizes_are_exact(n_events, user_share, behaviors, seed):
    n_users = max(1, round(user_share * n_events))
    out = synthetic(n_events=n_events, n_users=n_users, n_items=40, behaviors=behaviors, seed=seed)
    assert out.events.height == n_events
    assert out.events[USER_ID].n_unique() == n_users
    assert out.items.height == 40
    per_user = by_user(out.events).group_by(USER_ID, maintain_order=True).agg(pl.col(TIMESTAMP))
    # Timestamps strictly increase within a user, so the order of a user's events is unambiguous.
    assert all(np.all(np.diff(ts.to_numpy()) > 0) for ts in per_user[TIMESTAMP])


def test_defaults_scale_with_n_events():
    out = synthetic(n_events=20_000, seed=1)
    assert out.events[USER_ID].n_unique() == 1_000
    assert out.items.height == 400
    assert out.config.users == 1_000


def test_funnel_rates_and_buys_follow_carts_of_the_same_item(log):
    counts = dict(log.events[BEHAVIOR].value_counts().iter_rows())
    assert set(counts) == {"view", "cart", "buy"}
    assert 0.08 <= counts["cart"] / counts["view"] <= 0.16
    assert 0.3 <= counts["buy"] / counts["cart"] <= 0.5
    # Each buy comes right after a cart of the same item, each cart right after a view of it.
    ev = by_user(log.events).with_columns(
        pl.col(ITEM_ID).shift(1).over(USER_ID).alias("prev_item"),
        pl.col(BEHAVIOR).shift(1).over(USER_ID).alias("prev_behavior"),
    )
    buys = ev.filter(pl.col(BEHAVIOR) == "buy")
    carts = ev.filter(pl.col(BEHAVIOR) == "cart")
    assert (buys["prev_behavior"] == "cart").all() and (buys["prev_item"] == buys[ITEM_ID]).all()
    assert (carts["prev_behavior"] == "view").all() and (carts["prev_item"] == carts[ITEM_ID]).all()


def test_timestamps_look_like_sessions(log):
    gaps_s = (
        by_user(log.events).select((pl.col(TIMESTAMP).diff().over(USER_ID) / 1000).alias("gap")).drop_nulls()
    )["gap"]
    assert 5 <= gaps_s.median() <= 300  # seconds between events within a session
    long = (gaps_s > 3600).mean()
    assert 0.1 <= long <= 0.3  # about one gap in five starts a new session, hours to days later
    assert gaps_s.max() > 86_400


def test_planted_successors_follow_far_more_often_than_chance(log):
    views = by_user(log.events.filter(pl.col(BEHAVIOR) == "view"))
    pairs = views.select(pl.col(ITEM_ID), pl.col(ITEM_ID).shift(-1).over(USER_ID).alias(NEXT)).drop_nulls()
    planted = log.transitions.rename({NEXT_ITEM_ID: NEXT})
    hits = pairs.join(planted.select(ITEM_ID, NEXT), on=[ITEM_ID, NEXT], how="semi").height
    share = hits / pairs.height
    chance = log.config.n_successors / log.items.height
    assert share > 0.3
    assert share > 50 * chance
    # The top successor of a popular item is its most frequent next item.
    top_source = pairs[ITEM_ID].value_counts(sort=True)[ITEM_ID][0]
    most_common_next = pairs.filter(pl.col(ITEM_ID) == top_source)[NEXT].value_counts(sort=True)[NEXT][0]
    best_planted = planted.filter(pl.col(ITEM_ID) == top_source).sort(WEIGHT, descending=True)[NEXT][0]
    assert most_common_next == best_planted


def test_users_have_concentrated_tastes(log):
    with_cat = log.events.join(log.items.select(ITEM_ID, CATEGORY), on=ITEM_ID)
    per_user = (
        with_cat.group_by(USER_ID, CATEGORY)
        .len()
        .group_by(USER_ID)
        .agg((pl.col("len").max() / pl.col("len").sum()).alias("top_share"), pl.col("len").sum().alias("n"))
    )
    active = per_user.filter(pl.col("n") >= 20)
    # With 20 categories a uniform user would put ~5-15% in their top one.
    assert active["top_share"].median() > 0.35


def test_titles_carry_their_category(log):
    items = log.items.with_columns(pl.col(TITLE).str.split(" ").list.slice(2).list.join(" ").alias("noun"))
    nouns = items.group_by("noun").agg(pl.col(CATEGORY).n_unique().alias("n_cats"))
    assert (nouns["n_cats"] == 1).all()  # a noun names exactly one category
    assert items[CATEGORY].n_unique() == 20


def test_many_categories_get_invented_but_distinct_vocabulary():
    out = synthetic(n_events=2_000, n_categories=40, n_items=200, seed=0)
    assert out.items[CATEGORY].n_unique() == 40
    assert out.items[TITLE].str.len_chars().min() > 5


def test_single_behaviour_log():
    out = synthetic(n_events=3_000, behaviors=False, seed=2)
    assert out.events[BEHAVIOR].unique().to_list() == [DEFAULT_BEHAVIOR]
    assert out.events[VALUE].null_count() == 3_000


def test_write_produces_readable_csvs(tmp_path, log):
    events_path, items_path = log.write(tmp_path / "out")
    assert events_path.name == "events.csv" and items_path.name == "items.csv"
    back = pl.read_csv(events_path, schema_overrides={USER_ID: pl.Utf8, ITEM_ID: pl.Utf8})
    assert back.equals(log.events)
    assert pl.read_csv(items_path).height == log.items.height
    # No temp files are left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["events.csv", "items.csv"]


def test_config_validation():
    with pytest.raises(InputError, match="n_users"):
        synthetic(n_events=10, n_users=11)
    with pytest.raises(InputError, match="n_items"):
        synthetic(n_events=100, n_items=3, n_categories=5)
    with pytest.raises(InputError, match="follow_rate"):
        SyntheticConfig(follow_rate=1.5)
    with pytest.raises(InputError, match="n_evnets; known: n_events"):
        SyntheticConfig.from_dict({"n_events": 10, "n_evnets": 5})
    cfg = SyntheticConfig.from_dict({"n_events": 500, "follow_rate": 0.0, "behaviors": False})
    out = generate(cfg)
    assert out.events.height == 500


def test_facade_exports_synthetic():
    from nextaction import datasets

    assert datasets.synthetic is synthetic
    with pytest.raises(AttributeError):
        _ = datasets.no_such_thing
