"""Leave-one-out next-buy evaluation against a targets file (behavior/leave_one_out.py), on a hand-made log
whose ranks are worked out by hand, and through `nextaction evaluate --targets`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factories import events_dataset
from nextaction.behavior.leave_one_out import (
    DUPLICATE_USER,
    MALFORMED,
    MISSING_ID,
    SKIP_REASONS,
    UNKNOWN_ITEM,
    UNKNOWN_USER,
    EngagedFirst,
    ModelRanks,
    Targets,
    default_engaged,
    evaluate_leave_one_out,
    fit_behavior_popularity,
    leave_one_out_baselines,
    leave_one_out_metrics,
    leave_one_out_ranks,
    read_targets,
    sample_negatives,
    target_behavior,
)
from nextaction.cli import main
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import (
    ITEM_ID,
    TEST,
    TRAIN,
    USER_ID,
)
from nextaction.errors import InputError
from nextaction.evaluation.metrics import MISS_RANK
from nextaction.model import ModelConfig, NextActionModel

N_ITEMS = 120
VIEW, CART, BUY = 1, 2, 3
# (user, item, behaviour, split), in time order per user. u1's last event is TEST: histories span every split.
EVENTS = [
    (1, 1, VIEW, TRAIN), (1, 2, CART, TRAIN), (1, 3, VIEW, TRAIN), (1, 4, VIEW, TEST),
    (2, 5, VIEW, TRAIN), (2, 5, BUY, TRAIN), (2, 6, VIEW, TRAIN), (2, 6, BUY, TRAIN),
    (2, 5, VIEW, TRAIN), (2, 5, BUY, TRAIN),
    (3, 7, BUY, TRAIN), (3, 8, VIEW, TRAIN), (3, 8, VIEW, TRAIN),
    (4, 9, VIEW, TRAIN),
    (5, 10, VIEW, TRAIN),
]  # fmt: skip
# TRAIN counts (buys, all events): i5 (2, 4), i6 (1, 2), i7 (1, 1), i8 (0, 2), i1 i2 i3 i9 i10 (0, 1), the
# other 111 items (i4 is TEST only) none. Buy popularity therefore orders i5, i6, i7, i8, then i1 i2 i3 i9 i10
# tied, then the rest tied.
TARGETS_CSV = "user_id,item_id\nu1,i2\nu2,i5\nu3,i1\nu4,i100\n"


def shop() -> PreparedDataset:
    rows = [(u, i, b, 1_000 * (k + 1), s) for k, (u, i, b, s) in enumerate(EVENTS)]
    return events_dataset(
        rows,
        n_users=5,
        n_items=N_ITEMS,
        behaviors=["<pad>", "view", "cart", "buy"],
        split_kind="leave_one_out",
    )


def targets_of(tmp_path: Path, data: PreparedDataset, text: str = TARGETS_CSV) -> Targets:
    path = tmp_path / "test_buy.csv"
    path.write_text(text)
    return read_targets(path, data)


class KnownScores:
    """A scorer whose scores are fixed in advance: row r scores item i as ``row[i]`` for every user."""

    name = "known"

    def __init__(self, row: np.ndarray) -> None:
        self.row = np.asarray(row, dtype=np.float64)

    def rank_scores(
        self, seqs: Sequences, hist_start: np.ndarray, hist_end: np.ndarray, *, behavior: int
    ) -> np.ndarray:
        return np.tile(self.row, (len(hist_start), 1))


def ndcg(rank: int) -> float:
    return 1.0 / math.log2(rank + 2)


def test_known_scores_give_exact_ranks_and_metrics(tmp_path):
    data = shop()
    targets = targets_of(tmp_path, data)
    assert targets.user_idx.tolist() == [1, 2, 3, 4] and targets.item_idx.tolist() == [2, 5, 1, 100]
    # item i scores -i: item 1 is first, so a target's full rank is its index - 1 (i100: 99, a miss at 20)
    scorer = KnownScores(-np.arange(N_ITEMS + 1, dtype=np.float64))
    negatives = sample_negatives(data.seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS)
    full, sampled = leave_one_out_ranks(scorer, data.seqs, targets, negatives, behavior=BUY)
    assert full.tolist() == [1, 4, 0, 99]
    # among the sample: the negatives with a smaller index outrank the target
    assert sampled.tolist() == [
        int((neg < t).sum()) for neg, t in zip(negatives, targets.item_idx, strict=True)
    ]
    m = leave_one_out_metrics(full)
    assert m["HR@5"] == 0.75 and m["HR@10"] == 0.75 and m["HR@20"] == 0.75
    assert m["NDCG@10"] == pytest.approx((ndcg(1) + ndcg(4) + ndcg(0)) / 4)
    assert m["MRR"] == pytest.approx((1 / 2 + 1 / 5 + 1 + 1 / 100) / 4)
    assert m["MRR@10"] == pytest.approx((1 / 2 + 1 / 5 + 1) / 4)

    # constant scores tie everything: pessimistic, the target is last (full) and last of the 100 (sampled)
    constant = KnownScores(np.zeros(N_ITEMS + 1))
    full, sampled = leave_one_out_ranks(constant, data.seqs, targets, negatives, behavior=BUY)
    assert full.tolist() == [N_ITEMS - 1] * 4 and sampled.tolist() == [99] * 4
    # a NaN target is a miss; a NaN rival counts above the target (u1: i1, i5, i100; u3: i5, i100)
    row = -np.arange(N_ITEMS + 1, dtype=np.float64)
    row[5], row[100] = np.nan, np.nan
    full, _ = leave_one_out_ranks(KnownScores(row), data.seqs, targets, negatives, behavior=BUY)
    assert full.tolist() == [3, MISS_RANK, 2, MISS_RANK]


def test_buy_popularity_and_engaged_first_ranks_worked_by_hand(tmp_path):
    data = shop()
    targets = targets_of(tmp_path, data)
    negatives = sample_negatives(data.seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS)
    behavior = target_behavior(data.behaviors)
    assert behavior == BUY
    popularity = fit_behavior_popularity(data)
    full, _ = leave_one_out_ranks(popularity, data.seqs, targets, negatives, behavior=behavior)
    # i2: below i5 i6 i7 i8, tied with i1 i3 i9 i10 (pessimistic: 4 + 4); i5 first; i1 like i2;
    # i100: tied with the 110 other unseen items, below the 9 counted ones
    assert full.tolist() == [8, 0, 8, 9 + 110]

    assert default_engaged(data.behaviors, BUY) == ["cart"]
    engaged = EngagedFirst().fit(data, target=BUY)
    full, sampled = leave_one_out_ranks(engaged, data.seqs, targets, negatives, behavior=behavior)
    # u1 (view i1, cart i2, view i3, view i4): i2 carted -> first, though it is in the history (not excluded)
    # u2 (i5 and i6 viewed and bought; buy is the target, not "engaged"): i5 touched last -> first
    # u3 (buy i7, view i8, view i8) -> i8, i7, then the rest by buys: i5, i6, then i1 tied with i2 i3 i9 i10
    # u4 (view i9) -> i9, then i5 i6 i7 i8 i1 i2 i3 i10, then i100 tied with the 110 other unseen items
    assert full.tolist() == [0, 0, 2 + 2 + 4, 1 + 8 + 110]
    assert sampled.tolist()[:2] == [0, 0]
    # the engaged tier outranks recency: u1's order is i2 (cart), i4, i3, i1 (last touched first)
    scores = engaged.rank_scores(data.seqs, np.array([0]), np.array([4]), behavior=BUY)[0]
    assert np.argsort(-scores)[:4].tolist() == [2, 4, 3, 1]
    # baselines by name, with the same code path
    names = [b.name for b in leave_one_out_baselines(data, target=BUY)]
    assert names == ["buy-popularity", "engaged-first", "item-to-item"]


def test_negative_sample_excludes_target_and_history_and_is_deterministic(tmp_path):
    data = shop()
    targets = targets_of(tmp_path, data)
    seqs = data.seqs
    neg = sample_negatives(seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS)
    assert neg.shape == (4, 99)
    for row, u, t in zip(neg, targets.user_idx, targets.item_idx, strict=True):
        history = set(np.asarray(seqs.items)[seqs.of(int(u))].tolist())
        assert len(set(row.tolist())) == 99  # distinct, no padding needed with 120 items
        assert t not in row and not history & set(row.tolist())
        assert row.min() >= 1 and row.max() <= N_ITEMS
    again = sample_negatives(seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS)
    assert np.array_equal(neg, again)
    other = sample_negatives(seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS, seed=1)
    assert not np.array_equal(neg, other)
    # a catalogue too small for 99: every allowed item once, the rest padding (scored -inf: never above)
    small = sample_negatives(seqs, targets.user_idx[:1], np.array([2]), n_items=10)
    allowed = set(range(1, 11)) - {1, 2, 3, 4}
    assert set(small[0][small[0] > 0].tolist()) == allowed and (small[0] == 0).sum() == 99 - len(allowed)


def test_bad_rows_are_counted_by_reason_never_dropped(tmp_path):
    data = shop()
    text = (
        "user_id,item_id\n"
        "u1,i2\n"  # 2 used
        "u1,i3\n"  # 3 duplicate user (the first row counts)
        "ghost,i1\n"  # 4 unknown user
        "u2,nothing\n"  # 5 unknown item (u2's first row)
        "u2,i5\n"  # 6 duplicate user: u2's first row decided
        ",i1\n"  # 7 missing id
        "u3,i1,extra\n"  # 8 malformed line
        "\n"  # blank: not a row
        " u4 , i9 \n"  # 10 used (ids are stripped, as events are)
    )
    targets = targets_of(tmp_path, data, text)
    assert targets.user_idx.tolist() == [1, 4] and targets.item_idx.tolist() == [2, 9]
    assert targets.line.tolist() == [2, 10] and targets.rows == 8
    assert targets.skipped == {
        MALFORMED: 1,
        MISSING_ID: 1,
        UNKNOWN_USER: 1,
        DUPLICATE_USER: 2,
        UNKNOWN_ITEM: 1,
    }
    assert set(targets.skipped) == set(SKIP_REASONS)
    assert targets.skipped_lines[DUPLICATE_USER] == [3, 6] and targets.skipped_lines[MALFORMED] == [8]
    assert len(targets) + sum(targets.skipped.values()) == targets.rows


@pytest.mark.parametrize(
    "text, needle",
    [
        ("user,item_id\nu1,i2\n", "no 'user_id' column"),
        ("user_id\nu1\n", "no 'item_id' column"),
        ("user_id,item_id\nghost,i1\n", "no usable row (1 unknown user)"),
        ("user_id,item_id\n", "no data rows"),
    ],
)
def test_a_bad_targets_file_is_an_input_error_naming_it(tmp_path, text, needle):
    path = tmp_path / "bad targets.csv"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        read_targets(path, shop())
    assert str(path) in e.value.one_line() and needle in e.value.one_line()
    assert "\n" not in e.value.one_line()
    with pytest.raises(InputError, match="no such file"):
        read_targets(tmp_path / "missing.csv", shop())
    binary = tmp_path / "targets.parquet"
    pl.DataFrame({"user_id": ["u1"], "item_id": ["i2"]}).write_parquet(binary)
    with pytest.raises(InputError, match="is a Parquet file"):
        read_targets(binary, shop())


def test_the_model_path_is_chunk_independent_and_sampled_ranks_never_exceed_full(tmp_path):
    """An untrained model with a behaviour head, through the same ranking: a user's scores depend on their
    own full history only, and the 100-item rank can never be worse than the catalogue rank."""
    import torch

    torch.manual_seed(0)
    data = shop()
    cfg = ModelConfig(
        n_items=N_ITEMS,
        n_behaviors=len(data.behaviors),
        dim=16,
        n_heads=2,
        n_layers=1,
        max_len=8,
        dropout=0.0,
        behavior_head=True,
    )
    model = NextActionModel(cfg)
    targets = targets_of(tmp_path, data)
    negatives = sample_negatives(data.seqs, targets.user_idx, targets.item_idx, n_items=N_ITEMS)
    scorer = ModelRanks(model)
    one = leave_one_out_ranks(scorer, data.seqs, targets, negatives, behavior=BUY, chunk=1)
    many = leave_one_out_ranks(scorer, data.seqs, targets, negatives, behavior=BUY, chunk=256)
    assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
    assert (one[1] <= one[0]).all()

    result = evaluate_leave_one_out(model, data, targets, baselines=True)
    assert result["users"] == 4 and set(result) >= {"full", "sampled_99", "protocol", "skipped", "baselines"}
    p = result["protocol"]
    assert p["negatives"] == 99 and p["negatives_exclude_history"] is True and p["target_behavior"] == "buy"
    assert "not interacted with" in p["sampled"] and "'cart'" in p["baselines"]["engaged-first"]
    assert set(result["baselines"]) == {"buy-popularity", "engaged-first", "item-to-item"}
    engaged = result["baselines"]["engaged-first"]
    assert engaged["full"]["HR@5"] == 0.5  # u1 and u2 first, u3 at 8, u4 at 119
    assert engaged["full"]["NDCG@10"] == pytest.approx((1 + 1 + ndcg(8)) / 4)


# ---- the command line -----------------------------------------------------------------------------------


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["nextaction", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch view/cart/buy model on a small synthetic log, and that log's events.csv."""
    from nextaction.datasets import synthetic

    root = tmp_path_factory.mktemp("loo")
    events_csv, _ = synthetic(n_events=2000, seed=3).write(root / "log")
    model = root / "m"
    sets = ["model.dim=16", "model.max_len=8", "train.epochs=1", "train.precision=fp32"]
    argv = ["train", str(events_csv), "--out", str(model), *(a for s in sets for a in ("--set", s))]
    old = sys.argv
    sys.argv = ["nextaction", *argv]
    try:
        main()
    except SystemExit as e:
        assert not e.code, f"training failed with exit code {e.code}"
    finally:
        sys.argv = old
    return model, events_csv


def test_cli_evaluate_targets_json_and_table(tiny_model, tmp_path, capsys):
    model, events_csv = tiny_model
    events = pl.read_csv(events_csv, infer_schema=False)
    users = events[USER_ID].unique(maintain_order=True).to_list()[:6]
    items = events[ITEM_ID].unique(maintain_order=True).to_list()
    rows = [f"{u},{items[k]}" for k, u in enumerate(users)] + ["ghost,x", f"{users[0]},{items[1]}"]
    targets = tmp_path / "test_buy.csv"
    targets.write_text("user_id,item_id\n" + "\n".join(rows) + "\n")

    code, out, err = run(["evaluate", str(model), "--targets", str(targets), "--baselines", "--json"], capsys)
    assert code == 0, err
    loo = json.loads(out)["leave_one_out"]
    assert loo["users"] == 6
    assert loo["skipped"][UNKNOWN_USER] == 1 and loo["skipped"][DUPLICATE_USER] == 1
    for section in ("full", "sampled_99"):
        assert 0.0 <= loo[section]["NDCG@10"] <= loo[section]["HR@10"] <= 1.0
        assert loo[section]["HR@20"] >= loo[section]["HR@10"] >= loo[section]["HR@5"]
    assert loo["sampled_99"]["HR@10"] >= loo["full"]["HR@10"]  # 100 candidates, not the catalogue
    assert set(loo["baselines"]) == {"buy-popularity", "engaged-first", "item-to-item"}
    assert loo["protocol"]["targets"] == str(targets)

    code, out, err = run(["evaluate", str(model), "--targets", str(targets)], capsys)
    assert code == 0, err
    text = " ".join(out.split())  # the console wraps long lines
    assert "leave-one-out next-buy" in text and "1 unknown user, 1 duplicate user" in text


def test_cli_bad_targets_file_exits_2_with_one_line(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    bad = tmp_path / "targets.csv"
    bad.write_text("user,item\n1,2\n")
    for path, needle in ((bad, "no 'user_id' column"), (tmp_path / "none.csv", "no such file")):
        code, out, err = run(["evaluate", str(model), "--targets", str(path), "--json"], capsys)
        assert code == 2 and out == ""
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(path) in errors[0] and needle in errors[0]
