"""User-level differentially private training: DP-SGD where the privacy unit is a person, not an event.

Event-level DP would protect one click; a person's history is many events, and what a log must not give away
is the person. So each step samples *users* (Poisson, rate q), each sampled user contributes one window of
their own events, that user's whole gradient is clipped to L2 norm ``max_grad_norm`` (C), the clipped sum
gets Gaussian noise of standard deviation σ·C, and the accountant composes the steps actually taken (early
stopping included) into (ε, δ). Removing or adding one user then changes the released weights' distribution
by at most that (ε, δ), however many events the user has.

What runs on which engine:
- Opacus: the noise multiplier for a target ε (``get_noise_multiplier``) and the accountant (RDP by default,
  PRV on request), which composes every step taken.
- Per-user gradients: ``torch.func`` (``vmap`` of ``grad`` over users, in chunks). Opacus's own per-sample
  machinery (GradSampleModule hooks) does not fit this model: the tied item table is used twice, by the input
  lookup and by the output layer outside any module call, and hooks would see only the first use.
- Clipping and noise: :func:`add_clipped` and one Gaussian draw per parameter and step, the arithmetic of
  Opacus's ``DPOptimizer`` (a test checks the sums against its ``clip_and_accumulate``). Done here because
  plain ID models clip the item table without materialising its per-user gradients
  (:class:`GhostItemTable`), which DPOptimizer cannot take.

Shapes: U users in a chunk, L = max_len (+1 for the window's last target), D dim, I = n_items + 1.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nextaction.batches import gather_padded, select_users
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import VALID
from nextaction.data.vocab import category_codes
from nextaction.errors import InputError
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.losses import mixture_nll
from nextaction.model import PAD, CausalSelfAttention, ModelConfig, NextActionModel
from nextaction.scoring import default_exclude_seen, evaluate_model
from nextaction.training.loop import held_out_users, learned_sequences, lr_at, validation_users
from nextaction.training.state import TrainConfig, TrainState

# What the guarantee covers, and what it does not: written into config.json["privacy"] and the README.
OUTSIDE_GUARANTEE = (
    "the item vocabulary and the categorical vocabularies: which items and categories occur in the log",
    "the held-out validation users: the checkpoint (one of the epochs) is chosen on their events",
    "the evaluation: test metrics read every user's history and are not part of the released model",
)


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """``[privacy]``: user-level DP-SGD. Off unless ``epsilon`` is set."""

    epsilon: float | None = None  # target ε of the whole training run; None = not private
    delta: float | None = None  # None = 1 / number of training users
    max_grad_norm: float = 1.0  # C: each user's whole gradient (mean over their window) is clipped to this
    # expected users per step: Poisson sampling at q = users_per_step / training users. Larger batches
    # average the same noise over more users (noise / signal ∝ σ / batch, and σ grows slower than the batch)
    users_per_step: int = 1024
    accountant: Literal["rdp", "prv"] = "rdp"
    chunk: int = 64  # users per vectorised per-user-gradient pass; memory grows with chunk × parameters

    def __post_init__(self) -> None:
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError("privacy.epsilon must be > 0 (leave it unset for a non-private model)")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError("privacy.delta must be in (0, 1)")
        if not self.max_grad_norm > 0:
            raise ValueError("privacy.max_grad_norm must be > 0")
        if self.users_per_step < 1 or self.chunk < 1:
            raise ValueError("privacy.users_per_step and privacy.chunk must be ≥ 1")

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None


def check_private(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    explicit_train: Mapping[str, Any],
    distributed: bool,
    resume: bool,
) -> None:
    """Refuse settings that would silently break the user-level guarantee (or that it does not support)."""
    problems = []
    if model_cfg.behavior_head:
        problems.append(
            "the behaviour head reads item statistics counted over every training user: set "
            "model.behavior_head=false (private models predict the next item)"
        )
    if train_cfg.loss != "full":
        problems.append("train.loss must be full (the private step computes the whole softmax per user)")
    if distributed:
        problems.append("private training runs in one process (torchrun is not supported)")
    if resume:
        problems.append("--resume is not supported: the accountant's history would restart")
    if train_cfg.holdout_users < 1:
        problems.append("train.holdout_users must be ≥ 1: the checkpoint is chosen on users never trained on")
    if model_cfg.text_dim and explicit_train.get("new_item_tolerance", -1) >= 0:
        problems.append(
            "train.new_item_tolerance fits the new-item offset on validation events of training users: "
            "leave it unset (private models have no offset)"
        )
    if problems:
        raise InputError("privacy.epsilon: " + "; ".join(problems))


class UserLoss(nn.Module):
    """The mean next-item cross-entropy of ONE user's window, as a module so that ``torch.func`` can swap
    the parameters of every part it uses (the output layer included) and take per-user gradients.

    Written without data-dependent shapes (no boolean indexing): ``vmap`` needs every user's computation
    to have the same shape, so padding positions are weighted 0 instead of removed.
    """

    def __init__(self, model: NextActionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, behaviors: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """items, behaviors, timestamps: (L + 1,) one user's window, right-padded. Returns a scalar."""
        nll, keep, _, _ = window_nll(self.model, items[None], behaviors[None], timestamps[None])
        return torch.where(keep, nll, 0.0).sum() / keep.sum().clamp(min=1)


def window_nll(
    m: NextActionModel,
    items: torch.Tensor,
    behaviors: torch.Tensor,
    timestamps: torch.Tensor,
    *,
    item_vecs: torch.Tensor | None = None,
    table: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nll, keep, h, logits): every position's next-item cross-entropy over the whole catalogue (the
    repeat mixture for repeat-aware models) and whether it is a real (input, target) pair, each (B, L); the
    output states (B, L, D) and the catalogue logits (B, L, I), column 0 -inf.

    items, behaviors, timestamps: (B, L + 1) windows, right-padded. No data-dependent shapes (vmap).
    ``item_vecs`` (B, L, D) and ``table`` (I, D): the inputs' vectors and the scoring table, given instead of
    read from the model (plain ID models, see GhostItemTable)."""
    x_items, x_behaviors, x_times = items[:, :-1], behaviors[:, :-1], timestamps[:, :-1]
    targets = items[:, 1:]  # (B, L)
    h = m(x_items, x_behaviors, x_times, item_vecs=item_vecs)  # (B, L, D)
    keep = (targets != PAD) & (x_items != PAD)
    # padding targets point at item 1 instead of the -inf padding column: weighted 0 either way, but
    # inf × 0 would be NaN
    targets = torch.where(keep, targets, torch.ones_like(targets))
    if table is not None:
        logits = h @ table.T  # (B, L, I)
    elif m.cfg.fusion == "text" and m.out_emb is None and not m.cfg.categorical and m.score_bias() is None:
        # Text items: e_i = W t_i + b, so h·e_i = (hW)·t_i + h·b. Multiplying h by W first keeps the
        # catalogue out of the projection's gradient: per user it is (dZ T)ᵀ-sized (L × text_dim) work
        # instead of the (I × D) item-vector gradient pushed through W — 16× less on Beauty.
        assert m.text_proj is not None
        logits = (h @ m.text_proj.weight) @ m.text_emb.T + (h @ m.text_proj.bias)[..., None]  # (B, L, I)
    else:
        logits = m.output_states(h) @ m.output_embeddings().T  # (B, L, I)
    is_pad = torch.arange(logits.shape[-1], device=logits.device) == PAD
    logits = logits.float().masked_fill(is_pad, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(-1, targets[..., None])[..., 0]
    if m.repeat is not None:
        B, L = x_items.shape
        upto = torch.arange(L, device=items.device).expand(B, L)
        copy = m.copy_scores(h, x_items, x_behaviors, upto)  # (B, L, L)
        nll = mixture_nll(lse, target_logit, copy, x_items[:, None, :].expand_as(copy), targets)
    else:
        nll = lse - target_logit
    return nll, keep, h, logits


def sample_windows(
    seqs: Any, users: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One window of up to ``length`` consecutive events per user, at a uniformly random place in their
    sequence: a user's contribution to a step is a function of their own events only."""
    offsets = np.asarray(seqs.offsets)
    n = offsets[users + 1] - offsets[users]
    lengths = np.minimum(n, length)
    starts = offsets[users] + (rng.random(len(users)) * (n - lengths + 1)).astype(np.int64)
    return starts, lengths


def per_user_gradients(
    loss: UserLoss, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
) -> Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """A function (items, behaviors, timestamps), each (U, L + 1), -> ({name: (U, *shape)} per-user
    gradients, (U,) per-user losses)."""
    from torch.func import functional_call, grad_and_value, vmap

    def one(
        p: dict[str, torch.Tensor], items: torch.Tensor, behaviors: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(loss, (p, buffers), (items, behaviors, times))

    g = vmap(grad_and_value(one), in_dims=(None, 0, 0, 0), randomness="different")

    def per_user(
        items: torch.Tensor, behaviors: torch.Tensor, times: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        # torch.func.grad differentiates under no_grad too; no_grad keeps the outer graph from being recorded
        with torch.no_grad():
            return g(params, items, behaviors, times)

    return per_user


def clip_factors(norm2: torch.Tensor, max_norm: float) -> torch.Tensor:
    """(U,) factors that scale each user's gradient to L2 norm ≤ max_norm (Opacus's formula)."""
    return (max_norm / (norm2.sqrt() + 1e-6)).clamp(max=1.0)


def add_clipped(sums: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], *, max_norm: float) -> None:
    """sums[name] += Σ_u c_u · grads[name][u], with c_u clipping user u's whole gradient (all parameters)."""
    norm2 = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    c = clip_factors(norm2, max_norm)  # type: ignore[arg-type]
    for n, g in grads.items():
        sums[n] += torch.einsum("u,u...->...", c, g)


class GhostItemTable:
    """Per-user clipping of a plain ID model without materialising the item table's per-user gradients.

    The table E (I × D) is used twice: the inputs look rows up (X = E[x]) and the output layer scores the
    catalogue (Z = S Eᵀ). User u's gradient of E is G_u = scatter(x, dX) + dZᵀ S, an (I × D) matrix per user
    — 775k numbers on Beauty, which is what made per-user gradients slow and memory-bound. Its squared
    norm needs only (L × L) products (the "ghost norm" of Li et al., 2022, with the cross term of the tied
    uses):

        ‖G‖² = Σ_tt' (dZ dZᵀ)_tt' (S Sᵀ)_tt' + Σ_tt' [x_t = x_t'] (dX dXᵀ)_tt' + 2 Σ_tt' dZ[t', x_t] (S dXᵀ)_t't

    and the clipped sum over users is one scatter plus one matmul: Σ_u c_u G_u = scatter(x, c·dX) +
    (c·dZ)ᵀ S. The rest of the model (a few hundred thousand parameters) gets ordinary per-user gradients
    by vmap. dZ is the softmax's own gradient, (P − onehot) · keep / n, computed from S and E.
    """

    NAME = "model.item_emb.weight"

    @staticmethod
    def fits(model: NextActionModel) -> bool:
        """Tied ID embeddings and nothing else on the item side (no text, categories, bias, repeat scores)."""
        return (
            model.text_proj is None
            and model.out_emb is None
            and model.out_bias is None
            and not model.cfg.categorical
            and model.repeat is None
        )

    def __init__(self, model: NextActionModel, params: dict[str, torch.Tensor]) -> None:
        from torch.func import functional_call, grad_and_value, vmap

        self.model = model
        self.table = params[self.NAME]
        self.rest = {n: p for n, p in params.items() if n != self.NAME}
        loss = _GhostLoss(model)

        def one(
            rest: dict[str, torch.Tensor],
            x_vecs: torch.Tensor,
            items: torch.Tensor,
            behaviors: torch.Tensor,
            times: torch.Tensor,
            table: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return functional_call(loss, rest, (items, behaviors, times, x_vecs, table), strict=False)

        self._grads = vmap(
            grad_and_value(one, argnums=(0, 1), has_aux=True),
            in_dims=(None, 0, 0, 0, 0, None),
            randomness="different",
        )

    @torch.no_grad()
    def add_clipped(
        self,
        sums: dict[str, torch.Tensor],
        items: torch.Tensor,
        behaviors: torch.Tensor,
        timestamps: torch.Tensor,
        *,
        max_norm: float,
    ) -> torch.Tensor:
        """Add the chunk's clipped per-user gradients to ``sums``; return the (U,) per-user losses.

        items, behaviors, timestamps: (U, L + 1) windows, right-padded."""
        E = self.table.detach()
        x = items[:, :-1]  # (U, L) inputs
        (d_rest, dX), (values, (S, dZ)) = self._grads(self.rest, E[x], items, behaviors, timestamps, E)
        targets = items[:, 1:]
        keep = ((targets != PAD) & (x != PAD)).float()
        n = keep.sum(1).clamp(min=1.0)
        # dZ: the softmax of the forward pass, turned into the loss's gradient of the logits
        dZ.scatter_add_(-1, targets[..., None], -torch.ones_like(dZ[..., :1]))
        dZ *= (keep / n[:, None])[..., None]
        real = (x != PAD).float()
        dX = dX * real[..., None]
        # ‖G_u‖² of the table from (L × L) products, see the class docstring
        out_term = ((dZ @ dZ.transpose(1, 2)) * (S @ S.transpose(1, 2))).sum((1, 2))
        same = (x[:, :, None] == x[:, None, :]).float() * real[:, :, None] * real[:, None, :]
        in_term = ((dX @ dX.transpose(1, 2)) * same).sum((1, 2))
        at_inputs = dZ.gather(2, x[:, None, :].expand(-1, x.shape[1], -1))  # [u, t', t] = dZ[u, t', x_t]
        cross = 2 * (at_inputs * (S @ dX.transpose(1, 2))).sum((1, 2))
        norm2 = out_term + in_term + cross + sum(g.flatten(1).pow(2).sum(1) for g in d_rest.values())
        c = clip_factors(norm2.clamp(min=0.0), max_norm)  # type: ignore[arg-type]
        for name, g in d_rest.items():
            sums[name] += torch.einsum("u,u...->...", c, g)
        table = sums[self.NAME]
        table.index_add_(0, x.reshape(-1), (c[:, None, None] * dX).reshape(-1, dX.shape[-1]))
        table += (c[:, None, None] * dZ).reshape(-1, dZ.shape[-1]).T @ S.reshape(-1, S.shape[-1])
        table[PAD] = 0.0  # the padding row never learns
        return values


class _GhostLoss(nn.Module):
    """One user's mean next-item loss from given input item vectors and catalogue table (see
    GhostItemTable); the auxiliary output is what forms the table's gradient outside: the output states S
    (L, D) and the softmax over the catalogue (L, I)."""

    def __init__(self, model: NextActionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        items: torch.Tensor,
        behaviors: torch.Tensor,
        timestamps: torch.Tensor,
        x_vecs: torch.Tensor,
        table: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        nll, keep, h, logits = window_nll(
            self.model, items[None], behaviors[None], timestamps[None], item_vecs=x_vecs[None], table=table
        )
        loss = torch.where(keep, nll, 0.0).sum() / keep.sum().clamp(min=1)
        return loss, (h[0].detach(), torch.softmax(logits[0], dim=-1).detach())


def fit_private(
    data: PreparedDataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    pcfg: PrivacyConfig,
    *,
    out_dir: Path,
    item_text: torch.Tensor | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> tuple[NextActionModel, TrainState, dict[str, Any]]:
    """Train with user-level DP-SGD; keep the epoch with the best NDCG@10 on the held-out users.

    An epoch is 1/q steps (each user is expected once). σ is calibrated by Opacus so that ``cfg.epochs``
    full epochs spend exactly ``pcfg.epsilon``; early stopping spends less, and the returned report (also
    written to ``config.json["privacy"]`` by the workflow) states the ε of the steps actually taken.
    """
    from opacus import __version__ as opacus_version
    from opacus.accountants import create_accountant
    from opacus.accountants.utils import get_noise_multiplier

    assert pcfg.epsilon is not None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = NextActionModel(model_cfg)
    if model_cfg.categorical:
        codes, _ = category_codes(data.items, tuple(model_cfg.categorical))
        model.item_categories.copy_(torch.from_numpy(codes))
    if model.text_proj is not None:
        if item_text is None:
            raise ValueError("model.text_dim > 0 needs item_text")
        with torch.no_grad():
            model.text_emb.copy_(item_text)
            # every item keeps its ID row: "which items had training events" would be a count over users
            model.has_id.fill_(1.0)

    _, learned_valid = validation_users(data, cfg)
    held = held_out_users(data, cfg)
    if held is None:
        raise ValueError("private training needs train.holdout_users > 0 (check_private)")
    learn = learned_sequences(data, cfg, learned_valid)
    users = np.flatnonzero(np.diff(np.asarray(learn.offsets)) >= 2)  # held-out users have no events here
    n_users = len(users)
    if n_users < 2:
        raise InputError("privacy: fewer than 2 training users with 2 or more events")
    delta = pcfg.delta if pcfg.delta is not None else 1.0 / n_users
    q = min(1.0, pcfg.users_per_step / n_users)
    steps_per_epoch = max(1, math.ceil(1.0 / q))
    planned = steps_per_epoch * cfg.epochs
    sigma = get_noise_multiplier(
        target_epsilon=pcfg.epsilon,
        target_delta=delta,
        sample_rate=q,
        steps=planned,
        accountant=pcfg.accountant,
    )
    accountant = create_accountant(mechanism=pcfg.accountant)
    expected = q * n_users  # the sum of clipped gradients is divided by the expected, not the drawn, count

    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.explicit = True  # vmappable attention (see CausalSelfAttention)
    loss = UserLoss(model)
    params = {n: p for n, p in loss.named_parameters() if p.requires_grad}
    buffers = dict(loss.named_buffers())
    noise_gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # plain ID models: the item table's per-user gradients are never materialised (ghost clipping)
    ghost = GhostItemTable(model, params) if GhostItemTable.fits(model) else None
    grads_of = per_user_gradients(loss, params, buffers) if ghost is None else None
    C = pcfg.max_grad_norm
    exclude_seen = default_exclude_seen(data) if cfg.exclude_seen is None else cfg.exclude_seen
    valid_seqs = select_users(data.seqs, held)
    rng = np.random.default_rng([cfg.seed, 2718])
    state = TrainState()
    best: dict[str, torch.Tensor] | None = None
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = out_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    L = model_cfg.max_len + 1
    t_start = time.perf_counter()
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
        model.train()
        t0, total, drawn, targets = time.perf_counter(), 0.0, 0, 0
        for i in range(steps_per_epoch):
            picked = users[rng.random(n_users) < q]  # Poisson sampling of users
            starts, lengths = sample_windows(learn, picked, L, rng)
            targets += int((lengths - 1).sum())
            for g in opt.param_groups:
                g["lr"] = lr_at(state.step, planned, cfg)
            # chunks of users with windows of similar length, each padded to its longest only: vmap needs
            # one shape per chunk, and short histories (most users of a shop) then cost what they hold
            by_length = np.argsort(lengths, kind="stable")
            chunks = [by_length[k : k + pcfg.chunk] for k in range(0, len(picked), pcfg.chunk)]
            sums = {n: torch.zeros_like(p) for n, p in params.items()}
            for rows in chunks:
                b = gather_padded(learn, starts[rows], lengths[rows], pad_to=max(2, int(lengths[rows].max())))
                if ghost is not None:
                    values = ghost.add_clipped(sums, b.items, b.behaviors, b.timestamps, max_norm=C)
                else:
                    assert grads_of is not None
                    grads, values = grads_of(b.items, b.behaviors, b.timestamps)
                    add_clipped(sums, grads, max_norm=C)
                total += float(values.sum())
            # noise once per step, drawn users or not (an empty draw still counts: it is what is accounted),
            # over the expected, not the drawn, number of users (Opacus's DPOptimizer does the same)
            for n, p in params.items():
                noise = torch.normal(0.0, sigma * C, size=p.shape, generator=noise_gen)
                p.grad = (sums[n] + noise) / expected
            opt.step()
            opt.zero_grad(set_to_none=True)
            accountant.step(noise_multiplier=sigma, sample_rate=q)
            state.step += 1
            drawn += len(picked)
            if progress is not None:
                rate = targets / max(time.perf_counter() - t0, 1e-9)
                progress(i + 1, steps_per_epoch, total / max(drawn, 1), rate)
        epoch_s = time.perf_counter() - t0
        state.epoch += 1
        model.eval()
        ranks, _ = evaluate_model(model, valid_seqs, split=VALID, exclude_seen=exclude_seen, k_top=0)
        ndcg = ranking_metrics(ranks, ks=(10,))["NDCG@10"]
        spent = accountant.get_epsilon(delta)
        record = {
            "epoch": state.epoch,
            "loss": total / max(drawn, 1),
            "epoch_s": round(epoch_s, 3),
            "events_per_s": round(targets / max(epoch_s, 1e-9)),
            "users": drawn,
            "lr": lr_at(state.step, planned, cfg),
            "valid_NDCG@10": ndcg,
            "epsilon": spent,
        }
        if ndcg > state.best_ndcg:
            state.best_ndcg, state.best_epoch, state.bad_epochs = ndcg, state.epoch, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.seconds = time.perf_counter() - t_start
        record["elapsed_s"] = round(state.seconds, 2)
        with metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if on_epoch is not None:
            on_epoch(record)
        if cfg.max_minutes and state.seconds > cfg.max_minutes * 60:
            break
    if best is not None:
        model.load_state_dict(best)
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.explicit = False  # the fused kernel again for scoring
    model.eval()
    report = {
        "unit": "user",
        "epsilon": accountant.get_epsilon(delta),
        "epsilon_target": pcfg.epsilon,
        "delta": delta,
        "noise_multiplier": sigma,
        "max_grad_norm": pcfg.max_grad_norm,
        "sample_rate": q,
        "users_per_step": pcfg.users_per_step,
        "steps": state.step,
        "planned_steps": planned,
        "accountant": f"{pcfg.accountant} (Opacus {opacus_version})",
        "training_users": n_users,
        "held_out_users": len(held),
        "window": f"one window of up to {model_cfg.max_len + 1} consecutive events per sampled user and step",
        "outside_guarantee": list(OUTSIDE_GUARANTEE),
    }
    return model, state, report
