"""Training: next-event prediction at every position, early stopping on validation NDCG@10.

The loop is deterministic for a seed: each epoch reseeds torch and numpy from (seed, epoch), so resuming
from the checkpoint written after epoch e replays epochs e+1… exactly as an uninterrupted run would.

Under ``torchrun`` the same loop runs data-parallel (see training/distributed.py): each rank trains on its share
of every global batch, DistributedDataParallel averages the gradients, validation is split by users, and
rank 0 alone writes files. On a CUDA device the model and batches live on the GPU, with bf16 autocast.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from nextaction import losses
from nextaction.batches import (
    Batch,
    gather_padded,
    length_batches,
    select_users,
    training_sequences,
    training_windows,
)
from nextaction.behavior import outcome
from nextaction.behavior.candidates import (
    ContemporaryItems,
    ItemStats,
    training_candidates,
    window_candidates,
    window_popularity,
)
from nextaction.behavior.ranker import ModelBehaviorScorer
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import CLOCK_POSITIONS, COLD, ITEM_IDX, SPLIT, TRAIN, VALID
from nextaction.data.vocab import category_codes
from nextaction.device import batch_to_device, device_precision
from nextaction.evaluation.metrics import auc, ranking_metrics
from nextaction.evaluation.ranking import eval_examples
from nextaction.model import ModelConfig, NextActionModel
from nextaction.scoring import default_exclude_seen, evaluate_model
from nextaction.training import checkpoint, distributed
from nextaction.training.distributed import DistInfo
from nextaction.training.state import TrainConfig, TrainState


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at ``total`` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_loss(
    model: NextActionModel,
    batch: Batch,
    cfg: TrainConfig,
    log_q: torch.Tensor,
    gen: torch.Generator,
    *,
    matmul_dtype: torch.dtype = torch.float32,
    behavior_negatives: ContemporaryItems | None = None,
    item_stats: ItemStats | None = None,
    behavior_weight: float = 1.0,
    outcome_weight: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Loss of one batch of windows: every position predicts the next event. Returns (loss, targets).

    With ``behavior_negatives`` and ``item_stats`` every position also predicts which behaviours the user
    will do on a few candidates (see candidates.training_candidates).

    The batch is moved to the model's device. Random draws use the CPU generator ``gen`` and the behaviour
    candidates are built on the CPU (they index numpy statistics), then moved: a seed draws the same
    numbers on every device.
    """
    device = model.item_emb.weight.device
    cpu_batch, batch = batch_to_device(batch, torch.device("cpu")), batch_to_device(batch, device)
    inputs = Batch(batch.items[:, :-1], batch.behaviors[:, :-1], batch.timestamps[:, :-1])
    targets = batch.items[:, 1:]
    model.sample_id_dropout(gen)
    h = model(inputs.items, inputs.behaviors, inputs.timestamps)  # (B, L, D)
    keep = (targets != 0) & inputs.mask
    states = model.output_states(h[keep])  # (P, D): only real positions reach the output layer
    y = targets[keep]
    emb = model.output_embeddings()
    # Repeat-aware models mix the history's copy scores into the softmax: the losses hand over their parts
    # (the catalogue's log-sum-exp and the target's logit per position) instead of the cross-entropy.
    repeat = model.repeat is not None
    if repeat and (cfg.loss not in ("full", "sampled") or cfg.label_smoothing):
        raise ValueError("model.repeat_score trains with train.loss full or sampled, without label smoothing")
    parts: tuple[torch.Tensor, torch.Tensor] | None = None
    if cfg.loss == "full" and cfg.ce_chunk:
        if repeat:
            parts = losses.chunked_log_partition(
                states, emb, y, chunk=cfg.ce_chunk, matmul_dtype=matmul_dtype
            )
        else:
            loss = losses.chunked_full_softmax(
                states, emb, y, chunk=cfg.ce_chunk, matmul_dtype=matmul_dtype, smoothing=cfg.label_smoothing
            )
    elif cfg.loss == "full":
        if repeat:
            logits = (states @ emb.T).float()
            logits[:, 0] = float("-inf")
            parts = torch.logsumexp(logits, dim=1), logits.gather(1, y[:, None])[:, 0]
        else:
            loss = losses.full_softmax(states, emb, y)
    elif cfg.loss == "sampled":
        neg = torch.randint(1, emb.shape[0], (cfg.n_negatives,), generator=gen).to(device)
        if model.item_emb.sparse and emb is model.item_emb.weight:
            # look the rows up as an embedding, so the table's gradient is sparse (O(batch) per step)
            rows = F.embedding(torch.cat([y, neg]), emb, sparse=True)
            target_rows, negative_rows = rows[: len(y)], rows[len(y) :]
        else:
            target_rows, negative_rows = emb[y], emb[neg]
        if repeat:
            parts = losses.sampled_log_partition(states, target_rows, negative_rows, y, neg, log_q)
        else:
            loss = losses.sampled_softmax_rows(states, target_rows, negative_rows, y, neg, log_q)
    else:
        neg = torch.randint(1, emb.shape[0], (len(y), cfg.n_negatives), generator=gen).to(device)
        beta = 1.0 if cfg.loss == "bce" else losses.gbce_beta(cfg.n_negatives, emb.shape[0] - 1, cfg.gbce_t)
        loss = losses.gbce(states, emb, y, neg, beta=beta)
    if parts is not None:
        B, L = inputs.items.shape
        upto = torch.arange(L, device=device).expand(B, L)  # position t sees slots 0 … t
        copy = model.copy_scores(h, inputs.items, inputs.behaviors, upto)  # (B, L, L)
        copy_items = inputs.items[:, None, :].expand(B, L, L)
        loss = losses.mixture_cross_entropy(parts[0], parts[1], copy[keep], copy_items[keep], y)
    if behavior_negatives is not None and item_stats is not None:
        tc = training_candidates(
            cpu_batch.items,
            cpu_batch.behaviors,
            cpu_batch.timestamps,
            stats=item_stats,
            negatives=behavior_negatives,
            n_behaviors=model.cfg.n_behaviors - 1,
            horizon=cfg.behavior_horizon,
            n_negatives=cfg.behavior_negatives,
            gen=gen,
        )
        cand, cand_stats, labels, mask = (t.to(device) for t in (tc.items, tc.stats, tc.labels, tc.mask))
        L = inputs.items.shape[1]
        upto = torch.arange(L, device=device).expand(len(inputs.items), L)
        logits = model.behavior_logits(h, inputs.items, inputs.behaviors, cand, upto, cand_stats)
        loss = loss + behavior_weight * losses.multilabel_bce(logits[mask], labels[mask])
    if outcome_weight and item_stats is not None:
        # the next event's behaviour given its item: the head with the true next item as sole candidate
        B, L = inputs.items.shape
        cand = cpu_batch.items[:, 1:, None].numpy()  # (B, L, 1)
        feats = item_stats.features(cand, cpu_batch.timestamps[:, 1:, None].numpy())  # (B, L, 1, NB + 1)
        upto = torch.arange(L, device=device).expand(B, L)
        logits = model.behavior_logits(
            h, inputs.items, inputs.behaviors, targets[:, :, None], upto, torch.from_numpy(feats).to(device)
        )[:, :, 0]  # (B, L, NB)
        outcome = batch.behaviors[:, 1:].long() - 1
        loss = loss + outcome_weight * F.cross_entropy(logits[keep].float(), outcome[keep])
    return loss, len(y)


class StepLoss(nn.Module):
    """:func:`step_loss` as a module. DistributedDataParallel synchronises the gradients of what runs in
    its wrapped module's forward; the output layer and the behaviour head are used outside
    ``NextActionModel.forward``, so the whole loss is the forward that DDP wraps."""

    def __init__(self, model: NextActionModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, batch: Batch, cfg: TrainConfig, log_q: torch.Tensor, gen: torch.Generator, **kw: Any
    ) -> tuple[torch.Tensor, int]:
        return step_loss(self.model, batch, cfg, log_q, gen, **kw)


def use_sparse_items(model: NextActionModel, cfg: TrainConfig, *, distributed: bool) -> bool:
    """Whether the item table trains with sparse gradients (see TrainConfig.sparse_items)."""
    plain = (
        model.text_proj is None
        and model.out_emb is None
        and model.out_bias is None
        and model.behavior is None
    )
    if cfg.sparse_items is None:
        return cfg.loss == "sampled" and plain and not distributed
    if cfg.sparse_items and not (cfg.loss == "sampled" and plain):
        raise ValueError(
            "train.sparse_items needs train.loss=sampled and a plain ID model (no text, item bias or behaviour head)"
        )
    return cfg.sparse_items


class Optimizers:
    """Several optimisers stepped as one (the sparse item table's SparseAdam beside AdamW for the rest),
    with one flat state dict so checkpoints and resume treat them like a single optimiser."""

    def __init__(self, *opts: torch.optim.Optimizer) -> None:
        self.opts = opts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.opts for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for o in self.opts:
            sd = o.state_dict()
            state.update({offset + pid: st for pid, st in sd["state"].items()})
            groups += [{**g, "params": [offset + p for p in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        offset, g = 0, 0
        for o in self.opts:
            n_groups = len(o.param_groups)
            groups = sd["param_groups"][g : g + n_groups]
            n = sum(len(x["params"]) for x in groups)
            state = {pid - offset: dict(st) for pid, st in sd["state"].items() if offset <= pid < offset + n}
            if isinstance(o, torch.optim.SparseAdam):
                # SparseAdam counts steps in a Python int (checkpoints store tensors): float64 bias correction
                for st in state.values():
                    st["step"] = int(st["step"])
            o.load_state_dict(
                {
                    "state": state,
                    "param_groups": [{**x, "params": [p - offset for p in x["params"]]} for x in groups],
                }
            )
            offset, g = offset + n, g + n_groups


def make_optimizer(model: NextActionModel, cfg: TrainConfig, *, sparse: bool) -> Any:
    """AdamW (fused: one pass over each parameter per step instead of a loop of small ops, ~5× faster on a
    big table); with ``sparse`` the item table goes to SparseAdam (lazy Adam: only the rows in the batch)."""
    betas = (0.9, 0.98)
    if not sparse:
        return torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=betas, fused=True
        )
    model.item_emb.sparse = True
    table = model.item_emb.weight
    rest = [p for p in model.parameters() if p is not table]
    return Optimizers(
        torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=betas, fused=True),
        torch.optim.SparseAdam([table], lr=cfg.lr, betas=betas),
    )


Callback = Callable[[dict[str, Any]], None]


def resolve_outcome_weight(cfg: TrainConfig, data: PreparedDataset) -> float:
    """train.outcome_weight, with None = 1.0 for logs without a clock (attempts and their outcomes) else 0."""
    if cfg.outcome_weight is not None:
        return cfg.outcome_weight
    return 1.0 if data.clock == CLOCK_POSITIONS else 0.0


def resolve_behavior_weight(cfg: TrainConfig, data: PreparedDataset) -> float:
    """train.behavior_weight, with None = 1.0, or 0 when the outcome objective is on (see TrainConfig)."""
    if cfg.behavior_weight is not None:
        return cfg.behavior_weight
    return 0.0 if resolve_outcome_weight(cfg, data) else 1.0


def validation_users(data: PreparedDataset, cfg: TrainConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Who is validated, and which validation events are learned from.

    Returns (validated, learned): ``validated`` = sorted user positions to validate on (None = every user
    with a validation event); ``learned`` = (n_events,) bool mask of VALID events to train on, or None.
    Validation events are learned only on leave-one-out splits (a temporal split's validation window is
    the behaviour head's calibration set) and never for items held out for the cold-start protocol.
    """
    examples = eval_examples(data.seqs, split=VALID)
    loo = data.report.get("split", {}).get("kind") == "leave_one_out"
    holdout = cfg.valid_holdout if loo else 0
    n = min((k for k in (cfg.valid_users, holdout) if k > 0), default=0)
    if cfg.holdout_users:
        # Held-out users are the validation users; on leave-one-out the others' validation events are
        # learned. The first n of a fixed permutation: a model holding out more users holds out these too
        # (the membership audit's reference model relies on it).
        n = min(cfg.holdout_users, len(examples) // 2)
        if n < 1:
            raise ValueError("train.holdout_users needs users with validation targets")
        validated = np.sort(examples.user_idx[np.random.default_rng(0).permutation(len(examples))[:n]])
        holdout = int(loo and cfg.valid_holdout > 0)  # valid_holdout=0: learn no validation event
    elif not n or n >= len(examples):
        return None, None
    else:
        validated = examples.sample(n).user_idx
    if not holdout:
        return validated, None
    seqs = data.seqs
    lengths = np.diff(np.asarray(seqs.offsets))
    is_validated = np.zeros(len(lengths), dtype=bool)
    is_validated[validated] = True
    learned = (np.asarray(seqs.split) == VALID) & ~np.repeat(is_validated, lengths)
    if COLD in data.items.columns:
        cold = data.items.filter(pl.col(COLD))[ITEM_IDX].to_numpy()
        learned &= ~np.isin(np.asarray(seqs.items), cold)
    return validated, learned


def held_out_validation_users(data: PreparedDataset, cfg: TrainConfig) -> np.ndarray | None:
    """The users whose validation events the model did not learn, when it learned some (leave-one-out with
    ``valid_holdout``); None when it learned none, so every validation window is held out. Every decision
    taken on validation after training (behaviour ranker, calibration, thresholds, the new-item offset) and
    ``evaluate --split valid`` read only these users: the others' validation events are training data."""
    validated, learned = validation_users(data, cfg)
    return validated if learned is not None or cfg.holdout_users else None


def held_out_users(data: PreparedDataset, cfg: TrainConfig) -> np.ndarray | None:
    """Sorted positions of the users never trained on (train.holdout_users), or None."""
    if not cfg.holdout_users:
        return None
    validated, _ = validation_users(data, cfg)
    assert validated is not None
    return np.sort(validated)


def learned_sequences(data: PreparedDataset, cfg: TrainConfig, learned_valid: np.ndarray | None) -> Sequences:
    """What the model learns from: every TRAIN event, the learned validation events, and nothing at all of
    the held-out users (train.holdout_users)."""
    held = held_out_users(data, cfg)
    if held is None:
        return training_sequences(data.seqs, also=learned_valid)
    lengths = np.diff(np.asarray(data.seqs.offsets))
    is_held = np.zeros(len(lengths), dtype=bool)
    is_held[held] = True
    keep = np.asarray(data.seqs.split) == TRAIN
    if learned_valid is not None:
        keep |= learned_valid
    return training_sequences(data.seqs, only=keep & ~np.repeat(is_held, lengths))


def trained_view(data: PreparedDataset, cfg: TrainConfig) -> PreparedDataset:
    """``data`` with every event the model learns from marked TRAIN (the learned validation events of
    :func:`validation_users` too): what baselines fit on, so that they learn from exactly the model's events.
    The same object when no validation event is learned."""
    _, learned = validation_users(data, cfg)
    if learned is None:
        return data
    split = np.asarray(data.seqs.split).copy()
    split[learned] = TRAIN
    return PreparedDataset(
        events=data.events.with_columns(pl.Series(SPLIT, split)),
        users=data.users,
        items=data.items,
        behaviors=data.behaviors,
        report=data.report,
        sequences=replace(data.seqs, split=split),
    )


def fit(
    data: PreparedDataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    *,
    out_dir: Path,
    resume: bool = False,
    on_epoch: Callback | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
    item_text: torch.Tensor | None = None,
    dist_info: DistInfo | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[NextActionModel, TrainState]:
    """Train on the TRAIN events of ``data``; keep the weights with the best validation NDCG@10.

    Writes ``metrics.jsonl`` and a resumable state to ``out_dir`` after every epoch. ``progress(step_in_epoch,
    steps_in_epoch, loss, events_per_s)`` is called after each step. Returns the best model, on the CPU.

    ``init_weights``: start from these weights instead of a fresh initialisation (a warm start, see
    training/warm.py); the optimiser and the schedule start afresh.

    Under torchrun (``dist_info`` defaults to :func:`distributed.init_from_env`) every rank calls this with
    the same arguments; rank 0 alone writes ``out_dir`` and calls ``on_epoch`` and ``progress``, and every
    rank returns the same model. Set NEXTACTION_DEBUG_RANK_DUMP=DIR to have each rank write its final
    (last-step) weights to DIR/rank{r}.safetensors: the tests check that the ranks agree.
    """
    info = dist_info or distributed.init_from_env()
    device = info.device
    precision = device_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = NextActionModel(model_cfg)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model = model.to(device)
    if model_cfg.categorical:
        codes, _ = category_codes(data.items, tuple(model_cfg.categorical))
        model.item_categories.copy_(torch.from_numpy(codes))
    # fused: one pass over each parameter per step instead of a loop of small ops; ~5× faster on a 1M-item
    # embedding table, where the optimiser step otherwise dominates
    sparse = use_sparse_items(model, cfg, distributed=info.distributed)
    opt = make_optimizer(model, cfg, sparse=sparse)
    state = TrainState()
    out_dir.mkdir(parents=True, exist_ok=True)
    # rank 0 decides; every rank then reads the same state (a distributed resume needs a shared out_dir)
    resuming = distributed.broadcast_object(resume and checkpoint.has_train_state(out_dir))
    if resuming:
        if not checkpoint.has_train_state(out_dir):
            raise RuntimeError(
                f"rank {info.rank} cannot see the training state in {out_dir}: resuming a distributed run "
                "needs --out on a file system that every node shares"
            )
        state = checkpoint.load_train_state(out_dir, model, opt)
    elif info.is_main and (out_dir / "metrics.jsonl").exists():
        (out_dir / "metrics.jsonl").unlink()

    validated, learned_valid = validation_users(data, cfg)
    train_seqs = learned_sequences(data, cfg, learned_valid)
    state.learned_valid_events = 0 if learned_valid is None else int(learned_valid.sum())
    starts, lengths = training_windows(train_seqs, model_cfg.max_len)
    if model.text_proj is not None:
        if item_text is None:
            raise ValueError("model.text_dim > 0 needs item_text, the (n_items + 1, text_dim) embeddings")
        with torch.no_grad():
            model.text_emb.copy_(item_text)
            # items without training events keep an unlearned ID embedding: represent them by text alone
            counts = np.bincount(np.asarray(train_seqs.items), minlength=model_cfg.n_items + 1)
            model.has_id.copy_(torch.from_numpy(counts > 0).float())
            # registered new: the cold-start protocol's held-out items (a log's catalogue has no other)
            if COLD in data.items.columns:
                cold = data.items.filter(pl.col(COLD))[ITEM_IDX].to_numpy()
                model.is_new[torch.from_numpy(cold.astype(np.int64))] = 1.0
    steps_per_epoch = distributed.steps_per_epoch(len(starts), cfg.batch_size, info.world_size)
    total_steps = steps_per_epoch * cfg.epochs
    log_q = losses.uniform_log_q(model_cfg.n_items).to(device)
    exclude_seen = default_exclude_seen(data) if cfg.exclude_seen is None else cfg.exclude_seen
    best = checkpoint.load_best_weights(out_dir) if resuming and state.epoch else None
    has_valid = bool((np.asarray(data.seqs.split) == VALID).any())
    # each rank ranks its share of the validation users; the ranks are gathered (exact single-process metric)
    valid_seqs = data.seqs if validated is None else select_users(data.seqs, validated)
    if info.distributed:
        valid_seqs = distributed.shard_users(valid_seqs, info.rank, info.world_size)
    matmul_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    behavior_weight = resolve_behavior_weight(cfg, data)
    head = model_cfg.behavior_head and behavior_weight > 0
    outcome_weight = resolve_outcome_weight(cfg, data) if model_cfg.behavior_head else 0.0
    # Item counts: every event before the query moment, except the test split and, when validation events
    # are learned, the validated users' validation window (the checkpoint is chosen on it): then exactly
    # the events trained on.
    item_stats = None
    if head or outcome_weight:
        nb = len(data.behaviors) - 1
        item_stats = (
            ItemStats(data.seqs, nb)
            if learned_valid is None
            else ItemStats(train_seqs, nb, exclude_split=None)
        )
    # negatives among the events that follow each position, over a span as long as the validation window
    n_valid = int((np.asarray(data.seqs.split) == VALID).sum())
    window = n_valid or max(1, len(train_seqs.items) // 10)
    behavior_negatives = ContemporaryItems(train_seqs, window=window) if head else None
    # With a behaviour head the checkpoint is chosen on NDCG@10 + the mean behaviour AUC of the validation
    # window (the evaluation's construction): next-item accuracy alone peaks long before the head has learned.
    valid_cands = (
        window_candidates(
            data.seqs,
            split=VALID,
            n_behaviors=len(data.behaviors) - 1,
            popularity=window_popularity(data, VALID),
            users=None if learned_valid is None else validated,  # never a window the model learned
        )
        if head and n_valid and info.is_main and not outcome_weight  # rank 0 computes it, tells the others
        else None
    )
    # Outcome models are chosen on the outcome AUC of every validation event (the knowledge-tracing
    # protocol) instead of the windows' candidate AUC.
    valid_outcomes = (
        outcome.outcome_events(data.seqs, VALID, users=None if learned_valid is None else validated)
        if outcome_weight and n_valid and info.is_main
        else None
    )
    # The catalogue-sized output layer is >90% of the FLOPs: on a CPU it runs in bf16 inside the fused loss
    # and the small transformer stays in fp32, where autocast's casts would cost more than they save. On
    # CUDA the whole forward runs under bf16 autocast.
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    if device.type == "cuda" and precision == "bf16":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    step: nn.Module = StepLoss(model)
    if info.distributed:
        # Parameters that no loss term uses (ID embeddings with text-only items, a head with weight 0)
        # need DDP's search for unused parameters; otherwise every parameter gets a gradient each step.
        unused = model_cfg.fusion == "text" or (model_cfg.behavior_head and not head and not outcome_weight)
        step = distributed.wrap(step, find_unused_parameters=unused)

    t_start = time.perf_counter() - state.seconds
    while state.epoch < cfg.epochs and (state.bad_epochs < cfg.patience or not has_valid):
        epoch = state.epoch
        # the same batches on every rank; dropout and sampled negatives differ by rank (rank 0's = 1 process)
        noise = distributed.RANK_SEED_STRIDE * info.rank
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + noise)
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch + noise)
        step.train()
        total_loss, total_targets, t0 = 0.0, 0, time.perf_counter()
        batches = distributed.shard_batches(
            length_batches(lengths, cfg.batch_size, rng), info.rank, info.world_size
        )
        for i, (rows, mine) in enumerate(batches):
            batch = gather_padded(train_seqs, starts[mine], lengths[mine])
            for g in opt.param_groups:
                g["lr"] = lr_at(state.step, total_steps, cfg)
            with autocast():
                loss, n = step(
                    batch,
                    cfg,
                    log_q,
                    gen,
                    matmul_dtype=matmul_dtype,
                    behavior_negatives=behavior_negatives,
                    item_stats=item_stats,
                    behavior_weight=behavior_weight,
                    outcome_weight=outcome_weight,
                )
            opt.zero_grad(set_to_none=True)
            if info.distributed:
                # DDP averages the ranks' gradients. Weighting each rank's mean loss by its share of the
                # global batch's targets (a window of n events has n - 1) makes that average the gradient
                # of the global batch's mean loss, as in a single process.
                n_global = int((lengths[rows] - 1).sum())
                (loss * (info.world_size * n / n_global)).backward()
            else:
                loss.backward()
            opt.step()
            state.step += 1
            total_loss += float(loss.detach()) * n
            total_targets += n
            if progress is not None and info.is_main:
                progress(
                    i + 1,
                    len(batches),
                    total_loss / max(total_targets, 1),
                    total_targets / max(time.perf_counter() - t0, 1e-9),
                )
        epoch_s = time.perf_counter() - t0
        total_loss, total_targets = distributed.all_reduce_sum([total_loss, total_targets])
        state.epoch += 1
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "loss": total_loss / max(total_targets, 1),
            "epoch_s": round(epoch_s, 3),
            "events_per_s": round(total_targets / max(epoch_s, 1e-9)),
            "lr": lr_at(state.step, total_steps, cfg),
        }
        if has_valid and (state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs):
            t1 = time.perf_counter()
            ranks, _ = evaluate_model(
                model,
                valid_seqs,
                split=VALID,
                exclude_seen=exclude_seen,
                k_top=0,
            )
            m = ranking_metrics(distributed.all_gather_arrays(ranks), ks=(10,))
            record.update({"valid_NDCG@10": m["NDCG@10"], "valid_HR@10": m["HR@10"]})
            if valid_cands is not None and len(valid_cands):
                z = ModelBehaviorScorer(model, stats=item_stats).behavior_scores(data.seqs, valid_cands)
                aucs = [auc(z[:, k], valid_cands.labels[:, k]) for k in range(z.shape[1])]
                record["valid_AUC"] = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else 0.0
            if valid_outcomes is not None and item_stats is not None:
                p = outcome.outcome_probabilities(model, data.seqs, valid_outcomes, stats=item_stats)
                aucs = [auc(p[:, k], valid_outcomes.labels == k + 1) for k in range(p.shape[1])]
                record["valid_outcome_AUC"] = float(np.nanmean(aucs)) if not np.isnan(aucs).all() else 0.0
            record["eval_s"] = round(time.perf_counter() - t1, 3)
            record = distributed.broadcast_object(record)  # rank 0's record: one early-stopping decision
            score = (
                record["valid_NDCG@10"] + record.get("valid_AUC", 0.0) + record.get("valid_outcome_AUC", 0.0)
            )
            if score > state.best_ndcg:
                state.best_ndcg, state.best_epoch, state.bad_epochs = score, state.epoch, 0
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.bad_epochs += 1
        else:
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state.best_epoch = state.epoch
        state.seconds = time.perf_counter() - t_start
        record["elapsed_s"] = round(state.seconds, 2)
        if info.is_main:
            _append_jsonl(out_dir / "metrics.jsonl", record)
            checkpoint.save_train_state(out_dir, model, opt, state, best)
            if on_epoch is not None:
                on_epoch(record)
        if cfg.max_minutes and distributed.broadcast_object(state.seconds > cfg.max_minutes * 60):
            break
    if dump := os.environ.get("NEXTACTION_DEBUG_RANK_DUMP"):
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(Path(dump) / f"rank{info.rank}.safetensors"))
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return model.cpu(), state


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
