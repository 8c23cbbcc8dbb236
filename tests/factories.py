"""Builders of small generated datasets in the prepared format, shared by the tests."""

from __future__ import annotations

from pathlib import Path

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
from nextaction.model import ModelConfig
from nextaction.training.state import TrainConfig


def events_dataset(
    rows: list[tuple[int, int, int, int, int]],
    *,
    n_users: int,
    n_items: int,
    behaviors: list[str],
    split_kind: str,
) -> PreparedDataset:
    """A prepared dataset from (user_idx, item_idx, behaviour_idx, timestamp ms, split) rows; users are
    ``u1…``, items ``i1…``; events are sorted by user then time (row order breaks ties)."""
    events = (
        pl.DataFrame(
            rows,
            schema=[
                (USER_IDX, pl.Int64),
                (ITEM_IDX, pl.Int64),
                (BEHAVIOR_IDX, pl.Int64),
                (TIMESTAMP, pl.Int64),
                (SPLIT, pl.Int8),
            ],
            orient="row",
        )
        .with_columns(pl.lit(None, dtype=pl.Float64).alias(VALUE))
        .sort(USER_IDX, TIMESTAMP, maintain_order=True)
    )
    return PreparedDataset(
        events=events,
        users=pl.DataFrame(
            {USER_IDX: range(1, n_users + 1), USER_ID: [f"u{u}" for u in range(1, n_users + 1)]}
        ),
        items=pl.DataFrame(
            {ITEM_IDX: range(1, n_items + 1), ITEM_ID: [f"i{i}" for i in range(1, n_items + 1)]}
        ),
        behaviors=behaviors,
        report={"split": {"kind": split_kind}},
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


# ---- a small shop with item text ------------------------------------------------------------------------

TOPICS = {
    "nail": ["nail polish", "nail lacquer", "nail varnish", "gel nail colour"],
    "boots": ["hiking boots", "trail boots", "mountain boots", "walking boots"],
    "coffee": ["coffee beans", "espresso roast", "arabica coffee", "ground coffee"],
    "dog": ["dog food", "puppy kibble", "dog treats", "canine dinner"],
}
ADJECTIVES = ["red", "classic", "premium", "small", "deluxe"]
TEXT_SETS = [
    "model.dim=32",
    "model.max_len=10",
    "train.epochs=12",
    "train.precision=fp32",
    "train.batch_size=32",
]


def topic_shop(root: Path) -> Path:
    """80 users, each browsing one topic; items named after their topic: events.csv and items.csv in ``root``."""
    rng = np.random.default_rng(0)
    items, by_topic = [], {}
    for topic, nouns in TOPICS.items():
        by_topic[topic] = []
        for n, noun in enumerate(nouns):
            for a, adj in enumerate(ADJECTIVES[:2]):
                item_id = f"{topic}{n}{a}"
                items.append((item_id, f"{adj} {noun}"))
                by_topic[topic].append(item_id)
    rows = ["user_id,item_id,timestamp"]
    for u in range(80):
        topic = list(TOPICS)[u % 4]
        for t in range(9):
            rows.append(f"u{u},{rng.choice(by_topic[topic])},{1_700_000_000 + u * 10_000 + t * 60}")
    (root / "events.csv").write_text("\n".join(rows) + "\n")
    (root / "items.csv").write_text("item_id,title\n" + "\n".join(f"{i},{t}" for i, t in items) + "\n")
    return root


def sequences_log(path: Path, *, n_users: int = 30, n_items: int = 12, length: int = 8) -> Path:
    """An order-only log in the ``sequences`` format (one user per line: ``user item item …``, Beauty's
    shape): no clock, only the order of events. User ``uK`` walks the items ``sK, sK+1 …`` cyclically."""
    lines = [
        f"u{u} " + " ".join(f"s{(u + t) % n_items}" for t in range(length)) for u in range(1, n_users + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def small_cfgs(data: PreparedDataset, **train: object) -> tuple[ModelConfig, TrainConfig]:
    """A small model and a short fp32 schedule for ``data``; ``train`` overrides TrainConfig fields."""
    mc = ModelConfig(
        n_items=data.n_items,
        n_behaviors=len(data.behaviors),
        dim=32,
        n_heads=2,
        n_layers=2,
        max_len=10,
        dropout=0.0,
    )
    tc = TrainConfig(
        **{
            "epochs": 30,
            "batch_size": 16,
            "lr": 5e-3,
            "warmup_steps": 5,
            "patience": 30,
            "precision": "fp32",
            **train,
        }
    )
    return mc, tc


# ---- a question-and-answer forum (routing) -----------------------------------------------------------------

FORUM_BEHAVIORS = ["<pad>", "ask", "answer", "comment"]
HOUR_MS = 3_600_000


def forum_dataset(
    *, n_topics: int = 3, threads_per_topic: int = 40, casual_per_topic: int = 12, seed: int = 0
) -> PreparedDataset:
    """A StackExchange-like forum: threads (items) are asked, answered and commented (behaviours 1 ask,
    2 answer, 3 comment), each thread on one of ``n_topics`` topics.

    Users ``u1 … u{n_topics}`` are the topic stars: star t answers about 90% of topic t's threads and
    nothing else. Users ``u{n_topics+1} … u{3 n_topics}`` are two more experts per topic (answering about
    25% each); the rest are casual users of one topic who ask (a random one of them per thread) and
    comment. Thread k is asked at hour k (topics interleaved), its answers and comments follow within
    hours. Temporal split: the last 20% of the time span is TEST, the 15% before it VALID.
    """
    rng = np.random.default_rng(seed)
    n_threads = n_topics * threads_per_topic
    experts = {t: [n_topics + 2 * t + 1, n_topics + 2 * t + 2] for t in range(n_topics)}
    first_casual = 3 * n_topics + 1
    casual = {
        t: list(range(first_casual + t * casual_per_topic, first_casual + (t + 1) * casual_per_topic))
        for t in range(n_topics)
    }
    rows: list[tuple[int, int, int, int]] = []
    for k in range(n_threads):
        topic, item, t0 = k % n_topics, k + 1, k * HOUR_MS
        rows.append((int(rng.choice(casual[topic])), item, 1, t0))
        answerers = [topic + 1] if rng.random() < 0.9 else []
        answerers += [e for e in experts[topic] if rng.random() < 0.25]
        for n, user in enumerate(answerers):
            rows.append((user, item, 2, t0 + (n + 1) * 600_000 + int(rng.integers(60_000))))
        for user in rng.choice(casual[topic], size=2, replace=False):
            rows.append((int(user), item, 3, t0 + int(rng.integers(60_000, 3 * HOUR_MS))))
    t_max = max(r[3] for r in rows)
    test_cut, valid_cut = int(t_max * 0.8), int(t_max * 0.65)
    with_split = [
        (u, i, b, t, TEST if t >= test_cut else VALID if t >= valid_cut else TRAIN) for u, i, b, t in rows
    ]
    return events_dataset(
        with_split,
        n_users=first_casual - 1 + n_topics * casual_per_topic,
        n_items=n_threads,
        behaviors=FORUM_BEHAVIORS,
        split_kind="temporal",
    )


def with_events(data: PreparedDataset, rows: list[tuple[int, int, int, int, int]]) -> PreparedDataset:
    """``data`` plus (user_idx, item_idx, behaviour_idx, timestamp ms, split) rows; a user index beyond the
    dataset's adds users ``u{n}`` up to it. Items and behaviours must exist already."""
    old = data.events.select(USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, SPLIT).rows()
    return events_dataset(
        [*old, *rows],
        n_users=max([data.n_users, *(r[0] for r in rows)]),
        n_items=data.n_items,
        behaviors=data.behaviors,
        split_kind=str(data.report.get("split", {}).get("kind")),
    )


# ---- exercise attempts (knowledge tracing) -----------------------------------------------------------------


def attempts_log(
    root: Path,
    *,
    n_students: int = 100,
    n_problems: int = 30,
    n_skills: int = 5,
    length: int = 30,
    seed: int = 0,
) -> tuple[Path, Path, Path]:
    """An order-only log of exercise attempts, its item table and a 5-fold split of the students.

    Each student has an ability, each problem a difficulty and one of ``n_skills`` skills, and practice on a
    skill helps (Rasch model with learning): P(correct) = sigmoid(ability − difficulty + 0.15 · attempts on
    the skill so far). Writes ``attempts.csv`` (student, problem, pos, outcome = correct/incorrect),
    ``problems.csv`` (item, skill) and ``folds.csv`` (user, fold); returns their paths.
    """
    rng = np.random.default_rng(seed)
    ability = rng.normal(0.0, 1.2, n_students)
    difficulty = rng.normal(0.0, 1.0, n_problems)
    skill = rng.integers(n_skills, size=n_problems)
    rows = ["student,problem,pos,outcome"]
    for s in range(n_students):
        practice = np.zeros(n_skills)
        for pos in range(length):
            p = int(rng.integers(n_problems))
            chance = 1.0 / (1.0 + np.exp(-(ability[s] - difficulty[p] + 0.15 * practice[skill[p]])))
            rows.append(f"s{s},p{p},{pos},{'correct' if rng.random() < chance else 'incorrect'}")
            practice[skill[p]] += 1
    log = root / "attempts.csv"
    log.write_text("\n".join(rows) + "\n")
    items = root / "problems.csv"
    items.write_text("item,skill\n" + "".join(f"p{p},k{skill[p]}\n" for p in range(n_problems)))
    folds = root / "folds.csv"
    folds.write_text("user,fold\n" + "".join(f"s{s},{s % 5 + 1}\n" for s in range(n_students)))
    return log, items, folds


def trained_model_dir(
    out: Path, data: PreparedDataset, mc: ModelConfig, tc: TrainConfig, *, exclude_seen: bool = True
) -> Path:
    """Train ``data`` with ``fit`` and write a model directory (weights, config, data/) into ``out``."""
    from nextaction.training.checkpoint import save_model
    from nextaction.training.loop import fit

    model, _ = fit(data, mc, tc, out_dir=out)
    save_model(out, model, tc, {"exclude_seen": exclude_seen})
    data.save(out / "data")
    return out
