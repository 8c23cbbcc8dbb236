"""prepare(): every step, the row accounting, determinism, pseudonymisation and strict mode.

The reader is stood in for by a small dataclass with the documented ReadResult attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from nextaction.data.dataset import PreparedDataset
from nextaction.data.prepare import prepare, report_table
from nextaction.data.prepare_config import (
    BehaviorConfig,
    DedupConfig,
    FilterConfig,
    MissingConfig,
    PrepareConfig,
    PseudonymConfig,
    ValueRule,
    parse_pairs,
)
from nextaction.data.schema import (
    BEHAVIOR,
    BEHAVIOR_IDX,
    DEFAULT_BEHAVIOR,
    ITEM_ID,
    ITEM_IDX,
    LINE,
    RAW,
    REASON,
    SPLIT,
    TIMESTAMP,
    USER_ID,
    USER_IDX,
    VALUE,
)
from nextaction.data.splits import SplitConfig
from nextaction.data.vocab import HMAC_KEY_ENV
from nextaction.errors import InputError

COLUMNS = {USER_ID: pl.Utf8, ITEM_ID: pl.Utf8, TIMESTAMP: pl.Int64, BEHAVIOR: pl.Utf8, VALUE: pl.Float64}
REJECT_SCHEMA = {LINE: pl.Int64, REASON: pl.Utf8, RAW: pl.Utf8}


@dataclass(frozen=True)
class FakeRead:
    """Stands in for readers.ReadResult."""

    events: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECT_SCHEMA))
    rows_read: int = 0
    items: pl.DataFrame | None = None
    source: str | Path | None = "events.csv"


def read_of(rows: list[dict[str, Any]], *, rejects: list[tuple[int, str, str]] = (), **kw: Any) -> FakeRead:
    """Rows as dicts (missing keys are nulls); LINE numbers follow the row order, after the rejects' lines."""
    first_line = 1 + max((r[0] for r in rejects), default=0)
    events = pl.DataFrame(
        [{c: row.get(c) for c in COLUMNS} for row in rows], schema=COLUMNS, orient="row"
    ).with_row_index(LINE, offset=first_line)
    events = events.with_columns(pl.col(LINE).cast(pl.Int64))
    reject_frame = pl.DataFrame(list(rejects), schema=REJECT_SCHEMA, orient="row")
    return FakeRead(events=events, rejects=reject_frame, rows_read=events.height + reject_frame.height, **kw)


def ev(
    user: str | None,
    item: str | None,
    ts: int | None,
    behavior: str | None = "view",
    value: float | None = None,
) -> dict[str, Any]:
    return {USER_ID: user, ITEM_ID: item, TIMESTAMP: ts, BEHAVIOR: behavior, VALUE: value}


def random_log(n: int, *, seed: int = 0, n_users: int = 30, n_items: int = 40) -> FakeRead:
    rng = np.random.default_rng(seed)
    rows = [
        ev(
            f"user{rng.integers(n_users)}" if rng.random() > 0.02 else None,
            f"item{rng.zipf(1.5) % n_items}" if rng.random() > 0.02 else None,
            int(rng.integers(0, 50)) * 1000 if rng.random() > 0.02 else None,
            str(rng.choice(["pv", "Click", "cart", "buy", "transaction"])) if rng.random() > 0.05 else None,
            float(rng.integers(1, 6)) if rng.random() > 0.5 else None,
        )
        for _ in range(n)
    ]
    rows += rows[: n // 10]  # exact duplicates
    return read_of(rows, rejects=[(1, "unparseable timestamp 'x'", "u,i,x")])


def check_accounting(read: Any, report: dict[str, Any]) -> None:
    rows = report["rows"]
    assert rows["read"] == read.rows_read
    assert rows["read"] == rows["kept"] + rows["rejected"] + rows["duplicates"] + rows["filtered"]
    assert sum(report["rejected_by_reason"].values()) == rows["rejected"]
    assert sum(report["filtered_by_step"].values()) == rows["filtered"]
    assert sum(report["duplicates_by_kind"].values()) == rows["duplicates"]
    assert sum(report["behaviors"].values()) == rows["kept"]


def check_dataset(ds: PreparedDataset) -> None:
    """Structural invariants of any prepared dataset."""
    events = ds.events
    assert events.columns == [USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, VALUE, SPLIT]
    assert ds.users[USER_IDX].to_list() == list(range(1, ds.n_users + 1))
    assert ds.items[ITEM_IDX].to_list() == list(range(1, ds.n_items + 1))
    assert ds.behaviors[0] == "<pad>"
    # Every index in use, none out of range, 0 never used.
    assert set(events[USER_IDX].unique()) == set(range(1, ds.n_users + 1))
    assert set(events[ITEM_IDX].unique()) == set(range(1, ds.n_items + 1))
    assert set(events[BEHAVIOR_IDX].unique()) == set(range(1, len(ds.behaviors)))
    assert events.equals(events.sort(USER_IDX, TIMESTAMP, maintain_order=True))
    assert ds.seqs.offsets[-1] == events.height


# ------------------------------------------------------------------------------------------ accounting


def test_accounting_on_a_generated_log() -> None:
    read = random_log(400)
    config = PrepareConfig(
        dedup=DedupConfig(window_seconds=2),
        filters=FilterConfig(min_user_events=3, min_item_events=2, max_seq_len=15),
        behaviors=BehaviorConfig(keep=("view", "cart", "buy")),
    )
    result = prepare(read, config=config)
    report = result.dataset.report
    check_accounting(read, report)
    check_dataset(result.dataset)
    rows = report["rows"]
    assert rows["rejected"] == result.rejects.height > 1
    assert rows["duplicates"] > 20 and rows["filtered"] > 0  # 40 copies, minus rejected and clicks
    assert report["filtered_by_step"]["behavior_whitelist"] > 0  # the clicks
    assert set(result.dataset.behaviors) == {"<pad>", "view", "cart", "buy"}
    assert result.rejects[LINE].is_sorted() and result.rejects[LINE][0] == 1


row_strategy = st.fixed_dictionaries(
    {
        USER_ID: st.sampled_from(["u1", "u2", "u3", "u4", None]),
        ITEM_ID: st.sampled_from(["a", "b", "c", "d", None]),
        TIMESTAMP: st.one_of(st.none(), st.integers(0, 6).map(lambda t: t * 1000)),
        BEHAVIOR: st.sampled_from(["pv", "buy", "Cart", "click", None]),
        VALUE: st.sampled_from([None, 1.0, 5.0]),
    }
)
config_strategy = st.builds(
    lambda window, k_user, k_item, max_len, keep, policy: PrepareConfig(
        dedup=DedupConfig(window_seconds=window),
        filters=FilterConfig(min_user_events=k_user, min_item_events=k_item, max_seq_len=max_len),
        behaviors=BehaviorConfig(keep=keep),
        missing=MissingConfig(behavior=policy, value=policy.replace("default", "keep")),
    ),
    st.sampled_from([None, 0, 1.5]),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([None, 2, 5]),
    st.sampled_from([None, ("view",), ("buy", "cart")]),
    st.sampled_from(["drop", "default"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_strategy, min_size=1, max_size=40), config=config_strategy)
def test_accounting_identity_holds_for_any_log(rows: list[dict[str, Any]], config: PrepareConfig) -> None:
    read = read_of(rows, rejects=[(1, "bad line", "x")])
    try:
        result = prepare(read, config=config)
    except InputError as e:
        assert "no usable events" in str(e) or "no events left" in str(e)
        return
    check_accounting(read, result.dataset.report)
    check_dataset(result.dataset)
    k_user = max(config.filters.min_user_events, 1)
    counts = np.bincount(result.dataset.events[USER_IDX].to_numpy())[1:]
    assert counts.min() >= k_user
    if config.filters.max_seq_len:
        assert counts.max() <= config.filters.max_seq_len


# ------------------------------------------------------------------------------------------ missing values


def test_missing_value_defaults() -> None:
    read = read_of(
        [
            ev("u1", "a", 1000, "view", 3.0),
            ev(None, "a", 2000),
            ev("u1", None, 3000),
            ev("u1", "b", None),
            ev("u1", "c", 4000, None),  # behaviour default: interact
            ev("u2", "a", 5000, "view", None),  # value stays null
            ev(None, None, None),  # the first missing column names the reason
        ]
    )
    result = prepare(read)
    report = result.dataset.report
    assert report["rejected_by_reason"] == {
        "missing user_id": 2,
        "missing item_id": 1,
        "missing timestamp": 1,
    }
    assert result.rejects[LINE].to_list() == [2, 3, 4, 7]
    assert result.rejects[RAW][0] == ",a,2000,view,"
    assert report["filled"] == {BEHAVIOR: 1}
    assert DEFAULT_BEHAVIOR in result.dataset.behaviors
    assert result.dataset.events[VALUE].null_count() == 2
    check_accounting(read, report)


def test_blank_behaviour_counts_as_missing() -> None:
    ds = prepare(read_of([ev("u1", "a", 1, "  "), ev("u1", "b", 2, "pv")])).dataset
    assert ds.behaviors == ["<pad>", DEFAULT_BEHAVIOR, "view"] and ds.report["filled"] == {BEHAVIOR: 1}


def test_missing_value_fill_and_drop_policies() -> None:
    read = read_of([ev(None, None, None, None, None), ev("u1", "a", 5, "pv", 2.0)])
    config = PrepareConfig(
        missing=MissingConfig(
            user_id="fill:anonymous",
            item_id="fill:unknown",
            timestamp="fill:2020-01-01",
            behavior="fill:PV",
            value="fill:0.5",
        )
    )
    result = prepare(read, config=config)
    ds = result.dataset
    assert result.rejects.height == 0
    assert ds.report["filled"] == {USER_ID: 1, ITEM_ID: 1, TIMESTAMP: 1, BEHAVIOR: 1, VALUE: 1}
    assert ds.users[USER_ID].to_list() == ["anonymous", "u1"]
    assert ds.items[ITEM_ID].to_list() == ["a", "unknown"]
    assert ds.behaviors == ["<pad>", "view"]  # the fill value is renamed like any other
    filled = ds.events.filter(pl.col(USER_IDX) == 1).row(0, named=True)
    assert filled[TIMESTAMP] == 1_577_836_800_000 and filled[VALUE] == 0.5

    drop_both = PrepareConfig(missing=MissingConfig(behavior="drop", value="drop"))
    dropped = prepare(read_of([ev("u1", "a", 5, None, None), ev("u1", "b", 6, "pv", 1.0)]), config=drop_both)
    assert dropped.dataset.report["rejected_by_reason"] == {"missing behavior": 1}


def test_cli_string_forms() -> None:
    assert MissingConfig.parse("behavior=drop, value = fill:0") == MissingConfig(
        behavior="drop", value="fill:0"
    )
    assert parse_pairs("pv=view,clk = click,", "alias") == {"pv": "view", "clk": "click"}
    with pytest.raises(InputError, match="name=value"):
        parse_pairs("pv:view", "alias")
    with pytest.raises(InputError, match="known: user_id"):
        MissingConfig.parse("usr=drop")


@pytest.mark.parametrize(
    ("field_name", "policy"),
    [
        ("user_id", "default"),
        ("timestamp", "keep"),
        ("behavior", "keep"),
        ("value", "fill:abc"),
        ("item_id", "fill:"),
    ],
)
def test_bad_missing_policies(field_name: str, policy: str) -> None:
    with pytest.raises(InputError, match=f"policy for {field_name}"):
        MissingConfig(**{field_name: policy})


# ------------------------------------------------------------------------------------------ behaviours


def test_behaviour_aliases_and_user_map() -> None:
    names = [
        "pv",
        "Click",
        "clicks",
        "addtocart",
        "Add-To-Cart",
        "carts",
        "transaction",
        "orders",
        "favorite",
        "odd",
    ]
    read = read_of([ev("u1", f"i{k}", k * 1000, name) for k, name in enumerate(names)])
    ds = prepare(read).dataset
    assert ds.report["behaviors"] == {"cart": 3, "buy": 2, "click": 2, "fav": 1, "odd": 1, "view": 1}
    # Ties by name after descending counts.
    assert ds.behaviors == ["<pad>", "cart", "buy", "click", "fav", "odd", "view"]
    assert ds.report["behavior_mapping"]["Add-To-Cart"] == "cart"

    custom = BehaviorConfig(aliases={"pv": "page", "ODD": "view"})
    ds = prepare(read, config=PrepareConfig(behaviors=custom)).dataset
    assert ds.report["behaviors"]["page"] == 1 and ds.report["behaviors"]["view"] == 1

    raw = prepare(read, config=PrepareConfig(behaviors=BehaviorConfig(builtin_aliases=False))).dataset
    assert "pv" in raw.behaviors and "add_to_cart" in raw.behaviors and "addtocart" in raw.behaviors


def test_behaviour_whitelist_counts() -> None:
    read = read_of(
        [ev("u1", "a", 1, "pv"), ev("u1", "b", 2, "buy"), ev("u1", "c", 3, "fav"), ev("u2", "a", 4, "fav")]
    )
    ds = prepare(read, config=PrepareConfig(behaviors=BehaviorConfig(keep=["View", "buy"]))).dataset
    assert ds.report["filtered_by_step"]["behavior_whitelist"] == 2
    assert ds.report["rows"]["filtered"] == 2 and ds.n_users == 1
    assert ds.behaviors == ["<pad>", "buy", "view"]


def test_value_rule_parse_and_apply() -> None:
    rule = ValueRule.parse("value>=4:like, value < 2 : Dislike ,else:watch")
    assert str(rule) == "value>=4:like,value<2:dislike,else:watch"
    assert ValueRule.parse(str(rule)) == rule
    read = read_of(
        [ev("u1", "a", 1, "rate", 5.0), ev("u1", "b", 2, "rate", 1.0), ev("u1", "c", 3, "rate", 3.0),
         ev("u1", "d", 4, "view", None)]
    )  # fmt: skip
    config = PrepareConfig.from_dict(
        {"behaviors": {"value_rule": "value>=4:like,value<2:dislike,else:watch"}}
    )
    ds = prepare(read, config=config).dataset
    names = [ds.behaviors[b] for b in ds.events[BEHAVIOR_IDX].to_list()]
    assert names == ["like", "dislike", "watch", "view"]  # no value: the behaviour stays

    only_high = PrepareConfig(behaviors=BehaviorConfig(value_rule=ValueRule.parse("value>4:like")))
    ds = prepare(read, config=only_high).dataset
    assert [ds.behaviors[b] for b in ds.events[BEHAVIOR_IDX].to_list()] == ["like", "rate", "rate", "view"]

    for bad in (
        "value>>4:like",
        "rating>=4:like",
        "else:watch",
        "value>=four:like",
        "value>=4:like,else:a,else:b",
    ):
        with pytest.raises(InputError, match="value rule"):
            ValueRule.parse(bad)


# ------------------------------------------------------------------------------------------ de-duplication


def test_exact_duplicates_keep_the_first_line() -> None:
    read = read_of(
        [
            ev("u1", "a", 1000, "view", 1.0),
            ev("u1", "b", 1000, "view", 1.0),
            ev("u1", "a", 1000, "view", 1.0),  # duplicate of line 1
            ev("u1", "a", 1000, "view", 2.0),  # other value: kept
            ev("u1", "a", 1000, "pv", 1.0),  # pv == view after renaming: duplicate
            ev("u1", "a", 2000, "view", 1.0),  # other time: kept
            ev("u2", "a", 1000, "view", 1.0),  # other user: kept
        ]
    )
    ds = prepare(read, config=PrepareConfig(split=SplitConfig(kind="none"))).dataset
    assert ds.report["duplicates_by_kind"] == {"exact": 2, "window": 0}
    assert ds.report["rows"]["duplicates"] == 2 and ds.events.height == 5
    # The survivors are in (user, time, line) order: a(1.0), b, a(2.0), a@2000.
    assert ds.events.filter(pl.col(USER_IDX) == 1)[ITEM_IDX].to_list() == [1, 2, 1, 1]
    assert ds.events.filter(pl.col(USER_IDX) == 1)[VALUE].to_list() == [1.0, 1.0, 2.0, 1.0]

    off = prepare(read, config=PrepareConfig(dedup=DedupConfig(exact=False))).dataset
    assert off.events.height == 7 and off.report["rows"]["duplicates"] == 0


def test_window_dedup_keeps_the_first_of_a_burst() -> None:
    read = read_of(
        [
            ev("u1", "a", 0),
            ev("u1", "a", 20_000),  # 20 s after the previous: repeat
            ev("u1", "b", 30_000),
            ev("u1", "a", 50_000),  # 30 s after the previous a: repeat (bursts chain)
            ev("u1", "a", 200_000),  # 150 s later: kept
            ev("u1", "a", 210_000, "buy"),  # another behaviour: kept
            ev("u2", "a", 10_000),  # another user: kept
        ]
    )
    ds = prepare(read, config=PrepareConfig(dedup=DedupConfig(window_seconds=60))).dataset
    assert ds.report["duplicates_by_kind"] == {"exact": 0, "window": 2}
    user1 = ds.events.filter(pl.col(USER_IDX) == 1)
    assert user1[TIMESTAMP].to_list() == [0, 30_000, 200_000, 210_000]
    check_accounting(read, ds.report)


# ------------------------------------------------------------------------------------------ filters


def test_k_core_is_iterated_until_stable() -> None:
    # u1 and u2 share a and b (a 2-core); u3 is attached through c, which only u3 and u4 have. Removing
    # u4 (1 event) drops c below 2, which drops u3 below 2, and so on.
    rows = [
        ev("u1", "a", 1), ev("u1", "b", 2), ev("u2", "a", 3), ev("u2", "b", 4),
        ev("u3", "c", 5), ev("u3", "a", 6), ev("u4", "c", 7),
    ]  # fmt: skip
    read = read_of(rows)
    ds = prepare(
        read, config=PrepareConfig(filters=FilterConfig(min_user_events=2, min_item_events=2))
    ).dataset
    assert ds.users[USER_ID].to_list() == ["u1", "u2"]
    assert ds.report["filtered_by_step"]["k_core"] == 3
    assert ds.report["k_core_rounds"] >= 2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 4))
def test_k_core_result_is_a_k_core(seed: int, k: int) -> None:
    read = random_log(300, seed=seed, n_users=25, n_items=30)
    config = PrepareConfig(
        filters=FilterConfig(min_user_events=k, min_item_events=k), split=SplitConfig(kind="none")
    )
    try:
        ds = prepare(read, config=config).dataset
    except InputError as e:
        assert "no events left" in str(e)
        return
    assert np.bincount(ds.events[USER_IDX].to_numpy())[1:].min() >= k
    assert np.bincount(ds.events[ITEM_IDX].to_numpy())[1:].min() >= k
    check_accounting(read, ds.report)


def test_sequence_length_filters() -> None:
    rows = [ev("u1", f"i{t}", t) for t in range(10)] + [ev("u2", "x", 1), ev("u2", "y", 2)]
    config = PrepareConfig(filters=FilterConfig(max_seq_len=4, min_seq_len=3))
    ds = prepare(read_of(rows), config=config).dataset
    assert ds.report["filtered_by_step"] == {
        "behavior_whitelist": 0,
        "max_seq_len": 6,
        "k_core": 0,
        "min_seq_len": 2,
    }
    assert ds.events[TIMESTAMP].to_list() == [6, 7, 8, 9]  # the most recent four
    assert ds.report["sequence_length"]["max"] == 4


def test_nothing_left_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no events left"):
        prepare(read_of([ev("u1", "a", 1)]), config=PrepareConfig(filters=FilterConfig(min_user_events=5)))
    with pytest.raises(InputError, match="no usable events"):
        prepare(read_of([ev(None, "a", 1)]))


# ------------------------------------------------------------------------------------------ vocabularies


def test_vocabularies_are_sorted_and_independent_of_row_order() -> None:
    rows = [ev("u10", "b", 3), ev("u9", "a", 1), ev("u10", "c", 2), ev("u9", "c", 5), ev("u2", "b", 4)]
    ds = prepare(read_of(rows)).dataset
    assert ds.users[USER_ID].to_list() == ["u10", "u2", "u9"]  # string order
    assert ds.items[ITEM_ID].to_list() == ["a", "b", "c"]
    shuffled = prepare(read_of(rows[::-1])).dataset
    assert shuffled.events.equals(ds.events)
    assert ds.user_index() == {"u10": 1, "u2": 2, "u9": 3}


def _files(ds: PreparedDataset, rejects: pl.DataFrame, out: Path) -> dict[str, bytes]:
    ds.save(out, rejects=rejects)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_determinism_byte_identical_outputs(tmp_path: Path) -> None:
    read = random_log(300, seed=3)
    config = PrepareConfig(filters=FilterConfig(min_user_events=2))
    first = prepare(read, config=config)
    second = prepare(random_log(300, seed=3), config=config)
    a = _files(first.dataset, first.rejects, tmp_path / "a")
    b = _files(second.dataset, second.rejects, tmp_path / "b")
    assert a.keys() == b.keys() and {"events.parquet", "seq_items.npy", "report.json"} <= a.keys()
    for name in a:
        assert a[name] == b[name], name


# ------------------------------------------------------------------------------------------ pseudonymisation


def test_pseudonymised_user_ids_never_reach_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw_ids = ["alice.raw.7f3e", "bob.raw.91ac"]
    read = read_of(
        [ev(raw_ids[0], "a", 1), ev(raw_ids[0], "b", 2), ev(raw_ids[1], "a", 3), ev(raw_ids[1], None, 4)],
        rejects=[(1, "unparseable timestamp 'soon'", f"{raw_ids[1]},a,soon")],
    )
    monkeypatch.setenv(HMAC_KEY_ENV, "test-secret-key")
    config = PrepareConfig(pseudonymize=PseudonymConfig(enabled=True, hex_chars=12))
    result = prepare(read, config=config)
    ds = result.dataset
    assert all(len(u) == 12 and u not in raw_ids for u in ds.users[USER_ID].to_list())
    assert result.rejects.height == 2 and result.rejects[RAW].null_count() == 2
    out = ds.save(tmp_path / "data", rejects=result.rejects)
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for raw in raw_ids:
        assert raw.encode() not in written
        assert raw.split(".")[0].encode() not in written
    assert b"test-secret-key" not in written
    # Parquet may compress strings, so also look at the decoded values.
    for table in out.glob("*.parquet"):
        cells = pl.read_parquet(table).cast(pl.Utf8).unpivot(variable_name="column", value_name="cell")
        values = cells["cell"].to_list()
        assert not set(values) & set(raw_ids), table.name

    # Same key → same pseudonyms; another key → others.
    again = prepare(read, config=config).dataset
    assert again.users.equals(ds.users)
    other = PrepareConfig(pseudonymize=PseudonymConfig(enabled=True, key="another-key", hex_chars=12))
    assert set(prepare(read, config=other).dataset.users[USER_ID]).isdisjoint(ds.users[USER_ID])
    assert prepare(read, config=other).dataset.report["config"]["pseudonymize"]["key"] == "<set>"


def test_pseudonymisation_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)
    with pytest.raises(InputError, match=HMAC_KEY_ENV):
        prepare(read_of([ev("u1", "a", 1)]), config=PrepareConfig(pseudonymize=PseudonymConfig(enabled=True)))


# ------------------------------------------------------------------------------------------ strict mode


def test_strict_mode_names_the_first_rejected_line() -> None:
    read = read_of([ev("u1", "a", 1), ev("u1", None, 2), ev(None, "a", 3)], rejects=[(2, "bad quote", '"x')])
    with pytest.raises(InputError) as info:
        prepare(read, config=PrepareConfig(strict=True))
    message = str(info.value)
    assert message.startswith("events.csv:2: bad quote") and "3 rejected rows in total" in message
    assert info.value.line == 2
    clean = read_of([ev("u1", "a", 1), ev("u1", "b", 2)])
    assert prepare(clean, config=PrepareConfig(strict=True)).dataset.events.height == 2


# ------------------------------------------------------------------------------------------ items


def test_item_table_join() -> None:
    rows = [ev("u1", "a", 1), ev("u1", "b", 2), ev("u2", "c", 3)]
    table = pl.DataFrame({ITEM_ID: ["b", "a", "z", "a", None], "title": ["B", "A", "Z", "A again", "?"]})
    ds = prepare(read_of(rows), items=table).dataset
    assert ds.items.columns == [ITEM_IDX, ITEM_ID, "title"]
    assert ds.items["title"].to_list() == ["A", "B", None]  # first row per id wins; c has no features
    info = ds.report["items_table"]
    assert info["not_in_events"] == 1 and info["duplicate_ids"] == 1 and info["without_item_id"] == 1
    assert info["indexed_without_features"] == 1 and ds.report["items"] == 3

    from_reader = prepare(read_of(rows, items=table.head(1))).dataset
    assert from_reader.items["title"].to_list() == [None, "B", None]
    explicit = prepare(read_of(rows, items=table.head(1)), items=table.slice(1, 1)).dataset
    assert explicit.items["title"].to_list() == ["A", None, None]

    with pytest.raises(InputError, match="no item_id column"):
        prepare(read_of(rows), items=pl.DataFrame({"id": ["a"]}))


# ------------------------------------------------------------------------------ split, report, config


def test_default_split_depends_on_behaviour_types() -> None:
    one = prepare(read_of([ev("u1", "a", t * 1000) for t in range(5)])).dataset
    assert one.report["split"]["kind"] == "leave_one_out"
    assert one.events[SPLIT].to_list() == [0, 0, 0, 1, 2]
    several = prepare(random_log(200)).dataset
    assert several.report["split"]["kind"] == "temporal"
    assert several.report["split"]["test_cutoff"] is not None


def test_report_keys_and_table() -> None:
    read = random_log(100)
    report = prepare(read).dataset.report
    for key in ("rows", "rejected_by_reason", "filled", "filtered_by_step", "users", "items", "behaviors",
                "time_span", "sequence_length", "split", "config", "source"):  # fmt: skip
        assert key in report, key
    assert set(report["rows"]) == {"read", "rejected", "duplicates", "filtered", "kept"}
    assert set(report["sequence_length"]) == {"min", "p25", "p50", "p75", "p90", "p99", "max", "mean"}
    assert report["time_span"]["min"] == "1970-01-01T00:00:00+00:00"
    json.dumps(report)  # JSON-ready as is
    console = Console(record=True, width=100)
    console.print(report_table(report))
    text = console.export_text()
    assert "kept" in text and "temporal" in text and f"{report['rows']['kept']:,}" in text


def test_progress_gets_one_line_per_step() -> None:
    lines: list[str] = []
    prepare(random_log(50), progress=lines.append)
    assert any(line.startswith("missing values") for line in lines)
    assert any(line.startswith("split:") for line in lines)


def test_config_from_dict_is_strict() -> None:
    config = PrepareConfig.from_dict(
        {
            "missing": {"behavior": "drop"},
            "behaviors": {"aliases": {"x": "y"}, "keep": ["view"], "value_rule": "value>3:like"},
            "dedup": {"window_seconds": 30},
            "filters": {"min_user_events": 5},
            "split": {"kind": "temporal"},
            "pseudonymize": {"enabled": False},
            "strict": True,
        }
    )
    assert config.filters.min_user_events == 5 and config.split.kind == "temporal"
    assert config.behaviors.value_rule == ValueRule.parse("value>3:like")
    assert config.to_dict()["behaviors"]["value_rule"] == "value>3:like"
    with pytest.raises(InputError, match="known: missing, behaviors"):
        PrepareConfig.from_dict({"misssing": {}})
    with pytest.raises(InputError, match="known: min_user_events"):
        PrepareConfig.from_dict({"filters": {"k": 5}})
    with pytest.raises(InputError, match="integer"):
        FilterConfig(min_user_events=-1)
    with pytest.raises(InputError, match="true or false"):
        PrepareConfig(strict="yes")  # type: ignore[arg-type]


def test_reader_contract_is_checked() -> None:
    read = read_of([ev("u1", "a", 1)])
    with pytest.raises(ValueError, match="reader bug"):
        prepare(FakeRead(events=read.events, rows_read=5))
    with pytest.raises(InputError, match="lack column"):
        prepare(FakeRead(events=read.events.drop(TIMESTAMP), rows_read=1))


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "movielens-100k").is_dir(), reason="shared data is absent")
def test_movielens_100k_leave_one_out() -> None:
    from nextaction.data.readers import read_events

    read = read_events(SHARED_DATA / "movielens-100k")
    ds = prepare(read).dataset
    check_accounting(read, ds.report)
    check_dataset(ds)
    split = ds.report["split"]
    assert split["kind"] == "leave_one_out"
    assert split["events"]["test"] == split["users"]["test"] == ds.n_users == 943
    assert split["events"]["valid"] == split["users"]["valid"] == 943
    assert ds.report["items_table"]["not_in_events"] == 0 and "title" in ds.items.columns
