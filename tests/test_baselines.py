from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import (
    BEHAVIOR,
    BEHAVIOR_IDX,
    ITEM_ID,
    ITEM_IDX,
    SPLIT,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_ID,
    USER_IDX,
    VALID,
    VALUE,
)
from nextaction.data.synthetic import synthetic
from nextaction.errors import InputError
from nextaction.evaluation.baselines import BASELINES, ItemToItem, MostPopular, RecentlyPopular, RepeatRecent

BEHAVIORS = ["<pad>", "view", "cart", "buy"]
VIEW, CART, BUY = 1, 2, 3
DAY = 86_400_000


def make_dataset(rows: list[tuple[int, int, int, int, int]], n_items: int) -> PreparedDataset:
    """rows: (user_idx, item_idx, behavior_idx, timestamp, split); users 1..max, items 1..n_items."""
    events = pl.DataFrame(
        rows,
        schema={
            USER_IDX: pl.Int64,
            ITEM_IDX: pl.Int64,
            BEHAVIOR_IDX: pl.Int64,
            TIMESTAMP: pl.Int64,
            SPLIT: pl.Int8,
        },
        orient="row",
    ).with_columns(pl.lit(None, dtype=pl.Float64).alias(VALUE))
    events = events.sort([USER_IDX, TIMESTAMP], maintain_order=True)
    n_users = int(events[USER_IDX].max())
    users = pl.DataFrame({USER_IDX: range(1, n_users + 1), USER_ID: [f"u{i}" for i in range(1, n_users + 1)]})
    items = pl.DataFrame({ITEM_IDX: range(1, n_items + 1), ITEM_ID: [f"i{i}" for i in range(1, n_items + 1)]})
    return PreparedDataset(events=events, users=users, items=items, behaviors=BEHAVIORS)


def seq(user: int, items: list[int], *, split: int = TRAIN, start: int = 0, behavior: int = VIEW) -> list:
    return [(user, item, behavior, start + k * 1000, split) for k, item in enumerate(items)]


def ranking(scores_row: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-scores_row, kind="stable") if i != 0]


def test_scores_have_the_protocol_shape_for_every_baseline():
    ds = make_dataset(seq(1, [1, 2, 3]) + seq(2, [2, 3, 4]), n_items=5)
    for name, cls in BASELINES.items():
        scorer = cls().fit(ds)
        assert scorer.name == name
        scores = scorer.score([np.array([1, 2]), np.array([], dtype=np.int64)], behaviors=None)
        assert scores.shape == (2, 6)
        assert scores.dtype == np.float64  # exact tie-breaks (float32 merges distinct scores)
        assert scores[:, 0].max() == -np.inf  # padding never wins
        assert np.isfinite(scores[:, 1:]).all()


def test_score_before_fit_is_a_bug_not_a_user_error():
    with pytest.raises(RuntimeError, match="before fit"):
        MostPopular().score([np.array([1])])


def test_most_popular_counts_only_training_events():
    rows = seq(1, [1, 2, 2, 3]) + seq(2, [2, 3]) + seq(3, [4, 4, 4, 4, 4], split=TEST)
    scores = MostPopular().fit(make_dataset(rows, n_items=5)).score([np.array([1])] * 3)
    assert ranking(scores[0])[:3] == [2, 3, 1]
    assert (scores == scores[0]).all()  # the same for everyone
    assert scores[0, 4] == 0  # popular only in test


def test_recently_popular_prefers_the_end_of_training_and_breaks_ties_by_all_time():
    old = seq(1, [1, 1, 1, 1, 2, 2, 2, 4], start=0)  # day 0
    new = seq(2, [3, 3, 2], start=9 * DAY + DAY // 2) + seq(3, [4, 4], start=10 * DAY)
    ds = make_dataset(old + new, n_items=5)
    # The window is the last 10% of the 10-day span (days 9-10): 3 and 4 both have two recent events; 4 wins
    # the tie on all-time counts; 2 (one recent event) comes next; 1, the all-time favourite, comes last.
    row = RecentlyPopular().fit(ds).score([np.array([1])])[0]
    assert ranking(row)[:4] == [4, 3, 2, 1]
    assert row[2] > row[1]  # 2 has one recent event, 1 none, despite 1 being top all-time
    # A 30-day window sees everything: all-time order.
    assert ranking(RecentlyPopular(days=30).fit(ds).score([np.array([1])])[0])[:2] == [1, 2]
    with pytest.raises(InputError, match="fraction"):
        RecentlyPopular(fraction=0)


def test_item_to_item_puts_the_planted_successor_first():
    rows = []
    for user in range(1, 7):  # 1 → 2 every time; 3 is the most popular item overall
        rows += seq(user, [3, 3, 1, 2, 3, 3], start=user * DAY)
    rows += seq(7, [1, 4])
    ds = make_dataset(rows, n_items=5)
    scorer = ItemToItem().fit(ds)
    scores = scorer.score([np.array([5, 1]), np.array([], dtype=np.int64), np.array([4])])
    assert ranking(scores[0])[0] == 2
    assert ranking(scores[0])[1] == 4  # 1 → 4 once
    assert ranking(scores[1])[0] == 3  # no history: popularity
    assert ranking(scores[2])[0] == 3  # 4 was never followed by anything: popularity


def test_item_to_item_ignores_repeats_of_the_same_item_and_weighs_recent_items_more():
    # view, cart, buy of 1 then 2: the transition is 1 → 2, not 1 → 1.
    rows = seq(1, [1, 1, 1, 2]) + seq(2, [3, 4]) + seq(3, [3, 4, 1, 2])
    ds = make_dataset(rows, n_items=4)
    scorer = ItemToItem(n_recent=2, decay=0.5).fit(ds)
    row = scorer.score([np.array([3, 1])])[0]  # most recent: 1 (→ 2), before it: 3 (→ 4)
    assert ranking(row)[:2] == [2, 4]
    assert row[1] < row[4]  # 1 never follows 1
    # Events outside TRAIN are never learned from.
    test_only = make_dataset(seq(1, [1, 2]) + seq(2, [1, 3, 3], split=TEST), n_items=3)
    assert ranking(ItemToItem().fit(test_only).score([np.array([1])])[0])[0] == 2


def test_repeat_recent_orders_own_items_by_behaviour_then_recency():
    rows = seq(1, [4, 4, 4, 4]) + seq(2, [1, 2, 3])
    ds = make_dataset(rows, n_items=5)
    scorer = RepeatRecent(decay=0.9).fit(ds)
    history = [np.array([1, 2, 3, 3])]
    behaviors = [np.array([BUY, CART, VIEW, VIEW])]
    row = scorer.score(history, behaviors=behaviors)[0]
    # 1 bought (3 × 0.9³ ≈ 2.19), 3 viewed twice recently (0.9 + 1 = 1.9), 2 carted (2 × 0.9² = 1.62).
    assert ranking(row)[:3] == [1, 3, 2]
    assert ranking(row)[3] == 4  # then the popular items the user has not touched
    # Without behaviours everything counts as a view: recency and frequency only.
    assert ranking(scorer.score(history)[0])[:3] == [3, 2, 1]


def test_a_validation_target_is_not_learned_from():
    rows = [*seq(1, [1, 2]), (1, 5, VIEW, 5000, VALID), (1, 5, VIEW, 6000, TEST)]
    ds = make_dataset(rows, n_items=5)
    for cls in BASELINES.values():
        row = cls().fit(ds).score([np.array([1])])[0]
        assert row[5] < row[2], cls.name  # strictly: a leaked count would tie item 5 with item 2


def index_and_split(events: pl.DataFrame) -> PreparedDataset:
    """A minimal stand-in for prepare(): dense indices and a leave-one-out split."""
    behaviors = ["<pad>", *sorted(events[BEHAVIOR].unique().to_list())]
    ev = events.with_columns(
        pl.col(USER_ID).rank("dense").cast(pl.Int64).alias(USER_IDX),
        pl.col(ITEM_ID).rank("dense").cast(pl.Int64).alias(ITEM_IDX),
        pl.col(BEHAVIOR)
        .replace_strict({b: i for i, b in enumerate(behaviors)}, return_dtype=pl.Int64)
        .alias(BEHAVIOR_IDX),
    ).sort([USER_IDX, TIMESTAMP], maintain_order=True)
    from_end = pl.int_range(pl.len()).reverse().over(USER_IDX)
    n = pl.len().over(USER_IDX)
    ev = ev.with_columns(
        pl.when((from_end == 0) & (n >= 2))
        .then(TEST)
        .when((from_end == 1) & (n >= 3))
        .then(VALID)
        .otherwise(TRAIN)
        .cast(pl.Int8)
        .alias(SPLIT)
    )
    users = ev.group_by(USER_IDX).agg(pl.col(USER_ID).first()).sort(USER_IDX)
    items = ev.group_by(ITEM_IDX).agg(pl.col(ITEM_ID).first()).sort(ITEM_IDX)
    return PreparedDataset(
        events=ev.select(USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, VALUE, SPLIT),
        users=users.select(USER_IDX, USER_ID),
        items=items.select(ITEM_IDX, ITEM_ID),
        behaviors=behaviors,
    )


def hit_rate_at_10(scorer, ds: PreparedDataset) -> float:
    seqs = ds.seqs
    histories, behaviors, targets = [], [], []
    for u in range(1, seqs.n_users):
        s = seqs.of(u)
        test = np.flatnonzero(seqs.split[s] == TEST)
        if test.size:
            t = test[0]
            histories.append(seqs.items[s][:t])
            behaviors.append(seqs.behaviors[s][:t])
            targets.append(seqs.items[s][t])
    scores = scorer.fit(ds).score(histories, behaviors=behaviors)
    top = np.argsort(-scores, axis=1)[:, :10]
    return float(np.mean([t in row for t, row in zip(targets, top, strict=True)]))


def test_on_synthetic_logs_sequence_and_repeat_signals_beat_popularity():
    single = index_and_split(synthetic(n_events=20_000, behaviors=False, seed=5).events)
    pop, i2i = hit_rate_at_10(MostPopular(), single), hit_rate_at_10(ItemToItem(), single)
    assert i2i > 2 * pop and i2i > 0.2, (pop, i2i)
    multi = index_and_split(synthetic(n_events=20_000, seed=5).events)
    pop, repeat = hit_rate_at_10(MostPopular(), multi), hit_rate_at_10(RepeatRecent(), multi)
    assert repeat > 2 * pop, (pop, repeat)


def test_tie_breaks_survive_large_counts():
    """Two items with 20,000 recent events each and all-time counts 1 apart: in float32 the tie-break
    (all-time / (max + 1) < 1, added to 20,000) vanishes and pessimistic ranking charges the baseline a tie;
    in float64 the busier item stays strictly ahead."""
    recent = [(1 + u % 50, item, VIEW, 10_000 + u, TRAIN) for item in (1, 2) for u in range(20_000)]
    old = [(1 + u % 50, 1, VIEW, u % 100, TRAIN) for u in range(3)]  # item 1: one more old event …
    old += [(1 + u % 50, 2, VIEW, u % 100, TRAIN) for u in range(2)]
    ds = make_dataset(recent + old + seq(51, [3], start=0), n_items=3)
    row = RecentlyPopular(fraction=0.5).fit(ds).score([np.array([3])])[0]
    assert row[1] > row[2] > row[3]
    assert ranking(MostPopular().fit(ds).score([np.array([3])])[0])[:2] == [1, 2]
