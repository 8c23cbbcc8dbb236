"""PreparedDataset: save → load round trip, atomic overwrite, CSR sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nextaction.data.dataset import FORMAT_VERSION, PreparedDataset, Sequences
from nextaction.data.schema import (
    BEHAVIOR_IDX,
    ITEM_ID,
    ITEM_IDX,
    LINE,
    RAW,
    REASON,
    SPLIT,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_ID,
    USER_IDX,
    VALID,
    VALUE,
)
from nextaction.errors import InputError


def small_dataset() -> PreparedDataset:
    events = pl.DataFrame(
        {
            USER_IDX: [1, 1, 1, 2, 3, 3],
            ITEM_IDX: [1, 2, 3, 1, 2, 2],
            BEHAVIOR_IDX: [1, 1, 2, 1, 1, 2],
            TIMESTAMP: [1000, 2000, 3000, 1500, 10, 20],
            VALUE: [None, 4.5, None, 1.0, None, None],
            SPLIT: [TRAIN, VALID, TEST, TRAIN, TRAIN, TEST],
        },
        schema_overrides={
            USER_IDX: pl.Int32,
            ITEM_IDX: pl.Int32,
            BEHAVIOR_IDX: pl.Int8,
            TIMESTAMP: pl.Int64,
            VALUE: pl.Float64,
            SPLIT: pl.Int8,
        },
    )
    users = pl.DataFrame({USER_IDX: [1, 2, 3], USER_ID: ["ann", "bob", "cy"]})
    items = pl.DataFrame({ITEM_IDX: [1, 2, 3], ITEM_ID: ["a", "b", "c"], "title": ["A", None, "C"]})
    report = {"rows": {"read": 7, "rejected": 1, "duplicates": 0, "filtered": 0, "kept": 6}, "users": 3}
    return PreparedDataset(
        events=events, users=users, items=items, behaviors=["<pad>", "view", "buy"], report=report
    )


def test_sequences_are_csr_by_user() -> None:
    ds = small_dataset()
    seqs = ds.seqs
    assert seqs.n_users == 4  # padding user 0 included
    assert seqs.offsets.tolist() == [0, 0, 3, 4, 6]
    assert seqs.items[seqs.of(1)].tolist() == [1, 2, 3]
    assert seqs.items[seqs.of(0)].tolist() == []
    assert seqs.timestamps[seqs.of(3)].tolist() == [10, 20]
    assert seqs.split[seqs.of(1)].tolist() == [TRAIN, VALID, TEST]
    assert (seqs.items.dtype, seqs.behaviors.dtype, seqs.split.dtype) == (np.int32, np.int8, np.int8)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path: Path, mmap: bool) -> None:
    ds = small_dataset()
    rejects = pl.DataFrame({LINE: [4], REASON: ["missing user_id"], RAW: [",b,4,view,"]})
    out = ds.save(tmp_path / "prepared", rejects=rejects)
    assert out == tmp_path / "prepared"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "events.parquet",
            "users.parquet",
            "items.parquet",
            "behaviors.json",
            "report.json",
            "rejects.csv",
            *(f"seq_{n}.npy" for n in ("offsets", "items", "behaviors", "timestamps", "split")),
        ]
    )
    loaded = PreparedDataset.load(out, mmap=mmap)
    assert loaded.events.equals(ds.events) and loaded.events.schema == ds.events.schema
    assert loaded.users.equals(ds.users)
    assert loaded.items.equals(ds.items)
    assert loaded.behaviors == ds.behaviors
    assert loaded.report == {**ds.report, "format_version": FORMAT_VERSION}
    assert loaded.user_index() == {"ann": 1, "bob": 2, "cy": 3}
    assert loaded.item_index() == {"a": 1, "b": 2, "c": 3}
    for name in ("offsets", "items", "behaviors", "timestamps", "split"):
        np.testing.assert_array_equal(getattr(loaded.seqs, name), getattr(ds.seqs, name))
        assert getattr(loaded.seqs, name).dtype == getattr(ds.seqs, name).dtype
    assert pl.read_csv(out / "rejects.csv").equals(rejects)
    assert json.loads((out / "behaviors.json").read_text()) == ["<pad>", "view", "buy"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    small_dataset().save(out, rejects=pl.DataFrame({LINE: [1], REASON: ["x"], RAW: ["y"]}))
    smaller = small_dataset()
    smaller.events = smaller.events.head(3)
    smaller.users = smaller.users.head(1)
    smaller.save(out)
    loaded = PreparedDataset.load(out)
    assert loaded.events.height == 3 and loaded.n_users == 1
    assert not (out / "rejects.csv").exists()  # the whole folder was replaced, nothing stale is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_save_and_load_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        small_dataset().save(a_file)
    with pytest.raises(InputError, match="not a prepared dataset"):
        PreparedDataset.load(tmp_path)


def test_sequences_from_events_counts_empty_users() -> None:
    events = small_dataset().events.filter(pl.col(USER_IDX) != 2)
    seqs = Sequences.from_events(events, n_users=3)
    assert seqs.offsets.tolist() == [0, 0, 3, 3, 5]
    assert seqs.items[seqs.of(2)].size == 0
