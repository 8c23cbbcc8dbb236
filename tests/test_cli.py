"""The command line end to end, through the real entry point (exit codes and one-line errors included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factories import sequences_log
from nextaction.cli import main

TINY = ["--set", "model.dim=16", "--set", "model.max_len=8", "--set", "train.epochs=2"]
TINY += ["--set", "train.precision=fp32"]


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


def write_log(path: Path, n_users: int = 40, n_items: int = 15, length: int = 8) -> Path:
    rows = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        for t in range(length):
            rows.append(f"user{u},item{(u + t) % n_items},{1_700_000_000 + u * 1000 + t * 60}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_prepare_writes_report_with_balanced_accounting(tmp_path, capsys):
    log = write_log(tmp_path / "events.csv")
    with open(log, "a") as f:
        f.write("userX,,1700000000\n")  # missing item: rejected, not lost
        f.write("user0,item0,1700000000\n")  # exact duplicate of the first row
    code, out, err = run(["prepare", str(log), "--out", str(tmp_path / "data"), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    rows = report["rows"]
    assert rows["read"] == 40 * 8 + 2
    assert rows["read"] == rows["kept"] + rows["rejected"] + rows["duplicates"] + rows["filtered"]
    assert rows["rejected"] == 1 and rows["duplicates"] == 1
    assert report["users"] == 40 and report["items"] == 15
    assert report["clock"] == "timestamps"
    rejects = pl.read_csv(tmp_path / "data" / "rejects.csv")
    assert rejects.height == 1 and rejects["line"][0] == 40 * 8 + 2


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["prepare", "no/such/file.csv", "--out", "x"], "no such file"),
        (["prepare", ".", "--out", "x", "--format", "csv"], "directory"),
        (["evaluate", "."], "not a trained model"),
        (["train", "no/such.csv", "--out", "m"], "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "Traceback" not in err
    # progress lines may precede it; the error itself is exactly one line
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0].lower()


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    log = write_log(tmp_path / "events.csv")
    code, _, err = run(["train", str(log), "--out", str(tmp_path / "m"), "--set", "model.dimm=8"], capsys)
    assert code == 2
    assert "dimm" in err and "known keys" in err


def test_train_evaluate_recommend_contract(tmp_path, capsys):
    log = write_log(tmp_path / "events.csv")
    model = tmp_path / "m"
    sets = [
        "--set",
        "model.dim=16",
        "--set",
        "model.max_len=8",
        "--set",
        "train.epochs=2",
        "--set",
        "train.precision=fp32",
    ]
    code, out, err = run(["train", str(log), "--out", str(model), *sets, "--json"], capsys)
    assert code == 0, err
    assert (model / "model.safetensors").is_file() and (model / "training.png").is_file()
    assert len((model / "metrics.jsonl").read_text().splitlines()) == 2

    code, out, err = run(["evaluate", str(model), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    for key in ("HR@10", "NDCG@10", "MRR@10", "HR@5", "NDCG@5", "HR@20", "Recall@10", "coverage@10"):
        assert 0.0 <= result["metrics"][key] <= 1.0
    assert result["protocol"]["split"] == "test"
    assert result["protocol"]["exclude_seen"] is True
    assert result["protocol"]["users_evaluated"] == 40

    code, out, err = run(["evaluate", str(model), "--split", "valid", "--baselines", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["baselines"]

    code, out, err = run(["recommend", str(model), "--user", "user3", "--k", "5", "--json"], capsys)
    assert code == 0, err
    recs = json.loads(out)["items"]
    assert len(recs) == 5
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)

    code, _, err = run(["recommend", str(model), "--user", "nobody"], capsys)
    assert code == 2 and "unknown user" in err


def test_history_of_a_log_without_clock_shows_positions_not_dates(tmp_path, capsys):
    """Beauty's `sequences` format has no time column: events are numbered, never dated 1970."""
    log = sequences_log(tmp_path / "Beauty.txt")
    model = tmp_path / "m"
    code, _, err = run(["train", str(log), "--format", "sequences", "--out", str(model), *TINY], capsys)
    assert code == 0, err
    assert json.loads((model / "data" / "report.json").read_text())["clock"] == "positions"

    code, out, err = run(["history", str(model), "--user", "u3", "--limit", "3", "--json"], capsys)
    assert code == 0, err
    h = json.loads(out)
    assert h["clock"] == "positions"
    assert [(e["position"], e["item_id"]) for e in h["events"]] == [(6, "s8"), (7, "s9"), (8, "s10")]
    assert all("time" not in e for e in h["events"])
    code, out, err = run(["history", str(model), "--user", "u3"], capsys)
    assert code == 0, err
    assert "1970" not in out and "position" in out and "s10" in out


def test_titles_of_the_item_table_in_recommend_history_and_explain(shop, tmp_path, capsys):
    """A model trained with --items shows item titles beside the ids (JSON: a `title` per item)."""
    titles = dict(pl.read_csv(shop / "items.csv").iter_rows())
    model = tmp_path / "m"
    argv = ["train", str(shop / "events.csv"), "--items", str(shop / "items.csv"), "--out", str(model)]
    code, _, err = run([*argv, *TINY], capsys)
    assert code == 0, err

    code, out, err = run(["recommend", str(model), "--user", "u1", "--k", "5", "--json"], capsys)
    assert code == 0, err
    recs = json.loads(out)["items"]
    assert len(recs) == 5 and all(r["title"] == titles[r["item_id"]] for r in recs)
    code, out, err = run(["recommend", str(model), "--user", "u1", "--k", "5"], capsys)
    assert code == 0, err
    assert "title" in out and titles[recs[0]["item_id"]] in out

    code, out, err = run(["history", str(model), "--user", "u1", "--json"], capsys)
    assert code == 0, err
    events = json.loads(out)["events"]
    assert events and all(e["title"] == titles[e["item_id"]] for e in events)
    assert all(e["time"].startswith("2023-") for e in events)  # a timestamped log: real times

    code, out, err = run(
        ["explain", str(model), "--user", "u1", "--item", recs[0]["item_id"], "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["title"] == titles[recs[0]["item_id"]]


def test_demo_runs_the_whole_path(tmp_path, capsys):
    code, out, err = run(["demo", "--out", str(tmp_path / "demo"), "--events", "3000"], capsys)
    assert code == 0, err
    assert "demo finished" in out
    for needle in ("most-popular", "item-to-item", "nextaction", "recommendations", "P(buy)", "buy AUC"):
        assert needle in out
    assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "data" / "report.json").is_file()


def test_multi_behaviour_log_trains_predicts_and_evaluates_behaviours(tmp_path, capsys):
    """`train events.csv --out m` on a view/cart/buy log needs no flags: temporal split + behaviour head."""
    from nextaction.datasets import synthetic

    events_csv, _ = synthetic(n_events=6000, seed=1).write(tmp_path / "log")
    model = tmp_path / "m"
    sets = ["--set", "model.dim=16", "--set", "train.epochs=2", "--set", "train.precision=fp32"]
    code, _, err = run(["train", str(events_csv), "--out", str(model), *sets], capsys)
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    assert config["model"]["behavior_head"] is True and config["exclude_seen"] is False
    assert set(config["calibration"]) == {"view", "cart", "buy"}
    ranker = config["behavior_ranker"]  # the second stage, fitted on the valid window with the calibration
    assert len(ranker["coef"]) == 3 and len(ranker["mean"]) == len(ranker["coef"][0])

    code, out, err = run(["evaluate", str(model), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["protocol"]["split_kind"] == "temporal"
    beh = result["behaviors"]
    for name in ("view", "cart", "buy"):
        for key in ("AUC", "GAUC", "logloss", "ECE", "accuracy", "precision", "recall", "F1"):
            assert key in beh[name]
    # next-buy ranks every test-window user who buys, counted here from the prepared data itself
    from nextaction.data.dataset import PreparedDataset
    from nextaction.data.schema import TEST

    prepared = PreparedDataset.load(model / "data")
    seqs = prepared.seqs
    buys = (np.asarray(seqs.split) == TEST) & (np.asarray(seqs.behaviors) == prepared.behaviors.index("buy"))
    buyers = np.unique(np.searchsorted(seqs.offsets, np.flatnonzero(buys), side="right") - 1)
    assert beh["next_buy"]["users"] == len(buyers) > 0
    assert "20 negatives per positive" in beh["protocol"]["candidates"]

    data = pl.read_csv(events_csv)
    user = str(data["user_id"][0])
    items = [str(i) for i in data["item_id"].unique().sort()[:3].to_list()]
    code, out, err = run(
        ["predict", str(model), "--user", user, "--items", ",".join([*items, "no-such"]), "--json"], capsys
    )
    assert code == 0, err
    probs = json.loads(out)
    assert probs["no-such"] is None and "unknown items" in err
    from nextaction import Predictor

    p = Predictor.load(model)  # the command prints what the library computes, nothing of its own
    direct = p.predict(p.history(user, split="all"), items)
    for item in items:
        assert probs[item] == pytest.approx(direct[item])

    code, out, err = run(["predict", str(model), "--user", "stranger", "--items", items[0], "--json"], capsys)
    assert code == 0 and "empty history" in err
    assert set(json.loads(out)[items[0]]) == {"view", "cart", "buy"}

    code, out, err = run(
        ["recommend", str(model), "--user", user, "--behavior", "buy", "--k", "3", "--json"], capsys
    )
    assert code == 0, err
    assert len(json.loads(out)["items"]) == 3

    code, _, err = run(["recommend", str(model), "--user", user, "--behavior", "fly"], capsys)
    assert code == 2 and "view, cart, buy" in err
