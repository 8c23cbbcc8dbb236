"""Distributed training: sharding units, and 2-process gloo runs launched as a user launches them.

The launched runs use ``torchrun --standalone --nproc-per-node 2 -m nextaction train …`` (the CLI,
unchanged) on a tiny generated log. NEXTACTION_DEBUG_RANK_DUMP makes every rank write its final weights,
so the test can compare the ranks with each other, with a single process and with a resumed run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from factories import cyclic_dataset, funnel_dataset
from nextaction.batches import length_batches
from nextaction.data.schema import VALID
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.model import ModelConfig, NextActionModel
from nextaction.scoring import evaluate_model
from nextaction.training.distributed import shard_batches, shard_users, steps_per_epoch
from nextaction.workflow import train_model

# dropout 0 and fp32: the 2-process run then follows the single-process optimisation (up to rounding);
# warm-up longer than the run: the LR schedule does not depend on train.epochs, so a run stopped after
# 2 epochs and resumed to 4 must replay the uninterrupted one exactly.
SETS = [
    "train.threads=1",
    "train.batch_size=16",
    "train.warmup_steps=20",
    "train.precision=fp32",
    "model.dim=16",
    "model.max_len=8",
    "model.dropout=0",
]


def _sets(epochs: int) -> list[str]:
    return [*SETS, f"train.epochs={epochs}"]


def _torchrun(data: Path, out: Path, dump: Path, sets: list[str], *, resume: bool = False) -> str:
    """Train with 2 gloo processes; returns the job's stderr (the CLI's epoch lines)."""
    dump.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "nextaction", "train", str(data), "--out", str(out), "--json"]
    cmd += [arg for s in sets for arg in ("--set", s)]
    cmd += ["--resume"] if resume else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NEXTACTION_DEBUG_RANK_DUMP": str(dump)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-epoch 2-process run, the same run stopped after 2 epochs and resumed, and one process."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "cyclic"
    cyclic_dataset(n_users=60, n_items=20, length=10).save(data)
    _torchrun(data, tmp / "full", tmp / "full_dump", _sets(4))
    _torchrun(data, tmp / "resumed", tmp / "part_dump", _sets(2))
    log = _torchrun(data, tmp / "resumed", tmp / "resumed_dump", _sets(4), resume=True)
    (tmp / "resumed.log").write_text(log)
    os.environ["NEXTACTION_DEBUG_RANK_DUMP"] = str(tmp / "single_dump")
    (tmp / "single_dump").mkdir()
    try:
        train_model(data, tmp / "single", sets=_sets(4))
    finally:
        del os.environ["NEXTACTION_DEBUG_RANK_DUMP"]
    return tmp


def test_two_gloo_processes_train_one_model(runs):
    rank0 = load_file(runs / "full_dump" / "rank0.safetensors")
    _assert_same(rank0, load_file(runs / "full_dump" / "rank1.safetensors"))
    # rank 0 alone wrote the model directory: one metrics line per epoch, the best weights, the test result
    lines = [json.loads(x) for x in (runs / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    config = json.loads((runs / "full" / "config.json").read_text())
    assert config["world_size"] == 2 and config["epochs_run"] == 4
    assert (runs / "full" / "model.safetensors").is_file()
    assert "NDCG@10" in json.loads((runs / "full" / "eval_test.json").read_text())["metrics"]


def test_two_processes_follow_the_single_process_optimisation(runs):
    """Same global batches, steps and LR schedule; the gradient of the global batch's mean loss."""
    single = load_file(runs / "single_dump" / "rank0.safetensors")
    _assert_same(single, load_file(runs / "full_dump" / "rank0.safetensors"), atol=5e-4)
    one = [json.loads(x) for x in (runs / "single" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (runs / "full" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == b["lr"]


def test_resumed_distributed_run_equals_uninterrupted(runs):
    _assert_same(
        load_file(runs / "full_dump" / "rank0.safetensors"),
        load_file(runs / "resumed_dump" / "rank0.safetensors"),
    )
    lines = (runs / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    log = (runs / "resumed.log").read_text()
    assert "epoch   3" in log and "epoch   1" not in log  # it went on from epoch 2


def test_behaviour_head_gradients_are_synchronised(tmp_path):
    """The output layer and the behaviour head run outside the model's forward: with dropout on and a
    behaviour head (a multi-behaviour log), the ranks still end with the same weights."""
    if not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    funnel_dataset(n_users=60, n_items=30, length=12).save(tmp_path / "funnel")
    sets = ["train.epochs=1", "train.threads=1", "train.batch_size=16", "model.dim=16", "model.max_len=8"]
    _torchrun(tmp_path / "funnel", tmp_path / "m", tmp_path / "dump", sets)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["behavior_head"]
    _assert_same(
        load_file(tmp_path / "dump" / "rank0.safetensors"), load_file(tmp_path / "dump" / "rank1.safetensors")
    )


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n_rows", [64, 67, 70])
def test_shards_cover_each_row_once_with_equal_steps(world, n_rows):
    lengths = np.random.default_rng(0).integers(2, 9, n_rows)
    batches = length_batches(lengths, 16, np.random.default_rng([1, 2]))
    shards = [shard_batches(batches, r, world) for r in range(world)]
    steps = steps_per_epoch(n_rows, 16, world)
    assert all(len(s) == steps for s in shards)  # every rank takes the same number of steps
    for i in range(steps):
        glob = shards[0][i][0]
        assert all(np.array_equal(s[i][0], glob) for s in shards)  # the same global batch everywhere
        mine = np.concatenate([s[i][1] for s in shards])
        assert np.array_equal(np.sort(mine), np.sort(glob))  # split among the ranks, each row once
    covered = np.concatenate([rows for rows, _ in shards[0]])
    short = n_rows % 16
    if short == 0 or short >= world:
        assert np.array_equal(np.sort(covered), np.arange(n_rows))  # every row, exactly once
    else:  # a last batch with fewer rows than ranks is skipped by all of them
        assert len(covered) == n_rows - short and len(np.unique(covered)) == len(covered)


def test_validation_shards_rank_every_user_as_the_whole():
    data = cyclic_dataset(n_users=37, n_items=15, length=9)
    torch.manual_seed(0)
    model = NextActionModel(ModelConfig(n_items=data.n_items, n_behaviors=2, dim=16, max_len=8))
    whole, _ = evaluate_model(model, data.seqs, split=VALID, exclude_seen=True, k_top=0)
    parts = [shard_users(data.seqs, r, 3) for r in range(3)]
    assert sum(len(p.items) for p in parts) == len(data.seqs.items)
    ranks = np.concatenate(
        [evaluate_model(model, p, split=VALID, exclude_seen=True, k_top=0)[0] for p in parts]
    )
    assert len(ranks) == len(whole)
    assert ranking_metrics(ranks) == pytest.approx(ranking_metrics(whole))
