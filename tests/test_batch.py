"""Batch scoring (Predictor.recommend_all, batch.py, `recommend --all-users`, `predict --pairs`): the same
answers as one user at a time, every user once, chunk-size invariance, unknown users and items counted,
atomic Parquet output."""

from __future__ import annotations

import json

import polars as pl
import pytest

from factories import cyclic_dataset, trained_model_dir
from nextaction import Predictor
from nextaction.batch import predict_pairs
from nextaction.model import ModelConfig
from nextaction.training.state import TrainConfig
from test_cli import run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    data = cyclic_dataset(n_users=40, n_items=25, length=9)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=2, dim=16, max_len=6, dropout=0.0)
    tc = TrainConfig(epochs=8, batch_size=16, lr=5e-3, warmup_steps=5, precision="fp32")
    return trained_model_dir(out, data, mc, tc)


def test_every_user_gets_what_recommend_gives_one_at_a_time(model_dir) -> None:
    p = Predictor.load(model_dir)
    frame = p.recommend_all(5)
    assert frame.columns == ["user_id", "rank", "item_id", "score"]
    assert frame.height == 40 * 5 and frame["user_id"].n_unique() == 40
    for user in ("u1", "u17", "u40"):
        # histories longer than max_len (9 events, window 6) are cut as recommend cuts them
        one = p.recommend(p.history(user, split="all"), k=5)
        rows = frame.filter(pl.col("user_id") == user).sort("rank")
        assert rows["item_id"].to_list() == [i for i, _ in one]
        assert rows["score"].to_list() == pytest.approx([s for _, s in one], abs=1e-4)
        assert rows["rank"].to_list() == [1, 2, 3, 4, 5]


def test_the_chunk_size_does_not_change_the_answer(model_dir) -> None:
    p = Predictor.load(model_dir)
    whole = p.recommend_all(4, chunk=1024)
    pieces = p.recommend_all(4, chunk=7)
    assert whole["item_id"].to_list() == pieces["item_id"].to_list()
    assert whole["score"].to_list() == pytest.approx(pieces["score"].to_list(), abs=1e-5)


def test_seen_items_follow_the_rule_asked(model_dir) -> None:
    p = Predictor.load(model_dir)
    history = {e["item_id"] for e in p.history("u3", split="all")}
    excluded = p.recommend_all(10, users=["u3"])
    assert not set(excluded["item_id"]) & history
    kept = p.recommend_all(25, users=["u3"], exclude_seen=False)
    assert set(kept["item_id"]) >= history


def test_listed_users_in_order_and_unknown_ones_counted(model_dir) -> None:
    p = Predictor.load(model_dir)
    frame = p.recommend_all(3, users=["u9", "ghost", "u2"])
    assert frame["user_id"].unique(maintain_order=True).to_list() == ["u9", "u2"]
    assert p.last_unknown == ["ghost"]


def test_recommend_for_a_behaviour_in_batch(funnel_dir) -> None:
    p = Predictor.load(funnel_dir)
    frame = p.recommend_all(5, users=["u5", "u7"], behavior="buy")
    one = p.recommend(p.history("u5", split="all"), k=5, behavior="buy")
    rows = frame.filter(pl.col("user_id") == "u5")
    assert rows["item_id"].to_list() == [i for i, _ in one]
    assert rows["score"].to_list() == pytest.approx([s for _, s in one], abs=1e-4)


def test_pairs_get_predict_probabilities_with_notes(funnel_dir) -> None:
    p = Predictor.load(funnel_dir)
    pairs = pl.DataFrame({"user_id": ["u5", "u5", "nobody", "u7"], "item_id": ["i1", "zzz", "i2", "i3"]})
    frame = predict_pairs(p, pairs)
    assert frame["user_id"].to_list() == ["u5", "u5", "nobody", "u7"]
    assert frame["note"].to_list() == [None, "unknown item", "unknown user", None]
    direct = p.predict(p.history("u5", split="all"), ["i1"])["i1"]
    assert frame.row(0, named=True)["buy"] == pytest.approx(direct["buy"])
    assert frame.row(1, named=True)["buy"] is None


def test_cli_writes_parquet_atomically_and_lists_unknown_users(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "recs.parquet"
    code, stdout, err = run(
        ["recommend", str(model_dir), "--all-users", "--k", "3", "--out", str(out), "--json"], capsys
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["users"] == 40 and summary["rows"] == 120
    assert pl.read_parquet(out).columns == ["user_id", "rank", "item_id", "score"]
    assert [f.name for f in tmp_path.iterdir()] == ["recs.parquet"]  # no temporary file left behind
    (tmp_path / "users.txt").write_text("u1\nwho\nu2\n")
    code, stdout, _ = run(
        ["recommend", str(model_dir), "--users", str(tmp_path / "users.txt"), "--out", str(out), "--json"],
        capsys,
    )
    assert code == 0 and json.loads(stdout)["unknown_users"] == 1
    assert pl.read_csv(tmp_path / "recs.unknown_users.csv")["user_id"].to_list() == ["who"]


def test_cli_batch_mistakes_are_one_line_errors(model_dir, tmp_path, capsys) -> None:
    code, _, err = run(["recommend", str(model_dir), "--all-users"], capsys)
    assert code == 2 and "--out" in err
    code, _, err = run(["recommend", str(model_dir)], capsys)
    assert code == 2 and "--user" in err
    (tmp_path / "pairs.csv").write_text("user,item\nu1,i1\n")
    code, _, err = run(
        [
            "predict",
            str(model_dir),
            "--pairs",
            str(tmp_path / "pairs.csv"),
            "--out",
            str(tmp_path / "p.parquet"),
        ],
        capsys,
    )
    assert code == 2 and "user_id" in err and "line 1" in err
