"""Splits: leave-one-out and temporal, on small frames built here; no-leakage properties with hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextaction.data.schema import BEHAVIOR_IDX, SPLIT, TEST, TIMESTAMP, TRAIN, USER_IDX, VALID
from nextaction.data.splits import (
    SplitConfig,
    fraction_cutoffs,
    iso_time,
    leave_one_out,
    parse_time,
    split_events,
    temporal,
)
from nextaction.errors import InputError

BEHAVIORS = ["<pad>", "view", "cart", "buy"]
VIEW, CART, BUY = 1, 2, 3


def frame(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    """(user_idx, timestamp, behavior_idx) rows → the sorted index frame."""
    df = pl.DataFrame(rows, schema=[USER_IDX, TIMESTAMP, BEHAVIOR_IDX], orient="row")
    return df.with_columns(pl.col(BEHAVIOR_IDX).cast(pl.Int8)).sort(USER_IDX, TIMESTAMP, maintain_order=True)


def codes_by_user(df: pl.DataFrame, codes: pl.Series) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for user, code in zip(df[USER_IDX].to_list(), codes.to_list(), strict=True):
        out.setdefault(user, []).append(code)
    return out


def test_leave_one_out_by_sequence_length() -> None:
    df = frame(
        [(1, 1, VIEW), (2, 1, VIEW), (2, 2, VIEW), (3, 1, VIEW), (3, 2, VIEW), (3, 3, VIEW), (3, 4, VIEW)]
    )
    codes = leave_one_out(df)
    assert codes.dtype == pl.Int8
    assert codes_by_user(df, codes) == {
        1: [TRAIN],  # one event: nothing to predict it from
        2: [TRAIN, TEST],  # two events: only a test target
        3: [TRAIN, TRAIN, VALID, TEST],
    }


def test_leave_one_out_with_target_behaviour() -> None:
    df = frame(
        [
            # user 1: buys at t=2 and t=5; events after the last buy are TEST (future), between are VALID
            (1, 1, VIEW), (1, 2, BUY), (1, 3, VIEW), (1, 4, CART), (1, 5, BUY), (1, 6, VIEW),
            # user 2: no buy at all → all TRAIN
            (2, 1, VIEW), (2, 2, CART),
            # user 3: a single buy, not first → TEST only
            (3, 1, VIEW), (3, 2, BUY), (3, 3, VIEW),
            # user 4: the earlier buy is the first event (no history) → no VALID target
            (4, 1, BUY), (4, 2, VIEW), (4, 3, BUY),
            # user 5: the only buy is the first event → nothing to predict it from
            (5, 1, BUY), (5, 2, VIEW),
        ]
    )  # fmt: skip
    codes = codes_by_user(df, leave_one_out(df, target_behavior_idx=BUY))
    assert codes == {
        1: [TRAIN, VALID, VALID, VALID, TEST, TEST],
        2: [TRAIN, TRAIN],
        3: [TRAIN, TEST, TEST],
        4: [TRAIN, TRAIN, TEST],
        5: [TRAIN, TRAIN],
    }


def test_temporal_cutoffs_are_inclusive_at_test() -> None:
    df = frame([(1, t, VIEW) for t in range(10)])
    codes = temporal(df, test_cutoff_ms=8, valid_cutoff_ms=6).to_list()
    assert codes == [TRAIN] * 6 + [VALID] * 2 + [TEST] * 2
    assert temporal(df, test_cutoff_ms=None, valid_cutoff_ms=None).to_list() == [TRAIN] * 10


def test_fraction_cutoffs() -> None:
    ts = np.arange(100, dtype=np.int64)[::-1].copy()  # order must not matter
    assert fraction_cutoffs(ts, test_fraction=0.1, valid_fraction=0.2) == (90, 70)
    assert fraction_cutoffs(ts, test_fraction=0.0, valid_fraction=0.1) == (None, 90)
    assert fraction_cutoffs(ts, test_fraction=0.1, valid_fraction=0.0) == (90, None)
    assert fraction_cutoffs(ts, test_fraction=0.1, valid_fraction=0.1, test_cutoff_ms=50) == (50, 40)


def test_split_events_auto_and_report() -> None:
    one_behaviour = frame([(1, 1, VIEW), (1, 2, VIEW), (1, 3, VIEW), (2, 5, VIEW), (2, 6, VIEW)])
    codes, info = split_events(one_behaviour, SplitConfig(), ["<pad>", "view"])
    assert info["kind"] == "leave_one_out" and info["chosen"].startswith("auto")
    assert info["events"] == {"train": 2, "valid": 1, "test": 2}
    assert info["users"] == {"train": 2, "valid": 1, "test": 2}
    assert codes.len() == one_behaviour.height

    several = frame([(u, t * 1000, 1 + t % 3) for u in (1, 2) for t in range(10)])
    codes, info = split_events(several, SplitConfig(), BEHAVIORS)
    assert info["kind"] == "temporal"
    # 20 events, two per timestamp: 10% = the 2 events at 9 s, the 10% before = the 2 events at 8 s.
    assert info["test_cutoff"] == iso_time(9000) and info["valid_cutoff"] == iso_time(8000)
    assert info["events"] == {"train": 16, "valid": 2, "test": 2}

    _, info = split_events(several, SplitConfig(target_behavior="Buy"), BEHAVIORS)
    assert info["kind"] == "leave_one_out" and info["target_behavior"] == "buy"

    codes, info = split_events(several, SplitConfig(kind="none"), BEHAVIORS)
    assert set(codes.to_list()) == {TRAIN} and info["kind"] == "none"


def test_split_events_given_cutoffs() -> None:
    df = frame([(1, t, VIEW) for t in range(0, 10_000, 1000)] + [(2, 0, CART)])
    _, info = split_events(df, SplitConfig(kind="temporal", test_cutoff=7000, valid_cutoff=5000), BEHAVIORS)
    assert info["events"] == {"train": 6, "valid": 2, "test": 3}
    assert info["test_cutoff"] == "1970-01-01T00:00:07+00:00"
    with pytest.raises(InputError, match="after the test cutoff"):
        split_events(df, SplitConfig(kind="temporal", valid_cutoff=9500, test_fraction=0.5), BEHAVIORS)
    with pytest.raises(InputError, match="not in the data"):
        split_events(df, SplitConfig(target_behavior="fav"), BEHAVIORS)


def test_split_config_validation() -> None:
    assert SplitConfig.from_dict({"kind": "temporal", "test_fraction": 0.2}).test_fraction == 0.2
    with pytest.raises(InputError, match="known: kind"):
        SplitConfig.from_dict({"knd": "temporal"})
    with pytest.raises(InputError, match="split kind"):
        SplitConfig(kind="random")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="below 1"):
        SplitConfig(test_fraction=0.6, valid_fraction=0.5)
    with pytest.raises(InputError, match="must not be after"):
        SplitConfig(test_cutoff="2020-01-01", valid_cutoff="2020-02-01")
    with pytest.raises(InputError, match="temporal split only"):
        SplitConfig(kind="leave_one_out", test_cutoff=5)


def test_parse_time() -> None:
    assert parse_time(None) is None
    assert parse_time(1234) == 1234
    assert parse_time("1234") == 1234
    assert parse_time("2017-12-01") == int(datetime(2017, 12, 1, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("2017-12-01T01:00:00+01:00") == parse_time("2017-12-01")
    with pytest.raises(InputError, match="ISO time"):
        parse_time("yesterday")


# ------------------------------------------------------------------------------------ properties

events_strategy = st.lists(
    st.tuples(st.integers(1, 6), st.integers(0, 40), st.sampled_from([VIEW, CART, BUY])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(rows=events_strategy, target=st.sampled_from([None, VIEW, BUY]))
def test_leave_one_out_targets_are_last_events(rows: list[tuple[int, int, int]], target: int | None) -> None:
    df = frame(rows)
    codes = leave_one_out(df, target_behavior_idx=target)
    for user, group in df.with_columns(codes).group_by(USER_IDX, maintain_order=True):
        splits = group[SPLIT].to_list()
        behaviors = group[BEHAVIOR_IDX].to_list()
        # Codes never go back in time: TRAIN… then VALID… then TEST….
        assert splits == sorted(splits), (user, splits)
        targets = [i for i, b in enumerate(behaviors) if target is None or b == target]
        if TEST in splits:
            test_at = splits.index(TEST)
            assert test_at == targets[-1] and test_at >= 1
        else:
            assert not targets or targets[-1] == 0
        if VALID in splits:
            valid_at = splits.index(VALID)
            assert valid_at == targets[-2] and valid_at >= 1
        else:
            assert len(targets) < 2 or targets[-2] == 0


@settings(max_examples=60, deadline=None)
@given(
    rows=events_strategy,
    test_fraction=st.floats(0, 0.5),
    valid_fraction=st.floats(0, 0.4),
)
def test_temporal_split_has_no_leakage(
    rows: list[tuple[int, int, int]], test_fraction: float, valid_fraction: float
) -> None:
    df = frame(rows)
    config = SplitConfig(kind="temporal", test_fraction=test_fraction, valid_fraction=valid_fraction)
    codes, info = split_events(df, config, BEHAVIORS)
    test_ms, valid_ms = parse_time(info["test_cutoff"]), parse_time(info["valid_cutoff"])
    ts = df[TIMESTAMP].to_numpy()
    codes_np = codes.to_numpy()
    cutoffs = [c for c in (test_ms, valid_ms) if c is not None]
    if cutoffs:
        assert (ts[codes_np == TRAIN] < min(cutoffs)).all()  # no TRAIN event at or after the valid cutoff
    if valid_ms is not None:
        assert (ts[codes_np == VALID] >= valid_ms).all()
    else:
        assert not (codes_np == VALID).any()
    if test_ms is not None:
        assert (ts[codes_np == TEST] >= test_ms).all()
        assert (ts[codes_np != TEST] < test_ms).all()
        assert (codes_np == TEST).sum() >= round(len(ts) * test_fraction)
    else:
        assert not (codes_np == TEST).any()
    assert sum(info["events"].values()) == len(ts)


def test_leave_one_out_matches_a_reference_on_a_large_frame() -> None:
    # Large enough for Polars to split the work into chunks (an earlier window-expression version gave
    # misaligned codes there only).
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(1, 3000, 60_000)).astype(np.int32)
    df = pl.DataFrame(
        {
            USER_IDX: users,
            TIMESTAMP: np.arange(users.size, dtype=np.int64),
            BEHAVIOR_IDX: rng.integers(1, 4, users.size).astype(np.int8),
        }
    )
    ends = np.cumsum(np.bincount(users))
    from_end = ends[users] - 1 - np.arange(users.size)
    starts = ends[users] - np.bincount(users)[users]
    first = np.arange(users.size) == starts
    expected = np.where(from_end == 0, TEST, np.where(from_end == 1, VALID, TRAIN))
    expected[first] = TRAIN  # a user's first event is never a target
    np.testing.assert_array_equal(leave_one_out(df).to_numpy(), expected)


def test_repeated_targets_counts_targets_that_repeat_a_history_item():
    from nextaction.data.dataset import Sequences
    from nextaction.data.schema import TEST, TRAIN, VALID
    from nextaction.data.splits import repeated_targets

    # user 0: 1 2 3 | valid 2 (a repeat) | test 4; user 1: 5 6 | valid 7 | test 5 (a repeat), then test 9
    items = np.array([1, 2, 3, 2, 4, 5, 6, 7, 5, 9])
    split = np.array([TRAIN, TRAIN, TRAIN, VALID, TEST, TRAIN, TRAIN, VALID, TEST, TEST], dtype=np.int8)
    seqs = Sequences(np.array([0, 5, 10]), items, np.ones(10, np.int8), np.arange(10) * 1000, split)
    assert repeated_targets(seqs, TEST) == {"targets": 2, "repeats": 1, "share": 0.5}
    assert repeated_targets(seqs, VALID) == {"targets": 2, "repeats": 1, "share": 0.5}


# ---- order-only logs and folds by user ----------------------------------------------------------------------


def test_a_log_without_a_clock_splits_by_position_and_refuses_a_temporal_split() -> None:
    df = frame([(1, 1000, VIEW), (1, 2000, BUY), (1, 3000, VIEW), (2, 1000, VIEW), (2, 2000, BUY)])
    codes, info = split_events(df, SplitConfig(), BEHAVIORS, clock="positions")
    assert info["kind"] == "leave_one_out" and "no clock" in info["chosen"]
    assert codes.to_list() == [TRAIN, VALID, TEST, TRAIN, TEST]
    with pytest.raises(InputError, match="no clock"):
        split_events(df, SplitConfig(kind="temporal"), BEHAVIORS, clock="positions")


def test_user_folds_from_a_file_test_one_fold_and_validate_on_the_next(tmp_path) -> None:
    from nextaction.data.prepare import read_user_folds

    df = frame([(u, t * 1000, VIEW) for u in range(1, 7) for t in range(3)])
    ids = pl.Series(["a", "b", "c", "d", "e", "f"])
    path = tmp_path / "folds.csv"
    path.write_text("user,fold\na,1\nb,2\nc,3\nd,1\ne,2\nf,3\n")
    config = SplitConfig(kind="users", folds=3, fold=3, user_folds=str(path))
    codes, info = split_events(df, config, BEHAVIORS, user_ids=ids, read_folds=read_user_folds)
    by_user = codes_by_user(df, codes)
    assert by_user[3] == by_user[6] == [TEST] * 3  # fold 3
    assert by_user[1] == by_user[4] == [VALID] * 3  # fold 3 % 3 + 1 = 1
    assert by_user[2] == by_user[5] == [TRAIN] * 3
    assert info["valid_fold"] == 1 and info["fold_source"].startswith("file")
    path.write_text("user,fold\na,1\nb,2\n")
    with pytest.raises(InputError, match="no fold for 4 users"):
        split_events(df, config, BEHAVIORS, user_ids=ids, read_folds=read_user_folds)
    path.write_text("user,fold\na,1\nb,2\nc,3\nd,1\ne,2\nf,x\n")
    with pytest.raises(InputError, match="not a whole number"):
        read_user_folds(path)


def test_shuffled_user_folds_partition_the_users_and_depend_only_on_the_seed() -> None:
    df = frame([(u, 1000, VIEW) for u in range(1, 41)])
    ids = pl.Series([f"u{u}" for u in range(1, 41)])
    seen: dict[int, int] = {}
    for fold in range(1, 6):
        codes, _ = split_events(
            df, SplitConfig(kind="users", fold=fold, fold_seed=7), BEHAVIORS, user_ids=ids
        )
        for user, c in codes_by_user(df, codes).items():
            if c == [TEST]:
                assert user not in seen
                seen[user] = fold
    assert len(seen) == 40 and sorted(np.bincount(list(seen.values()))[1:]) == [8] * 5
    again, _ = split_events(df, SplitConfig(kind="users", fold=1, fold_seed=7), BEHAVIORS, user_ids=ids)
    first, _ = split_events(df, SplitConfig(kind="users", fold=1, fold_seed=7), BEHAVIORS, user_ids=ids)
    assert again.to_list() == first.to_list()
    with pytest.raises(InputError, match="beyond folds"):
        SplitConfig(kind="users", folds=3, fold=4)
