"""Inference helpers: score histories with a trained model and rank every user's target.

Shared by training (validation), the evaluation, the new-item offset, explanations and the predictor.
"""

from __future__ import annotations

import numpy as np
import torch

from nextaction.batches import (
    Batch,
    history_batch,
)
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.device import batch_to_device
from nextaction.evaluation.ranking import catalogue_chunk, eval_examples, rank_targets
from nextaction.model import NextActionModel


def default_exclude_seen(data: PreparedDataset) -> bool:
    """Exclude history items from candidates for single-behaviour logs (repeats are rare and uninformative);
    keep them for multi-behaviour logs, where buying what was carted is the main pattern."""
    return len(data.behaviors) <= 2


@torch.no_grad()
def score_histories(model: NextActionModel, batch: Batch) -> torch.Tensor:
    """(B, n_items + 1) fp32 scores after each row's history, on the CPU whatever the model's device.
    Empty rows score from a zero state."""
    batch = batch_to_device(batch, model.item_emb.weight.device)
    h = model(batch.items, batch.behaviors, batch.timestamps)
    return model.next_item_scores(h, batch.items, batch.behaviors).float().cpu()


PAD_BUCKET = 8  # evaluation pads each history up to a multiple of this


def length_groups(padded: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Group example indices by their padded length, at most ``chunk`` per group.

    A row's padded length depends only on its own length, never on which rows share its chunk, so scores
    (and hence metrics) do not depend on the chunk size — and short histories are not padded to long ones.
    """
    order = np.argsort(padded, kind="stable")
    groups: list[np.ndarray] = []
    for value in np.unique(padded):
        idx = order[padded[order] == value]
        groups += [idx[i : i + chunk] for i in range(0, len(idx), chunk)]
    return groups


def evaluate_model(
    model: NextActionModel,
    seqs: Sequences,
    *,
    split: int,
    exclude_seen: bool,
    target_behavior: int | None = None,
    chunk: int = 2048,
    k_top: int = 20,
    max_users: int = 0,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and top-``k_top`` lists of every user's target in ``split`` (see evaluation/ranking.py for the protocol).

    ``max_users`` > 0 evaluates a fixed random sample of that many users (``EvalExamples.sample``, seed 0);
    ``users``: only these user positions.
    """
    ex = eval_examples(seqs, split=split, target_behavior=target_behavior).of_users(users).sample(max_users)
    chunk = catalogue_chunk(chunk, model.cfg.n_items)
    L = model.cfg.max_len
    lengths = np.minimum(ex.hist_end - ex.hist_start, L)
    padded = np.minimum(-(-np.maximum(lengths, 1) // PAD_BUCKET) * PAD_BUCKET, L)
    was_training = model.training
    model.eval()

    def score_rows(rows: np.ndarray) -> torch.Tensor:
        batch = history_batch(seqs, ex.hist_start[rows], ex.hist_end[rows], L, pad_to=int(padded[rows[0]]))
        return score_histories(model, batch)

    try:
        return rank_targets(
            score_rows, seqs, ex, exclude_seen=exclude_seen, groups=length_groups(padded, chunk), k_top=k_top
        )
    finally:
        model.train(was_training)
