"""What one federated client does with its own log: a few local epochs from the global weights, and the
validation metrics of the global weights on its own users. Its events never leave this module's caller.

The local schedule continues one cosine schedule across rounds (``lr_at`` of the centralised loop, with the
client's global step = round × its steps per round), so that R rounds of one local epoch follow the learning
rate of R centralised epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nextaction import losses
from nextaction.batches import gather_padded, length_batches, training_windows
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import VALID
from nextaction.device import device_precision
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.model import NextActionModel
from nextaction.scoring import default_exclude_seen, evaluate_model
from nextaction.training.loop import learned_sequences, lr_at, make_optimizer, step_loss
from nextaction.training.state import TrainConfig


@dataclass(frozen=True, kw_only=True)
class FederatedConfig:
    """The ``[federated]`` section (``--set federated.rounds=30``)."""

    rounds: int = 30  # FedAvg rounds; the model of the round with the best federated validation is kept
    local_epochs: int = 1  # passes over its own training windows a client makes per round
    fraction: float = 1.0  # share of the connected clients sampled each round (at least min_clients)
    min_clients: int = 2  # rounds wait until this many clients are connected
    eval_every: int = 1  # federated validation every N rounds (and after the last)
    # Client-side clipping + server-side Gaussian noise of the updates (Flower's
    # DifferentialPrivacyClientSideFixedClipping): 0 = off. Protects a client's whole update, not a user.
    dp_noise: float = 0.0
    dp_clip: float = 1.0  # L2 bound of one client's update (the change of all weights in a round)
    round_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1 or self.eval_every < 1:
            raise ValueError("federated.rounds, local_epochs and eval_every must be at least 1")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"federated.fraction must be in (0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise ValueError("federated.min_clients must be at least 1")
        if self.dp_noise < 0 or self.dp_clip <= 0:
            raise ValueError("federated.dp_noise must be ≥ 0 and dp_clip > 0")


def local_train(
    model: NextActionModel,
    data: PreparedDataset,
    cfg: TrainConfig,
    *,
    server_round: int,
    rounds: int,
    local_epochs: int,
) -> dict[str, Any]:
    """Train ``model`` in place on the TRAIN events of ``data`` for ``local_epochs``; return the reply's metrics
    (``num-examples`` = targets seen, the FedAvg weight)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seqs = learned_sequences(data, cfg, None)  # the TRAIN events: validation and test stay unseen
    starts, lengths = training_windows(seqs, model.cfg.max_len)
    if len(starts) == 0:
        return {"num-examples": 0, "train-loss": 0.0, "train-s": 0.0}
    steps = -(-len(starts) // cfg.batch_size) * local_epochs
    total = steps * rounds
    opt = make_optimizer(model, cfg, sparse=False)
    log_q = losses.uniform_log_q(model.cfg.n_items)
    # as the centralised loop on a CPU: the catalogue-sized output layer in bf16 where the CPU has it
    bf16 = device_precision(cfg.precision, torch.device("cpu")) == "bf16"
    matmul_dtype = torch.bfloat16 if bf16 else torch.float32
    model.train()
    t0, loss_sum, targets, step = time.perf_counter(), 0.0, 0, (server_round - 1) * steps
    for epoch in range(local_epochs):
        # a different draw on every round, epoch and client (the client's user count tells clients apart)
        key = [cfg.seed, server_round, epoch, data.n_users]
        torch.manual_seed(int(np.random.default_rng(key).integers(2**62)))
        gen = torch.Generator().manual_seed(int(np.random.default_rng([*key, 1]).integers(2**62)))
        for rows in length_batches(lengths, cfg.batch_size, np.random.default_rng(key)):
            batch = gather_padded(seqs, starts[rows], lengths[rows])
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg)
            loss, n = step_loss(model, batch, cfg, log_q, gen, matmul_dtype=matmul_dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * n
            targets += n
    model.eval()
    return {
        "num-examples": targets // local_epochs,
        "train-loss": loss_sum / max(targets, 1),
        "train-s": round(time.perf_counter() - t0, 3),
    }


def local_validate(model: NextActionModel, data: PreparedDataset, cfg: TrainConfig) -> dict[str, Any]:
    """NDCG@10 and HR@10 of the client's users' validation targets (full ranking, the centralised protocol);
    ``num-examples`` = users ranked, so the weighted mean over clients is the mean over every user."""
    exclude = default_exclude_seen(data) if cfg.exclude_seen is None else cfg.exclude_seen
    ranks, _ = evaluate_model(model, data.seqs, split=VALID, exclude_seen=exclude, k_top=0)
    m = ranking_metrics(ranks, ks=(10,))
    return {"num-examples": len(ranks), "valid-ndcg10": m["NDCG@10"], "valid-hr10": m["HR@10"]}
