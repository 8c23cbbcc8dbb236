"""Federated training (nextaction.federated): the client split, a client's local training and validation,
and whole federations on real Flower processes (SuperLink, three SuperNodes, ``flwr run``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factories import cyclic_dataset, events_dataset, small_cfgs
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import TEST, TRAIN, VALID
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.federated.local import FederatedConfig, local_train, local_validate
from nextaction.federated.partition import client_dataset, split_users, write_clients
from nextaction.model import NextActionModel
from nextaction.scoring import evaluate_model
from nextaction.training.checkpoint import load_model
from nextaction.training.loop import held_out_users
from nextaction.training.state import TrainConfig
from test_cli import run


def test_iid_split_is_disjoint_and_covers_every_user_but_the_held_out() -> None:
    data = cyclic_dataset(n_users=60)
    parts = split_users(data, 4, holdout_users=10)
    held = held_out_users(data, TrainConfig(holdout_users=10))
    assert held is not None and len(held) == 10
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == 50
    assert set(joined.tolist()) == set(range(1, 61)) - set(held.tolist())
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def category_shop(n_users: int = 48) -> PreparedDataset:
    """Users who each browse one of four leaf categories (items 1-8 'x|a', 9-16 'x|b', …)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, n_users + 1):
        cat = u % 4
        for t in range(8):
            item = cat * 8 + int(rng.integers(1, 9))
            split = TEST if t == 7 else VALID if t == 6 else TRAIN
            rows.append((u, item, 1, t * 60_000, split))
    data = events_dataset(
        rows, n_users=n_users, n_items=32, behaviors=["<pad>", "view"], split_kind="leave_one_out"
    )
    leaf = [f"shop|{'abcd'[(i - 1) // 8]}" for i in range(1, 33)]
    return replace(data, items=data.items.with_columns(pl.Series("category", leaf)))


def test_category_split_keeps_each_dominant_category_on_one_client() -> None:
    data = category_shop()
    parts = split_users(data, 2, by="category", segment=-1)
    for users in parts:
        assert len({int(u) % 4 for u in users}) == 2  # two whole categories each: 12 + 12 users
    assert sorted(np.concatenate(parts).tolist()) == list(range(1, 49))


def test_category_split_explains_a_missing_column(capsys) -> None:
    from nextaction.errors import InputError

    with pytest.raises(InputError, match="no column 'genre'"):
        split_users(category_shop(), 2, by="genre")


def test_client_log_keeps_the_catalogue_and_renumbers_its_users(tmp_path: Path) -> None:
    data = cyclic_dataset(n_users=30)
    users = np.array([3, 7, 8, 21])
    client = client_dataset(data, users, client=0, clients=3)
    client.save(tmp_path / "c")
    back = PreparedDataset.load(tmp_path / "c")
    assert back.n_items == data.n_items and back.behaviors == data.behaviors
    assert back.users["user_id"].to_list() == [f"u{u}" for u in users]
    assert back.n_users == 4 and np.diff(np.asarray(back.seqs.offsets))[1:].tolist() == [10] * 4
    for new, old in enumerate(users, start=1):
        a, b = back.seqs.of(new), data.seqs.of(int(old))
        assert np.array_equal(np.asarray(back.seqs.items)[a], np.asarray(data.seqs.items)[b])
        assert np.array_equal(np.asarray(back.seqs.split)[a], np.asarray(data.seqs.split)[b])


def test_write_clients_records_the_split(tmp_path: Path) -> None:
    dirs = write_clients(cyclic_dataset(n_users=30), tmp_path, 3, holdout_users=6)
    summary = json.loads((tmp_path / "split.json").read_text())
    assert [d.name for d in dirs] == ["client-00", "client-01", "client-02"]
    assert sum(summary["users"]) == 24 and summary["holdout_users"] == 6


def test_local_training_learns_from_train_events_only() -> None:
    data = cyclic_dataset(n_users=60, n_items=12, length=10)
    mc, tc = small_cfgs(data, lr=1e-2, warmup_steps=2)
    model = NextActionModel(mc)
    before = local_validate(model, data, tc)["valid-ndcg10"]
    for r in range(1, 6):
        m = local_train(model, data, tc, server_round=r, rounds=5, local_epochs=2)
    # 8 TRAIN events a user (the last two are validation and test): 7 targets each, per local epoch
    assert m["num-examples"] == 60 * 7
    after = local_validate(model, data, tc)
    assert after["num-examples"] == 60
    assert after["valid-ndcg10"] > max(0.9, before)


def test_federated_validation_is_the_mean_over_every_clients_users() -> None:
    data = cyclic_dataset(n_users=45, n_items=12, length=10, seed=3)
    mc, tc = small_cfgs(data)
    torch_model = NextActionModel(mc)
    local_train(torch_model, data, tc, server_round=1, rounds=1, local_epochs=1)
    parts = split_users(data, 3)
    replies = [
        local_validate(torch_model, client_dataset(data, p, client=k, clients=3), tc)
        for k, p in enumerate(parts)
    ]
    weighted = sum(r["valid-ndcg10"] * r["num-examples"] for r in replies) / sum(
        r["num-examples"] for r in replies
    )
    ranks, _ = evaluate_model(torch_model, data.seqs, split=VALID, exclude_seen=True, k_top=0)
    assert weighted == pytest.approx(ranking_metrics(ranks, ks=(10,))["NDCG@10"], abs=1e-9)


def test_federated_config_is_strict() -> None:
    with pytest.raises(ValueError):
        FederatedConfig(fraction=0.0)
    with pytest.raises(ValueError):
        FederatedConfig(dp_noise=-1.0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("federation")
    return cyclic_dataset(n_users=90, n_items=12, length=10).save(root / "data")


SMALL = ["--set", "model.dim=16", "--set", "model.n_layers=1", "--set", "model.n_heads=1",
         "--set", "train.batch_size=16", "--set", "train.lr=0.01", "--set", "train.warmup_steps=2",
         "--set", "train.precision=fp32"]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("model.fusion=text", "model.fusion=id only"),
        ("model.behavior_head=true", "behaviour head"),
        ("federated.rounds=0", "at least 1"),
        ("federated.speed=2", "unknown key"),
    ],
)
def test_refused_options_are_one_line_errors_before_any_process_starts(
    prepared: Path, tmp_path: Path, capsys, option: str, message: str
) -> None:
    code, _, err = run(
        ["federated", "run", str(prepared), "--out", str(tmp_path / "m"), "--set", option], capsys
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "m" / ".flower").exists()


def test_three_local_clients_train_a_model_that_evaluate_recommend_and_audit_read(
    prepared: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "model"
    args = ["federated", "run", str(prepared), "--out", str(out), "--clients", "3", *SMALL,
            "--set", "federated.rounds=2", "--set", "train.holdout_users=15", "--json"]  # fmt: skip
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "round   1  3 clients" in err and "round   2  3 clients" in err  # progress as the rounds end
    assert json.loads(stdout)["metrics"]["NDCG@10"] > 0.3  # the cycle is learned (random ≈ 0.25)
    rounds = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    model, config = load_model(out)
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    for r in rounds:
        assert r["clients"] == 3 and r["failures"] == 0
        # all weights each way, serialised (names, dtypes, shapes: a few hundred bytes a tensor), nothing else
        assert r["bytes_down"] == r["bytes_up"]
        assert 3 * weights < r["bytes_down"] < 3 * (weights + 400 * len(model.state_dict()))
        assert "valid_NDCG@10" in r
    fed = config["federated"]
    assert fed["rounds_run"] == 2 and fed["best_round"] in (1, 2)
    # every client's log holds only its users; together, every user but the 15 held out
    split = json.loads((out / "clients" / "split.json").read_text())
    assert split["users"] and sum(split["users"]) == 75
    code, stdout, _ = run(["evaluate", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["metrics"]["HR@10"] > 0
    code, stdout, _ = run(["recommend", str(out), "--user", "u1", "--k", "2", "--json"], capsys)
    assert code == 0 and len(json.loads(stdout)["items"]) == 2  # 12 items, 10 seen
    code, stdout, _ = run(["audit", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["attacks"]["loss"]["non_members"] == 15


def test_client_side_dp_clips_and_noises_the_updates(prepared: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dp"
    args = ["federated", "run", str(prepared), "--out", str(out), "--clients", "3", *SMALL,
            "--set", "federated.rounds=1", "--set", "federated.dp_noise=0.5", "--set", "federated.dp_clip=0.1"]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err
    log = (out / ".flower" / "run.log").read_text()
    assert "central DP noise" in log  # the server's wrapper noised the aggregate
    _, config = load_model(out)
    assert config["federated"]["strategy"].endswith("client-side fixed clipping DP")
