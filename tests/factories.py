"""Builders of small generated datasets in the prepared format, shared by the tests."""

from __future__ import annotations

import numpy as np
import polars as pl

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import (
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


def cyclic_dataset(
    *, n_users: int = 60, n_items: int = 12, length: int = 10, seed: int = 0
) -> PreparedDataset:
    """Each user walks the catalogue in a fixed cycle from a random start: item i is followed by i+1.

    A sequence model should learn it perfectly (HR@1 → 1); popularity cannot. Leave-one-out split.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        start = int(rng.integers(n_items))
        for t in range(length):
            split = TEST if t == length - 1 else VALID if t == length - 2 else TRAIN
            rows.append((u, (start + t) % n_items + 1, 1, t * 60_000, split))
    events = pl.DataFrame(
        rows,
        schema=[
            (USER_IDX, pl.Int64),
            (ITEM_IDX, pl.Int64),
            (BEHAVIOR_IDX, pl.Int64),
            (TIMESTAMP, pl.Int64),
            (SPLIT, pl.Int8),
        ],
        orient="row",
    ).with_columns(pl.lit(None, dtype=pl.Float64).alias(VALUE))
    return PreparedDataset(
        events=events,
        users=pl.DataFrame(
            {USER_IDX: range(1, n_users + 1), USER_ID: [f"u{u}" for u in range(1, n_users + 1)]}
        ),
        items=pl.DataFrame(
            {ITEM_IDX: range(1, n_items + 1), ITEM_ID: [f"i{i}" for i in range(1, n_items + 1)]}
        ),
        behaviors=["<pad>", "interact"],
        report={"split": {"kind": "leave_one_out"}},
    )
