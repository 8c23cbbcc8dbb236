"""Warm start (training/warm.py, `train --init-from`): weights carried over by item id, new items fresh, the
schedule short, the protocol saying so, and mismatches refused with one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from nextaction.model import ModelConfig, NextActionModel
from nextaction.training.warm import carry_over, item_indexed_keys
from test_cli import run

CFG = ModelConfig(n_items=3, n_behaviors=2, dim=8, n_heads=2, n_layers=1, max_len=6, item_bias=True)


def test_item_rows_follow_their_ids_and_everything_else_is_copied() -> None:
    assert {"item_emb.weight", "out_bias"} <= item_indexed_keys(CFG)
    assert "blocks.0.attn.qkv.weight" not in item_indexed_keys(CFG)
    torch.manual_seed(0)
    old = NextActionModel(CFG).state_dict()
    new_cfg = replace(CFG, n_items=3)
    torch.manual_seed(1)
    fresh = NextActionModel(new_cfg).state_dict()
    weights, report = carry_over(old, ["a", "b", "c"], fresh, ["b", "d", "a"], new_cfg)
    assert report == {"items_kept": 2, "items_new": 1, "items_dropped": 1}
    table, before = weights["item_emb.weight"], old["item_emb.weight"]
    assert torch.equal(table[1], before[2]) and torch.equal(table[3], before[1])  # b and a, by id
    assert torch.equal(table[2], fresh["item_emb.weight"][2])  # d is new: its fresh row
    for key in old:
        if key not in item_indexed_keys(CFG):
            assert torch.equal(weights[key], old[key]), key


def write_log(path: Path, n_users: int, n_items: int, *, offset: int = 0) -> Path:
    rows = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        for t in range(8):
            rows.append(f"user{u + offset},item{(u + t) % n_items},{1_700_000_000 + u * 1000 + t * 60}")
    path.write_text("\n".join(rows) + "\n")
    return path


SMALL = ["--set", "model.dim=16", "--set", "model.n_layers=1", "--set", "train.batch_size=16",
         "--set", "train.precision=fp32", "--set", "train.threads=1"]  # fmt: skip


def test_a_warm_start_continues_the_old_model_on_the_grown_log(tmp_path: Path, capsys) -> None:
    old_log = write_log(tmp_path / "old.csv", 40, 12)
    code, _, err = run(
        ["train", str(old_log), "--out", str(tmp_path / "old"), *SMALL, "--set", "train.epochs=15"], capsys
    )
    assert code == 0, err
    grown = tmp_path / "grown.csv"
    text = (
        old_log.read_text()
        + "\n".join(write_log(tmp_path / "more.csv", 20, 15, offset=100).read_text().splitlines()[1:])
        + "\n"
    )
    grown.write_text(text)
    code, stdout, err = run(["train", str(grown), "--out", str(tmp_path / "warm"), "--init-from", str(tmp_path / "old"), "--set", "train.threads=1", "--set", "train.precision=fp32", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "warm" / "config.json").read_text())
    warm = config["warm_start"]
    assert warm["items_kept"] == 12 and warm["items_new"] == 3 and warm["items_dropped"] == 0
    assert config["epochs_run"] <= 10 == warm["epochs"]  # the short schedule
    assert config["model"]["dim"] == 16  # the old model's settings are the defaults
    assert "warm start from" in json.loads(stdout)["protocol"]["warm_start"]
    # started from the old weights: its first validation is far above a fresh model's first
    code, _, err = run(
        ["train", str(grown), "--out", str(tmp_path / "scratch"), *SMALL, "--set", "train.epochs=1"], capsys
    )
    assert code == 0, err

    def first(run_dir: str) -> float:
        return json.loads((tmp_path / run_dir / "metrics.jsonl").read_text().splitlines()[0])["valid_NDCG@10"]

    assert first("warm") > first("scratch") + 0.1


def test_mismatches_are_one_line_errors(tmp_path: Path, capsys) -> None:
    log = write_log(tmp_path / "a.csv", 30, 10)
    code, _, err = run(
        ["train", str(log), "--out", str(tmp_path / "m"), *SMALL, "--set", "train.epochs=1"], capsys
    )
    assert code == 0, err
    code, _, err = run(["train", str(log), "--out", str(tmp_path / "w"), "--init-from", str(tmp_path / "m"), "--set", "model.dim=32"], capsys)  # fmt: skip
    assert code == 2 and "shape" in err and "Traceback" not in err
    views = tmp_path / "b.csv"
    views.write_text(
        "user_id,item_id,timestamp,behavior\n"
        + "".join(
            f"u{u},i{t},{1_700_000_000 + t},{'view' if t % 2 else 'buy'}\n"
            for u in range(20)
            for t in range(6)
        )
    )
    code, _, err = run(
        ["train", str(views), "--out", str(tmp_path / "v"), "--init-from", str(tmp_path / "m")], capsys
    )
    assert code == 2 and "behaviours" in err
