"""Model directories: safetensors weights + JSON config + the prepared data (never pickle).

MODEL_DIR/
  model.safetensors   best weights
  config.json         {"model": ModelConfig, "train": TrainConfig, "exclude_seen", "precision", …}
  data/               the prepared dataset the model was trained on (vocabularies, histories, split)
  metrics.jsonl       one line per epoch; training.png plots it
  state/              resumable training state: last weights, optimizer, counters, best weights
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nextaction.config import build
from nextaction.errors import InputError
from nextaction.model import ModelConfig, NextActionModel
from nextaction.training.state import TrainConfig, TrainState

FORMAT_VERSION = 1


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)  # CUDA weights too
    os.replace(tmp, path)


# ---- resumable training state -------------------------------------------------------------------------


def has_train_state(out_dir: Path) -> bool:
    return (out_dir / "state" / "state.json").is_file()


def save_train_state(
    out_dir: Path,
    model: NextActionModel,
    opt: torch.optim.Optimizer,
    state: TrainState,
    best: dict[str, torch.Tensor] | None,
) -> None:
    d = out_dir / "state"
    d.mkdir(parents=True, exist_ok=True)
    sd = opt.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"opt.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    if best is not None:
        _atomic_save_tensors(best, d / "best.safetensors")
    _atomic_save_tensors(tensors, d / "last.safetensors")
    # state.json last: its presence means the tensors beside it are complete.
    _atomic_write_text(
        d / "state.json", json.dumps({"train": asdict(state), "param_groups": sd["param_groups"]})
    )


def load_train_state(out_dir: Path, model: NextActionModel, opt: torch.optim.Optimizer) -> TrainState:
    d = out_dir / "state"
    meta = json.loads((d / "state.json").read_text())
    tensors = load_file(d / "last.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return TrainState(**meta["train"])


def load_best_weights(out_dir: Path) -> dict[str, torch.Tensor] | None:
    p = out_dir / "state" / "best.safetensors"
    return load_file(p) if p.is_file() else None


# ---- the finished model -----------------------------------------------------------------------------


def save_model(out_dir: Path, model: NextActionModel, train_cfg: TrainConfig, extra: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save_tensors(dict(model.state_dict()), out_dir / "model.safetensors")
    config = {
        "format_version": FORMAT_VERSION,
        "model": asdict(model.cfg),
        "train": asdict(train_cfg),
        **extra,
    }
    _atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))


def save_model_files(out_dir: Path, model: NextActionModel, config: dict[str, Any]) -> None:
    """Rewrite the weights and config of an existing model directory (e.g. after adding items)."""
    config = {**config, "model": asdict(model.cfg)}
    _atomic_save_tensors(dict(model.state_dict()), out_dir / "model.safetensors")
    _atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))


def _eventless_items(data_dir: Path, n_items: int) -> torch.Tensor:
    """(n_items + 1,) float: 1 for catalogue items with no event in the model's data."""
    items = np.load(data_dir / "seq_items.npy", mmap_mode="r")
    counts = np.bincount(np.asarray(items), minlength=n_items + 1)[: n_items + 1]
    out = torch.from_numpy((counts == 0).astype(np.float32))
    out[0] = 0.0
    return out


def load_model(model_dir: str | Path) -> tuple[NextActionModel, dict[str, Any]]:
    d = Path(model_dir)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise InputError(
            "is not a trained model directory (no config.json / model.safetensors); "
            "train one with `nextaction train … --out DIR`",
            path=d,
        )
    config = json.loads((d / "config.json").read_text())
    model = NextActionModel(build(ModelConfig, config["model"], where="config.json [model]"))
    state = load_file(d / "model.safetensors")
    if model.text_proj is not None and "is_new" not in state:
        # written before items were registered as new: its new items are the ones `items add` appended,
        # the items of its catalogue without any event in its data
        state["is_new"] = _eventless_items(d / "data", model.cfg.n_items)
    model.load_state_dict(state)
    model.eval()
    return model, config
