"""Outcome prediction (behavior/outcome.py): P(behaviour of the next event | history, its item)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.factories import attempts_log

from nextaction.behavior.candidates import ItemStats
from nextaction.behavior.outcome import (
    OutcomeEvents,
    _windows,
    outcome_events,
    outcome_metrics,
    outcome_probabilities,
    prior_counts,
)
from nextaction.data.dataset import Sequences
from nextaction.data.schema import TEST, TRAIN
from nextaction.model import ModelConfig, NextActionModel


def random_seqs(
    rng: np.random.Generator, *, n_users: int, n_items: int, nb: int, test_users: int
) -> Sequences:
    lengths = rng.integers(1, 40, size=n_users)
    n = int(lengths.sum())
    split = np.repeat(np.where(np.arange(n_users) < test_users, TEST, TRAIN), lengths).astype(np.int8)
    times = np.concatenate([np.arange(k) * 1000 for k in lengths]).astype(np.int64)
    return Sequences(
        offsets=np.concatenate([[0, 0], np.cumsum(lengths)]).astype(np.int64),  # user 0 is padding
        items=rng.integers(1, n_items + 1, size=n).astype(np.int32),
        behaviors=rng.integers(1, nb + 1, size=n).astype(np.int8),
        timestamps=times,
        split=split,
    )


def test_prior_counts_match_a_loop_over_each_history() -> None:
    rng = np.random.default_rng(0)
    seqs = random_seqs(rng, n_users=12, n_items=6, nb=2, test_users=4)
    groups = np.array([0, 1, 1, 2, 2, 0, 3])  # item → category; items 1 and 5 have none
    ev = outcome_events(seqs, TEST)
    got = prior_counts(seqs, ev, 2, groups=groups)
    for row, (j, u) in enumerate(zip(ev.events, ev.users, strict=True)):
        s = int(seqs.offsets[u])
        past = range(s, j)
        item, beh = seqs.items, seqs.behaviors
        want = np.zeros(6)
        for e in past:
            b = int(beh[e]) - 1
            want[b] += 1
            if item[e] == item[j]:
                want[2 + b] += 1
            if groups[item[j]] and groups[item[e]] == groups[item[j]]:
                want[4 + b] += 1
        np.testing.assert_array_equal(got[row], want)


@pytest.mark.parametrize("max_len", [2, 5, 8, 50])
def test_windows_give_every_event_its_own_past_and_at_least_half_a_window(max_len: int) -> None:
    rng = np.random.default_rng(1)
    seqs = random_seqs(rng, n_users=20, n_items=5, nb=2, test_users=20)
    ev = outcome_events(seqs, TEST)
    starts, slot, wid = _windows(seqs, ev, max_len)
    pos = ev.events - seqs.offsets[ev.users]
    w = starts[wid] - seqs.offsets[ev.users]  # window start within the user's sequence
    assert (w >= 0).all() and (slot <= max_len - 1).all()
    assert ((pos == 0) == (slot == -1)).all()  # only first events read an empty history
    assert (w + slot == pos - 1).all()  # the query slot is exactly the previous event
    history = slot + 1
    assert (history >= np.minimum(pos, max(1, max_len // 2))).all()


def tiny_model(n_items: int, nb: int, *, max_len: int = 8) -> NextActionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_items=n_items,
        n_behaviors=nb + 1,
        dim=16,
        n_heads=2,
        max_len=max_len,
        dropout=0.0,
        behavior_head=True,
    )
    return NextActionModel(cfg).eval()


def test_outcome_probabilities_are_causal_and_batch_invariant() -> None:
    rng = np.random.default_rng(2)
    seqs = random_seqs(rng, n_users=10, n_items=7, nb=2, test_users=10)
    model = tiny_model(7, 2)
    stats = ItemStats(seqs, 2, exclude_split=None)
    ev = outcome_events(seqs, TEST)
    p = outcome_probabilities(model, seqs, ev, stats=stats)
    assert p.shape == (len(ev.events), 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    one = outcome_probabilities(model, seqs, ev, stats=stats, windows_per_batch=1)
    np.testing.assert_allclose(p, one, atol=1e-5)
    # change everything at and after one event of the longest user: the events before it keep their
    # probabilities (the item statistics are frozen by passing the same stats)
    u = int(np.argmax(np.diff(seqs.offsets)))
    s, e = int(seqs.offsets[u]), int(seqs.offsets[u + 1])
    cut = s + (e - s) // 2
    items = np.array(seqs.items)
    behaviors = np.array(seqs.behaviors)
    items[cut:e] = rng.integers(1, 8, size=e - cut)
    behaviors[cut:e] = 3 - behaviors[cut:e]
    changed = Sequences(seqs.offsets, items, behaviors, seqs.timestamps, seqs.split)
    q = outcome_probabilities(model, changed, ev, stats=stats)
    before = ev.events < cut  # (event `cut` is on a changed item)
    np.testing.assert_allclose(p[before], q[before], atol=1e-5)


def test_outcome_metrics_on_known_predictions() -> None:
    labels = np.array([1, 1, 2, 2])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = outcome_metrics(probs, labels, ["correct", "incorrect"])
    assert m["events"] == 4
    assert m["accuracy"] == 0.75
    assert m["auc"] == {"correct": 1.0, "incorrect": 1.0}
    assert m["log_loss"] == round(-np.log([0.9, 0.4, 0.7, 0.8]).mean(), 4)
    assert m["rate"] == {"correct": 0.5, "incorrect": 0.5}


def test_outcome_events_restricts_to_users() -> None:
    rng = np.random.default_rng(3)
    seqs = random_seqs(rng, n_users=6, n_items=4, nb=2, test_users=6)
    ev = outcome_events(seqs, TEST, users=np.array([2, 3]))
    assert set(ev.users.tolist()) == {2, 3}
    assert isinstance(ev, OutcomeEvents)


def test_knowledge_tracing_log_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An order-only correct/incorrect log with skills, 5 folds by student: the model learns P(correct)."""
    from nextaction.workflow import train_model

    log, items, folds = attempts_log(tmp_path, n_students=200, n_problems=30, n_skills=5, length=30)
    result = train_model(
        log,
        tmp_path / "m",
        mapping={"user": "student", "item": "problem", "order": "pos", "behavior": "outcome"},
        items=items,
        sets=[
            'prepare.split.kind="users"',
            "prepare.split.fold=2",
            f'prepare.split.user_folds="{folds}"',
            'model.categorical=["skill"]',
            "model.dim=16",
            "model.max_len=16",
            "model.dropout=0.1",
            "train.epochs=8",
            "train.batch_size=16",
            "train.lr=5e-3",
            'train.precision="fp32"',
        ],
    )
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["time_gaps"] is False  # no clock: no time gaps
    assert config["model"]["categorical"] == ["skill"]
    report = json.loads((tmp_path / "m" / "data" / "report.json").read_text())
    assert report["clock"] == "positions"
    assert report["split"]["kind"] == "users" and report["split"]["valid_fold"] == 3
    out = result["outcome"]
    assert "every test event" in out["protocol"]
    # students differ in ability and problems in difficulty: history and item tell the outcome
    assert out["nextaction"]["auc"]["correct"] > 0.7  # 0.758 when written; item difficulty alone gets 0.70
    assert out["nextaction"]["events"] == report["split"]["events"]["test"]
    assert "behaviors" not in result  # the windows' protocol needs a clock

    # served: P(correct) on the exercise attempted next sums to 1 over the outcomes, for the CLI too
    from tests.test_cli import run

    from nextaction.predictor import Predictor

    p = Predictor.load(tmp_path / "m")
    given = p.outcome(p.history("s3", split="all"), ["p1", "p2", "nope"])
    assert given["nope"] is None and p.last_unknown_items == ["nope"]
    assert all(abs(sum(v.values()) - 1) < 1e-5 for v in given.values() if v is not None)
    code, out, _ = run(
        ["predict", str(tmp_path / "m"), "--user", "s3", "--items", "p1,p2", "--next", "--json"], capsys
    )
    assert code == 0 and json.loads(out)["p1"] == pytest.approx(given["p1"], abs=1e-6)
    code, out, _ = run(
        ["recommend", str(tmp_path / "m"), "--user", "s3", "--k", "3", "--outcome", "--json"], capsys
    )
    items = json.loads(out)["items"]
    assert code == 0 and len(items) == 3 and set(items[0]["outcome"]) == {"correct", "incorrect"}
