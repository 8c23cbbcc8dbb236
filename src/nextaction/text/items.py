"""Item text around the model: encode the catalogue, hold items out (cold start), add new items.

The model (model.py) keeps the text embeddings as a fixed buffer and learns a projection of them; an item
that had no training events is represented by its text alone (``has_id`` = 0). That is what makes

- **cold-start evaluation** honest: :func:`hold_out_items` removes every training event of a random
  fraction of items, so the model never learns an ID embedding for them; their test targets are then
  ranked against the whole catalogue and reported as ``cold`` beside ``warm``;
- **new items** recommendable without retraining: :func:`add_items` encodes their text and appends them to
  the vocabulary, the embedding tables and the text buffer of a saved model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import COLD, COLD_FIT, ITEM_ID, ITEM_IDX, SPLIT, TRAIN
from nextaction.errors import InputError
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.text.encoder import TextConfig, TextEncoder, encode_items


def hold_out_items(data: PreparedDataset, *, fraction: float, seed: int) -> PreparedDataset:
    """Drop every TRAIN event of a random ``fraction`` of the items (marked ``cold`` in the item table).

    VALID and TEST events stay, so users whose next item is cold are evaluated on it. The held-out items are
    registered as new (the new-item offset applies to them) and split in two random halves: ``cold_fit``
    items, whose validation targets choose the offset, and the others, on which cold-start test metrics
    are reported, so the offset is never chosen on the items it is tested on.
    """
    if not 0 < fraction < 1:
        raise InputError(f"--holdout-items must be a fraction in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(fraction * data.n_items))
    cold = np.sort(rng.choice(np.arange(1, data.n_items + 1), size=n_cold, replace=False))
    fit = np.sort(rng.permutation(cold)[: n_cold // 2])
    drop = (pl.col(SPLIT) == TRAIN) & pl.col(ITEM_IDX).is_in(cold.tolist())
    events = data.events.filter(~drop)
    items = data.items.with_columns(
        pl.col(ITEM_IDX).is_in(cold.tolist()).alias(COLD),
        pl.col(ITEM_IDX).is_in(fit.tolist()).alias(COLD_FIT),
    )
    report = dict(data.report)
    report["holdout_items"] = {
        "fraction": fraction,
        "seed": seed,
        "items": int(n_cold),
        "offset_fit_items": len(fit),
        "train_events_removed": data.events.height - events.height,
    }
    return PreparedDataset(
        events=events, users=data.users, items=items, behaviors=data.behaviors, report=report
    )


def encode_catalogue(
    items: pl.DataFrame, config: TextConfig, *, progress: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(n_items + 1, dim) float32 text embeddings by item_idx (row 0 and items without text are zero)."""
    ordered = items.sort(ITEM_IDX)
    vectors, _, report = encode_items(ordered, config, progress=progress)
    out = torch.zeros(ordered.height + 1, vectors.shape[1])
    out[1:] = torch.from_numpy(np.ascontiguousarray(vectors))
    info = {
        "model": report.model_id,
        "dim": report.dim,
        "items": report.n_items,
        "encoded": report.n_encoded,
        "cached": report.n_cached,
        "without_text": report.n_empty,
        "seconds": round(report.seconds, 2),
        "template": config.template,
        "config": {k: v for k, v in vars(config).items() if k != "cache_dir"},
    }
    return out, info


def cold_warm(
    data: PreparedDataset, split: int, ranks: np.ndarray, *, users: np.ndarray | None = None
) -> dict[str, Any] | None:
    """HR/NDCG/MRR@10 separately for targets that are held-out (cold) items and for the others (warm).

    ``cold`` holds only the held-out items the new-item offset was not fitted on (``cold_fit`` false); the
    targets on the others are counted in ``cold_fit_users`` and left out of both groups. ``ranks`` are in the
    order of ``eval_examples(data.seqs, split=split).of_users(users)``. None without a holdout.
    """
    if COLD not in data.items.columns:
        return None
    from nextaction.evaluation.ranking import eval_examples

    targets = eval_examples(data.seqs, split=split).of_users(users).target
    cold_idx = data.items.filter(pl.col(COLD))[ITEM_IDX].to_numpy()
    fit_idx = (
        data.items.filter(pl.col(COLD_FIT))[ITEM_IDX].to_numpy() if COLD_FIT in data.items.columns else []
    )
    is_fit = np.isin(targets, fit_idx)
    is_cold = np.isin(targets, cold_idx) & ~is_fit
    out: dict[str, Any] = {
        "holdout_items": data.report.get("holdout_items"),
        "cold_fit_users": int(is_fit.sum()),
    }
    for name, mask in ((COLD, is_cold), ("warm", ~is_cold & ~is_fit)):
        m = ranking_metrics(ranks[mask], ks=(10, 20))
        out[name] = {**{k: m[k] for k in ("HR@10", "NDCG@10", "MRR@10", "HR@20")}, "users": int(mask.sum())}
    return out


def add_items(model_dir: str | Path, source: str | Path) -> dict[str, Any]:
    """Append the new items of an item table to a trained text model, without retraining.

    Items already in the vocabulary are left as they are (counted). New items get the next item indices,
    a zero ID embedding marked unlearned (``has_id`` = 0), their encoded text, and ``is_new`` = 1: they
    are registered as new, so the fitted new-item offset applies to them.
    """
    from nextaction.data.readers import read_items
    from nextaction.training.checkpoint import load_model, save_model_files

    model_dir = Path(model_dir)
    model, config = load_model(model_dir)
    if model.text_proj is None:
        raise InputError(
            "this model was trained without item text; retrain it with --items ITEMS_FILE to add items by text",
            path=model_dir,
        )
    data = PreparedDataset.load(model_dir / "data", mmap=False)
    table = read_items(source)
    known = set(data.items[ITEM_ID].to_list())
    new = table.filter(~pl.col(ITEM_ID).is_in(list(known))).unique(ITEM_ID, keep="first", maintain_order=True)
    result = {"added": new.height, "already_known": table.height - new.height}
    if new.height == 0:
        return result
    n_old = data.n_items
    new = new.with_columns(pl.int_range(n_old + 1, n_old + 1 + new.height).cast(pl.Int64).alias(ITEM_IDX))
    missing_cols = [c for c in data.items.columns if c not in new.columns]
    new = new.with_columns(
        pl.lit(None, dtype=data.items.schema[c]).alias(c) for c in missing_cols if c != COLD
    )
    if COLD in data.items.columns:
        new = new.with_columns(pl.lit(False).alias(COLD))
    items = pl.concat([data.items, new.select(data.items.columns)], how="vertical_relaxed")
    text_cfg = TextConfig.from_dict(config.get("text", {}).get("config", {}))
    vectors, has_text, report = encode_items(new, text_cfg, encoder=TextEncoder(text_cfg))
    grown = _grow(model, vectors)
    data.items = items
    data.save(model_dir / "data")
    config["model"]["n_items"] = grown.cfg.n_items
    save_model_files(model_dir, grown, config)
    result.update({"encoded": report.n_encoded + report.n_cached, "without_text": int((~has_text).sum())})
    return result


def _grow(model: Any, vectors: np.ndarray) -> Any:
    """A copy of ``model`` with len(vectors) more items: zero ID rows (unlearned) and the given text rows."""
    from dataclasses import replace

    from nextaction.model import NextActionModel

    k = len(vectors)
    cfg = replace(model.cfg, n_items=model.cfg.n_items + k)
    grown = NextActionModel(cfg)
    state = model.state_dict()
    new_state = grown.state_dict()
    for name, value in state.items():
        target = new_state[name]
        if target.shape == value.shape:
            new_state[name] = value
            continue
        # item-indexed tensors grow along dim 0
        rows = torch.zeros_like(target)
        rows[: value.shape[0]] = value
        if name == "text_emb":
            rows[value.shape[0] :] = torch.from_numpy(np.ascontiguousarray(vectors))
        if name == "is_new":
            rows[value.shape[0] :] = 1.0  # registered as new: the new-item offset applies to them
        new_state[name] = rows
    grown.load_state_dict(new_state)
    grown.eval()
    return grown
