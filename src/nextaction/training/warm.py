"""Warm start: a trained model's weights carried over to a grown log (``train … --init-from MODEL``).

The new log's vocabulary may have new items (and lose some). Every weight that does not depend on the
catalogue is copied as it is; every item-indexed weight (the item table, per-item biases and buffers) copies
the rows of the items both vocabularies know, matched by item id, and new items keep their fresh
initialisation (with item text, their text vector is filled in by training as for any model). Which weights
are item-indexed is found by building the model for 1 and for 2 items and seeing which shapes change, so a
new per-item parameter needs no list kept here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from nextaction.errors import InputError
from nextaction.model import ModelConfig, NextActionModel


def item_indexed_keys(cfg: ModelConfig) -> set[str]:
    """State-dict keys whose first dimension is the catalogue (n_items + 1)."""
    small = {k: v.shape for k, v in NextActionModel(replace(cfg, n_items=1)).state_dict().items()}
    large = {k: v.shape for k, v in NextActionModel(replace(cfg, n_items=2)).state_dict().items()}
    return {k for k in small if small[k] != large[k]}


def carry_over(
    old: dict[str, torch.Tensor],
    old_item_ids: list[str],
    new: dict[str, torch.Tensor],
    new_item_ids: list[str],
    cfg: ModelConfig,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``new`` (a freshly initialised state dict for ``cfg``) with ``old``'s weights carried over.

    ``*_item_ids``: the item id of each item_idx 1..n (position 0 = padding). Returns the weights and a
    report: items kept, new and dropped."""
    index = {item: i + 1 for i, item in enumerate(old_item_ids)}
    new_rows = np.array([i + 1 for i, item in enumerate(new_item_ids) if item in index], dtype=np.int64)
    old_rows = np.array([index[item] for item in new_item_ids if item in index], dtype=np.int64)
    items = item_indexed_keys(cfg)
    out: dict[str, torch.Tensor] = {}
    for key, fresh in new.items():
        if key not in old:
            raise InputError(f"--init-from: the old model has no weight '{key}'; train from scratch")
        prev = old[key]
        same = prev.shape[1:] == fresh.shape[1:] if key in items else prev.shape == fresh.shape
        if not same:
            raise InputError(
                f"--init-from: weight '{key}' has shape {tuple(prev.shape)} in the old model and "
                f"{tuple(fresh.shape)} now; keep the old [model] settings (they are the default) or train "
                "from scratch"
            )
        if key in items:
            t = fresh.clone()
            t[0] = prev[0]  # the padding row
            if len(new_rows):
                t[torch.from_numpy(new_rows)] = prev[torch.from_numpy(old_rows)].to(t.dtype)
            out[key] = t
        else:
            out[key] = prev.clone()
    report = {
        "items_kept": len(new_rows),
        "items_new": len(new_item_ids) - len(new_rows),
        "items_dropped": len(old_item_ids) - len(new_rows),
    }
    return out, report
