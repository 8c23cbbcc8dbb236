"""User-level DP-SGD (privacy/dp.py): per-user gradients, clipping, accounting, refusals, the CLI path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.optimizers import DPOptimizer

from factories import cyclic_dataset, small_cfgs
from nextaction.batches import gather_padded, training_sequences
from nextaction.data.dataset import Sequences
from nextaction.model import CausalSelfAttention, ModelConfig, NextActionModel
from nextaction.privacy.dp import (
    GhostItemTable,
    PrivacyConfig,
    UserLoss,
    add_clipped,
    fit_private,
    per_user_gradients,
    sample_windows,
    window_nll,
)
from nextaction.training.loop import held_out_users
from test_cli import run, write_log


def tiny_model(*, repeat: bool = False, max_len: int = 10) -> NextActionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, n_behaviors=3, dim=16, n_heads=2, n_layers=1, max_len=max_len, dropout=0.0,
                      repeat_score=repeat)  # fmt: skip
    model = NextActionModel(cfg)
    for m in model.modules():
        if isinstance(m, CausalSelfAttention):
            m.explicit = True
    return model


def windows(n_users: int, L: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(U, L + 1) right-padded random windows of the given lengths."""
    rng = np.random.default_rng(seed)
    items = torch.zeros(n_users, L + 1, dtype=torch.long)
    behaviors = torch.zeros_like(items)
    for u, n in enumerate(lengths):
        items[u, :n] = torch.from_numpy(rng.integers(1, 31, n))
        behaviors[u, :n] = torch.from_numpy(rng.integers(1, 3, n))
    times = torch.arange(L + 1).expand(n_users, L + 1) * 60_000 * (items != 0)
    return items, behaviors, times


@pytest.mark.parametrize("repeat", [False, True])
def test_per_user_gradients_equal_each_users_own_backward(repeat: bool) -> None:
    model = tiny_model(repeat=repeat)
    loss = UserLoss(model)
    params = {n: p for n, p in loss.named_parameters() if p.requires_grad}
    items, behaviors, times = windows(3, 10, [11, 5, 2])
    grads, values = per_user_gradients(loss, params, dict(loss.named_buffers()))(items, behaviors, times)
    for u in range(3):
        model.zero_grad()
        value = loss(items[u], behaviors[u], times[u])
        value.backward()
        assert torch.allclose(values[u], value.detach(), atol=1e-5)
        for n, p in params.items():
            expected = torch.zeros_like(p) if p.grad is None else p.grad
            assert torch.allclose(grads[n][u], expected, atol=1e-5), (u, n)


@pytest.mark.parametrize("fusion", ["id", "text"])
def test_window_nll_is_the_cross_entropy_of_the_model(fusion: str) -> None:
    """window_nll (the vmappable form; text items through the reassociated product) gives the model's
    ordinary cross-entropy on real positions."""
    if fusion == "id":
        model = tiny_model()
    else:
        torch.manual_seed(0)
        cfg = ModelConfig(n_items=30, n_behaviors=3, dim=16, n_heads=2, n_layers=1, max_len=10, dropout=0.0,
                          text_dim=24, fusion="text")  # fmt: skip
        model = NextActionModel(cfg)
        with torch.no_grad():
            model.text_emb.normal_()
            model.text_emb[0] = 0.0
    model.eval()
    items, behaviors, times = windows(2, 10, [11, 4])
    nll, keep, _, _ = window_nll(model, items, behaviors, times)
    h = model(items[:, :-1], behaviors[:, :-1], times[:, :-1])
    logits = h @ model.output_embeddings().T
    logits[..., 0] = float("-inf")
    ref = torch.nn.functional.cross_entropy(logits[keep], items[:, 1:][keep], reduction="none")
    assert keep.sum() == 10 + 3
    assert torch.allclose(nll[keep], ref, atol=1e-5)
    assert torch.isfinite(torch.where(keep, nll, 0.0)).all()


def test_clipping_bounds_each_users_contribution_whatever_their_events() -> None:
    """Before noise, a user with 1,000 events moves the weights no more than a user with 5: each user's whole
    gradient is clipped to max_grad_norm, and a user contributes one window per step."""
    L, C = 10, 0.05
    model = tiny_model(max_len=L)
    loss = UserLoss(model)
    params = {n: p for n, p in loss.named_parameters() if p.requires_grad}
    grads_of = per_user_gradients(loss, params, dict(loss.named_buffers()))
    # a CSR of two users: 1,000 events and 5 events; one window each, as the training step draws them
    rng = np.random.default_rng(1)
    n = [1000, 5]
    seqs = Sequences(
        offsets=np.array([0, 1000, 1005]),
        items=rng.integers(1, 31, 1005),
        behaviors=rng.integers(1, 3, 1005),
        timestamps=np.arange(1005) * 60_000,
        split=np.zeros(1005, dtype=np.int8),
    )
    for user in (0, 1):
        starts, lengths = sample_windows(seqs, np.array([user]), L + 1, rng)
        assert lengths[0] == min(n[user], L + 1)
        b = gather_padded(seqs, starts, lengths, pad_to=L + 1)
        grads, _ = grads_of(b.items, b.behaviors, b.timestamps)
        raw = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
        assert raw > C  # clipping is active for both users
        sums = {k: torch.zeros_like(p) for k, p in params.items()}
        add_clipped(sums, grads, max_norm=C)
        moved = math.sqrt(sum(float(v.pow(2).sum()) for v in sums.values()))
        assert moved == pytest.approx(C, rel=1e-3)


def test_clipped_sums_are_opacus_dpoptimizers() -> None:
    """add_clipped clips and sums as Opacus's DPOptimizer does (its clip_and_accumulate, noise aside)."""
    model = tiny_model()
    loss = UserLoss(model)
    params = {n: p for n, p in loss.named_parameters() if p.requires_grad}
    grads, _ = per_user_gradients(loss, params, dict(loss.named_buffers()))(*windows(4, 10, [11, 7, 3, 2]))
    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    add_clipped(sums, grads, max_norm=0.3)
    opt = DPOptimizer(torch.optim.SGD(list(params.values()), lr=1.0), noise_multiplier=0.0, max_grad_norm=0.3,
                      expected_batch_size=4)  # fmt: skip
    for k, p in params.items():
        p.grad_sample = grads[k]
    opt.clip_and_accumulate()
    for k, p in params.items():
        assert torch.allclose(sums[k], p.summed_grad, atol=1e-6), k


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_ghost_clipping_equals_materialised_per_user_gradients(max_norm: float) -> None:
    """The ID table's ghost norms and clipped sum (never forming a user's table gradient) equal the clipped
    sum of the materialised per-user gradients, with clipping active (1e-3) and inactive (1e3). Window 0
    repeats an item, so the tied table's input and output uses overlap (the cross term)."""
    model = tiny_model()
    loss = UserLoss(model)
    params = {n: p for n, p in loss.named_parameters() if p.requires_grad}
    items, behaviors, times = windows(4, 10, [11, 7, 3, 2])
    items[0, 3] = items[0, 1] = items[0, 5]
    grads, values = per_user_gradients(loss, params, dict(loss.named_buffers()))(items, behaviors, times)
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    add_clipped(expected, grads, max_norm=max_norm)
    assert GhostItemTable.fits(model)
    ghost = GhostItemTable(model, params)
    got = {k: torch.zeros_like(p) for k, p in params.items()}
    ghost_values = ghost.add_clipped(got, items, behaviors, times, max_norm=max_norm)
    assert torch.allclose(ghost_values, values, atol=1e-5)
    for k in params:
        assert torch.allclose(got[k], expected[k], atol=1e-6, rtol=1e-4), k


def test_epsilon_is_opacus_rdp_of_the_steps_taken(tmp_path: Path) -> None:
    data = cyclic_dataset(n_users=200, n_items=12, length=8)
    mc, tc = small_cfgs(data, epochs=3, holdout_users=30, patience=30)
    _model, state, rep = fit_private(
        data, mc, tc, PrivacyConfig(epsilon=4.0, users_per_step=40), out_dir=tmp_path
    )
    q, sigma, steps, delta = rep["sample_rate"], rep["noise_multiplier"], rep["steps"], rep["delta"]
    assert rep["training_users"] == 170 and delta == pytest.approx(1 / 170)
    assert q == pytest.approx(40 / 170) and steps == state.step == rep["planned_steps"] == 3 * math.ceil(
        170 / 40
    )
    # the accountant's composition, recomputed with Opacus's RDP analysis for (σ, q, steps)
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    assert rep["epsilon"] == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                                              orders=orders), delta=delta)  # fmt: skip
    assert rep["epsilon"] == pytest.approx(eps, rel=1e-6)
    # σ was calibrated so that the planned steps spend the target, and no more
    assert rep["epsilon"] <= 4.0 and rep["epsilon"] == pytest.approx(4.0, rel=0.02)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3] and lines[-1]["epsilon"] == pytest.approx(rep["epsilon"])


def test_held_out_users_are_never_trained_on(tmp_path: Path) -> None:
    """The checkpoint is chosen on users the model never saw: not one of their events is learned."""
    from nextaction.training.loop import learned_sequences, validation_users

    data = cyclic_dataset(n_users=100, n_items=12, length=8)
    _, tc = small_cfgs(data, holdout_users=20)
    held = held_out_users(data, tc)
    assert held is not None and len(held) == 20
    _, learned_valid = validation_users(data, tc)
    learn = learned_sequences(data, tc, learned_valid)
    n_learned = np.diff(learn.offsets)
    assert (n_learned[held] == 0).all()
    others = np.setdiff1d(np.flatnonzero(np.diff(data.seqs.offsets) > 0), held)
    assert len(others) == 80
    # leave-one-out: the other users' validation events are learned, their test events never
    assert (n_learned[others] == 7).all()
    assert len(training_sequences(data.seqs).items) == 100 * 6
    # a larger holdout holds out these users too (the audit's reference model)
    from dataclasses import replace

    assert np.isin(held, held_out_users(data, replace(tc, holdout_users=40))).all()


def test_a_step_with_nobody_drawn_still_adds_noise_and_counts(tmp_path: Path) -> None:
    data = cyclic_dataset(n_users=60, n_items=12, length=8)
    mc, tc = small_cfgs(data, epochs=1, holdout_users=10)
    torch.manual_seed(0)
    # q = 1/50: most steps draw nobody; the weights move anyway (noise), and every step is accounted
    model, _state, rep = fit_private(
        data, mc, tc, PrivacyConfig(epsilon=2.0, users_per_step=1), out_dir=tmp_path
    )
    assert rep["steps"] == 50 and rep["epsilon"] <= 2.0
    torch.manual_seed(tc.seed)
    fresh = NextActionModel(mc)  # the initial weights of the run
    assert not torch.allclose(model.item_emb.weight, fresh.item_emb.weight)


def test_private_training_end_to_end_through_the_cli(tmp_path: Path, capsys) -> None:
    log = write_log(tmp_path / "events.csv", n_users=120, n_items=15, length=8)
    out = tmp_path / "model"
    args = ["train", str(log), "--out", str(out), "--set", "model.dim=16", "--set", "model.max_len=8",
            "--set", "train.epochs=2", "--set", "privacy.epsilon=8", "--set", "privacy.users_per_step=16",
            "--set", "train.holdout_users=20"]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    p = config["privacy"]
    assert p["unit"] == "user" and 0 < p["epsilon"] <= 8 and p["epsilon_target"] == 8
    assert p["training_users"] == 100 and p["held_out_users"] == 20 and p["accountant"].startswith("rdp")
    assert config["model"]["behavior_head"] is False and config["train"]["holdout_users"] == 20
    code, stdout, err = run(["evaluate", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["privacy"]["epsilon"] == p["epsilon"] and "DP-SGD" in result["protocol"]["trained_on"]
    code, stdout, err = run(["recommend", str(out), "--user", "user3", "--k", "5", "--json"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--set", "model.behavior_head=true"], "model.behavior_head=false"),
        (["--set", "train.loss=sampled"], "train.loss must be full"),
        (["--set", "train.holdout_users=0"], "train.holdout_users must be ≥ 1"),
        (["--set", "privacy.epsilon=-1"], "privacy.epsilon must be > 0"),
        (["--set", "privacy.sigma=1"], "unknown key(s) sigma in [privacy]"),
        (["--resume"], "--resume is not supported"),
    ],
)
def test_options_that_would_break_the_guarantee_are_refused(tmp_path: Path, capsys, extra, says) -> None:
    log = write_log(tmp_path / "events.csv", n_users=40)
    args = ["train", str(log), "--out", str(tmp_path / "m"), "--set", "model.dim=16", "--set", "train.epochs=1",
            "--set", "privacy.epsilon=8", *extra]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 2 and says in err and "Traceback" not in err
