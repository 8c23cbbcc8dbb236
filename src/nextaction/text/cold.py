"""New (text-only) items: the score offset that gives them exposure, chosen on validation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import VALID
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.evaluation.ranking import eval_examples
from nextaction.model import NextActionModel
from nextaction.scoring import evaluate_model

NEW_ITEM_OFFSETS = np.arange(0.0, 3.01, 0.25)  # candidate offsets, in score (logit) units
MIN_NEW_TARGETS = 50  # fewer validation targets on text-only items than this: simulate new items
SIMULATED_NEW_SHARE = 0.1  # … by hiding the ID embedding of this share of the items


@torch.no_grad()
def fit_new_item_offset(
    model: NextActionModel,
    valid_seqs: Sequences,
    *,
    exclude_seen: bool,
    tolerance: float,
    max_users: int = 5000,
) -> dict[str, Any] | None:
    """Choose the score offset of new items (``model.new_item_offset``, applied to ``model.is_new``) on the
    validation split.

    A new item is represented by its projected text alone; trained items also have an ID embedding, which
    carries their popularity, so new items score systematically low and are almost never recommended (on
    Beauty with 10% of the items held out, cold-item HR@10 0.003). The offset is the largest value on a
    grid whose validation NDCG@10 — the validated users (a fixed sample of at most ``max_users``), full
    ranking, the evaluation's protocol — stays within ``tolerance`` (a share) of the best on the grid: new
    items get the exposure that costs at most that much accuracy. The validation targets on registered new
    items are the evidence (``valid_seqs`` must hold no user whose target is a new item the offset will be
    tested on); with fewer than MIN_NEW_TARGETS of them, new items are simulated by hiding the ID embedding
    of a random SIMULATED_NEW_SHARE of the items (seed 0) and registering them as new. Returns what was
    chosen and why, or None for models without item text (or tolerance < 0).
    """
    if model.text_proj is None or model.cfg.fusion != "id+text" or tolerance < 0:
        return None
    ex = eval_examples(valid_seqs, split=VALID).sample(max_users)
    if len(ex) == 0:
        return None
    has_id, is_new = model.has_id.clone(), model.is_new.clone()
    targets = torch.from_numpy(ex.target).to(has_id.device)
    real = int((is_new[targets] == 1).sum())
    simulated = real < MIN_NEW_TARGETS
    ndcg: list[float] = []
    try:
        if simulated:
            hide = torch.from_numpy(np.random.default_rng(0).random(len(has_id)) < SIMULATED_NEW_SHARE)
            model.has_id.masked_fill_(hide.to(has_id.device), 0.0)
            model.is_new.masked_fill_(hide.to(has_id.device), 1.0)
        for c in NEW_ITEM_OFFSETS:
            model.new_item_offset.fill_(float(c))
            ranks, _ = evaluate_model(
                model, valid_seqs, split=VALID, exclude_seen=exclude_seen, k_top=0, max_users=max_users
            )
            ndcg.append(ranking_metrics(ranks, ks=(10,))["NDCG@10"])
    finally:
        model.has_id.copy_(has_id)
        model.is_new.copy_(is_new)
    best = max(ndcg)
    ok = [float(c) for c, v in zip(NEW_ITEM_OFFSETS, ndcg, strict=True) if v >= (1 - tolerance) * best]
    chosen = max(ok) if best > 0 else 0.0
    model.new_item_offset.fill_(chosen)
    return {
        "offset": chosen,
        "tolerance": tolerance,
        "evidence": "simulated new items" if simulated else f"{real} validation targets on new items",
        "validation_users": len(ex),
        "valid_NDCG@10": {f"{c:g}": round(v, 5) for c, v in zip(NEW_ITEM_OFFSETS, ndcg, strict=True)},
    }


@contextmanager
def scored_as(
    model: NextActionModel, *, offset: float | None = None, new_items: np.ndarray | None = None
) -> Iterator[NextActionModel]:
    """Temporarily score with another new-item ``offset`` and/or more items registered as new.

    How the evaluation shows what the offset does: cold-start metrics at offset 0 beside the fitted one,
    and the items first seen after the cutoff as if a shop had registered them (``items add``).
    """
    saved_offset, saved_new = model.new_item_offset.clone(), model.is_new.clone()
    try:
        if offset is not None:
            model.new_item_offset.fill_(offset)
        if new_items is not None:
            model.is_new[torch.from_numpy(np.asarray(new_items, dtype=np.int64))] = 1.0
        yield model
    finally:
        model.new_item_offset.copy_(saved_offset)
        model.is_new.copy_(saved_new)


def first_seen_in(seqs: Sequences, split: int, n_items: int) -> np.ndarray:
    """Item indices whose every event is in ``split`` or later: on a temporal split, the items first seen
    after the previous cutoff (new by time)."""
    codes = np.asarray(seqs.split)
    items = np.asarray(seqs.items)
    before = np.bincount(items[codes < split], minlength=n_items + 1)
    during = np.bincount(items[codes == split], minlength=n_items + 1)
    return np.flatnonzero((before == 0) & (during > 0))


def new_items_by_time(
    model: NextActionModel,
    data: PreparedDataset,
    code: int,
    ranks: np.ndarray,
    *,
    exclude_seen: bool,
    users: np.ndarray | None,
) -> dict[str, Any] | None:
    """Temporal splits: the targets on items first seen in the evaluated window (new by time), as scored
    (nobody registered them, so no offset: text alone) and as if a shop had registered them as new before
    the window (``items add``: the fitted offset lifts them). The catalogue holds only the new items that
    did get events in the window, so the registered figure is an upper bound of what the offset gives in a
    real catalogue, where most new items get none and the offset lifts them all the same."""
    new = first_seen_in(data.seqs, code, data.n_items)
    is_new = np.isin(eval_examples(data.seqs, split=code).of_users(users).target, new)
    if not is_new.any():
        return None
    with scored_as(model, new_items=new):
        registered, _ = evaluate_model(
            model, data.seqs, split=code, exclude_seen=exclude_seen, k_top=0, users=users
        )
    keys = ("HR@10", "NDCG@10", "MRR@10", "HR@20")
    as_scored, lifted = (
        ranking_metrics(ranks[is_new], ks=(10, 20)),
        ranking_metrics(registered[is_new], ks=(10, 20)),
    )
    return {
        "items": len(new),
        "users": int(is_new.sum()),
        "offset": float(model.new_item_offset),
        "as_scored": {k: as_scored[k] for k in keys},
        "registered_new": {k: lifted[k] for k in keys},
        # what registering them does to everyone else's list (a lift pushes other items down)
        "others_as_scored": {
            k: v for k, v in ranking_metrics(ranks[~is_new], ks=(10, 20)).items() if k in keys
        },
        "others_registered_new": {
            k: v for k, v in ranking_metrics(registered[~is_new], ks=(10, 20)).items() if k in keys
        },
    }
