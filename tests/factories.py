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


def funnel_dataset(
    *, n_users: int = 200, n_items: int = 60, length: int = 30, cart_p: float = 0.3, seed: int = 0
) -> PreparedDataset:
    """A view → cart → buy shop where every carted item is bought a few events later.

    Users browse items of their own taste group (a tenth of the catalogue); each view is carted with
    probability ``cart_p`` and a carted item is always bought 1–3 events after the cart. Events are evenly
    spaced in time per user with random offsets, and a global temporal split puts the last ~20% of time in
    TEST and the ~15% before it in VALID. Behaviour indices: 1 view, 2 cart, 3 buy.
    """
    rng = np.random.default_rng(seed)
    groups = 10
    per_group = n_items // groups
    rows: list[tuple[int, int, int, int]] = []
    for u in range(1, n_users + 1):
        g = int(rng.integers(groups))
        t0 = int(rng.integers(0, 50)) * 60_000
        events: list[tuple[int, int]] = []
        pending: list[tuple[int, int]] = []  # (due position, item) of buys to come
        while len(events) < length:
            due = [p for p in pending if p[0] <= len(events)]
            if due:
                pending.remove(due[0])
                events.append((due[0][1], 3))
                continue
            item = g * per_group + int(rng.integers(per_group)) + 1
            events.append((item, 1))
            if rng.random() < cart_p:
                events.append((item, 2))
                pending.append((len(events) + int(rng.integers(0, 3)), item))
        for k, (item, beh) in enumerate(events[:length]):
            rows.append((u, item, beh, t0 + k * 3_600_000))
    t_max = max(r[3] for r in rows)
    test_cut, valid_cut = int(t_max * 0.8), int(t_max * 0.65)
    events_df = pl.DataFrame(
        rows,
        schema=[(USER_IDX, pl.Int64), (ITEM_IDX, pl.Int64), (BEHAVIOR_IDX, pl.Int64), (TIMESTAMP, pl.Int64)],
        orient="row",
    ).with_columns(
        pl.when(pl.col(TIMESTAMP) >= test_cut)
        .then(TEST)
        .when(pl.col(TIMESTAMP) >= valid_cut)
        .then(VALID)
        .otherwise(TRAIN)
        .cast(pl.Int8)
        .alias(SPLIT),
        pl.lit(None, dtype=pl.Float64).alias(VALUE),
    )
    return PreparedDataset(
        events=events_df.sort(USER_IDX, TIMESTAMP, maintain_order=True),
        users=pl.DataFrame(
            {USER_IDX: range(1, n_users + 1), USER_ID: [f"u{u}" for u in range(1, n_users + 1)]}
        ),
        items=pl.DataFrame(
            {ITEM_IDX: range(1, n_items + 1), ITEM_ID: [f"i{i}" for i in range(1, n_items + 1)]}
        ),
        behaviors=["<pad>", "view", "cart", "buy"],
        report={"split": {"kind": "temporal"}},
    )
