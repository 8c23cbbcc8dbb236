"""Hyperparameter search (tuning.py, `nextaction tune`): the search space is strict, a study resumes, the best
settings come out as a config `train` reads, and the search never reads test events."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factories import cyclic_dataset
from nextaction.config import build, load_sections
from nextaction.data.schema import SPLIT, TEST
from nextaction.errors import InputError
from nextaction.model import ModelConfig
from nextaction.tuning import check_space, load_space, tune
from test_cli import run

SPACE = {"model.dim": {"choices": [8, 16]}, "train.lr": {"low": 1e-3, "high": 2e-2, "log": True}}
BASE = {"model": {"n_layers": 1, "max_len": 10, "dropout": 0.0},
        "train": {"epochs": 3, "batch_size": 16, "warmup_steps": 2, "precision": "fp32", "threads": 1}}  # fmt: skip


def test_the_space_is_strict(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown setting 'model\.width'"):
        check_space({"model.width": {"choices": [1]}}, where="x")
    with pytest.raises(InputError, match="low < high"):
        check_space({"train.lr": {"low": 0.1, "high": 0.01}}, where="x")
    with pytest.raises(InputError, match="choices"):
        check_space({"train.lr": {"choices": [], "low": 1}}, where="x")
    f = tmp_path / "space.toml"
    f.write_text(
        "[model]\ndim = { choices = [8, 16] }\n[train]\nlr = { low = 0.001, high = 0.01, log = true }\n"
    )
    assert load_space(f) == {
        "model.dim": {"choices": [8, 16]},
        "train.lr": {"low": 0.001, "high": 0.01, "log": True},
    }
    f.write_text("[prepare]\nx = { choices = [1] }\n")
    with pytest.raises(InputError, match="unknown section"):
        load_space(f)


def test_a_search_writes_a_config_train_reads_and_resumes(tmp_path: Path) -> None:
    data = cyclic_dataset(n_users=40, n_items=12, length=8)
    result = tune(data, tmp_path, trials=3, space=SPACE, base=BASE, pruner="none")
    assert result["trials"] == {"complete": 3} and 0 < result["best_value"] <= 1
    best = load_sections(tmp_path / "best.toml", [], sections=("model", "train", "prepare"))
    assert best["model"]["dim"] == result["best_params"]["model.dim"]
    assert best["train"]["lr"] == pytest.approx(result["best_params"]["train.lr"])
    assert best["train"]["epochs"] == 3  # the fixed settings come along
    build(ModelConfig, {"n_items": 12, "n_behaviors": 2, **best["model"]}, where="[model]")
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and all(r["state"] == "complete" for r in rows)
    assert (tmp_path / "trials.png").stat().st_size > 0
    again = tune(data, tmp_path, trials=1, space=SPACE, base=BASE, pruner="none")
    assert again["trials"] == {"complete": 4} and again["trials_this_run"] == 1


def test_the_search_never_reads_test_events(tmp_path: Path) -> None:
    data = cyclic_dataset(n_users=40, n_items=12, length=8, seed=1)
    # the same log with every test event pointing at other items: a search that read them would differ
    is_test = (data.events[SPLIT] == TEST).to_numpy()
    items = data.events["item_idx"].to_numpy().copy()
    items[is_test] = items[is_test] % 12 + 1
    poisoned = replace(data, events=data.events.with_columns(pl.Series("item_idx", items)), sequences=None)
    assert not np.array_equal(np.asarray(poisoned.seqs.items), np.asarray(data.seqs.items))
    a = tune(data, tmp_path / "a", trials=2, space=SPACE, base=BASE, pruner="none", seed=3)
    b = tune(poisoned, tmp_path / "b", trials=2, space=SPACE, base=BASE, pruner="none", seed=3)
    assert a["best_params"] == b["best_params"] and a["best_value"] == b["best_value"]
    rows_a = list(csv.DictReader((tmp_path / "a" / "trials.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b" / "trials.csv").open()))
    assert [r["valid_NDCG@10"] for r in rows_a] == [r["valid_NDCG@10"] for r in rows_b]


def test_cli_tunes_and_refuses_a_search_without_an_end(tmp_path: Path, capsys) -> None:
    data = cyclic_dataset(n_users=30, n_items=10, length=8).save(tmp_path / "data")
    space = tmp_path / "space.toml"
    space.write_text("[model]\ndim = { choices = [8, 16] }\n")
    sets = [
        x
        for k, v in [("train.epochs", 2), ("train.threads", 1), ("model.n_layers", 1)]
        for x in ("--set", f"{k}={v}")
    ]
    code, stdout, err = run(
        [
            "tune",
            str(data),
            "--out",
            str(tmp_path / "s"),
            "--trials",
            "2",
            "--space",
            str(space),
            *sets,
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["trials"] == {"complete": 2}
    code, _, err = run(["tune", str(data), "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "--trials" in err
    code, _, err = run(
        [
            "tune",
            str(data),
            "--out",
            str(tmp_path / "u"),
            "--trials",
            "1",
            "--space",
            str(space),
            "--set",
            "model.dim=8",
        ],
        capsys,
    )
    assert code == 2 and "searched too" in err
