"""Hyperparameter search with Optuna (``nextaction tune``): which model and training settings suit this log?

Each trial trains a model with ``training.loop.fit`` on the TRAIN events (and whatever validation events the
settings let it learn) and is scored by its best validation NDCG@10, the checkpoint rule of ``train``; the
test events are never read (a test checks that poisoning them changes nothing). Optuna's TPE sampler picks
the settings; a pruner (median by default, or Hyperband) stops a trial whose validation NDCG@10 after some
epoch trails the other trials at that epoch. The study lives in ``OUT/study.db`` (SQLite): run the same
command again and the search resumes with the trials it has.

Output: ``OUT/best.toml`` (the ``[model]`` and ``[train]`` sections of the best trial, for
``nextaction train … --config OUT/best.toml``), ``OUT/trials.csv`` and ``OUT/trials.png``.

The search space (``--space space.toml``) lists settings as ``section.key`` ranges::

    [model]
    dim = { choices = [32, 64, 128] }
    dropout = { low = 0.1, high = 0.6 }
    [train]
    lr = { low = 3e-4, high = 1e-2, log = true }
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nextaction.config import build, load_sections
from nextaction.data.dataset import PreparedDataset
from nextaction.errors import InputError
from nextaction.model import ModelConfig
from nextaction.training.state import TrainConfig

SECTIONS = ("model", "train")
SPEC_KEYS = {"choices", "low", "high", "log", "step"}
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "model.dim": {"choices": [32, 64, 128]},
    "model.n_layers": {"low": 1, "high": 3},
    "model.dropout": {"low": 0.1, "high": 0.6},
    "model.max_len": {"choices": [20, 50, 100]},
    "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
    "train.weight_decay": {"choices": [0.0, 0.01, 0.1]},
}
PRUNERS = ("median", "hyperband", "none")


def check_space(space: Mapping[str, Mapping[str, Any]], *, where: str) -> dict[str, dict[str, Any]]:
    """Validate a search space: known ``section.key`` names and range specs; returns a plain copy."""
    fields = {
        "model": {f.name for f in dataclasses.fields(ModelConfig)} - {"n_items", "n_behaviors"},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
    }
    out: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        section, _, key = name.partition(".")
        if section not in fields or key not in fields[section]:
            raise InputError(f"{where}: unknown setting '{name}' (sections: model, train; keys as in --set)")
        if not isinstance(spec, Mapping) or not spec or set(spec) - SPEC_KEYS:
            raise InputError(
                f"{where}: '{name}' needs {{ choices = [...] }} or {{ low = …, high = … [, log = true] }}"
            )
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"] or len(spec) > 1:
                raise InputError(f"{where}: '{name}' choices must be a non-empty list, alone")
        elif "low" not in spec or "high" not in spec or not spec["low"] < spec["high"]:
            raise InputError(f"{where}: '{name}' needs low < high")
        out[name] = dict(spec)
    return out


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The default space, or the one of a ``space.toml`` (tables [model] and [train])."""
    if path is None:
        return dict(DEFAULT_SPACE)
    p = Path(path)
    if not p.is_file():
        raise InputError("search space file not found", path=p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"not valid TOML ({e})", path=p) from None
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(sorted(unknown))}; use [model] and [train]", path=p)
    flat = {f"{s}.{k}": v for s in SECTIONS for k, v in raw.get(s, {}).items()}
    return check_space(flat, where=str(p))


def suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One point of the space as ``{"model": {...}, "train": {...}}``."""
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for name, spec in space.items():
        section, _, key = name.partition(".")
        if "choices" in spec:
            v = trial.suggest_categorical(name, spec["choices"])
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
            v = trial.suggest_int(name, spec["low"], spec["high"], step=int(spec.get("step", 1)))
        else:
            v = trial.suggest_float(
                name,
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log")),
                step=spec.get("step"),
            )
        values[section][key] = v
    return values


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":
        # no verdict before 3 trials have finished and before epoch 5: early epochs rank settings badly
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise InputError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def best_config_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["# nextaction tune: the best trial's settings; use with `nextaction train … --config THIS`"]
    for s in SECTIONS:
        lines += ["", f"[{s}]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(sections.get(s, {}).items())]
    return "\n".join(lines) + "\n"


def tune(
    data: PreparedDataset,
    out: str | Path,
    *,
    trials: int | None = None,
    minutes: float | None = None,
    space: Mapping[str, Mapping[str, Any]] | None = None,
    base: Mapping[str, Mapping[str, Any]] | None = None,
    pruner: str = "median",
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Search ``space`` on ``data`` for ``trials`` trials or ``minutes`` (whichever ends first; resumes the
    study in ``out``), every trial with the fixed settings ``base`` ({"model": {…}, "train": {…}}) under
    the searched ones. Returns the summary and writes best.toml, trials.csv and trials.png to ``out``."""
    import optuna

    from nextaction.training.loop import fit
    from nextaction.workflow import model_config_for

    if not trials and not minutes:
        raise InputError("give --trials N or --minutes M (or both): the search needs an end")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {s: dict((base or {}).get(s, {})) for s in SECTIONS}
    space = check_space(space if space is not None else DEFAULT_SPACE, where="search space")
    clash = [n for n in space if n.partition(".")[2] in base[n.partition(".")[0]]]
    if clash:
        raise InputError(f"{', '.join(clash)} set by --set/--config and searched too: drop one of them")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="nextaction",
        storage=f"sqlite:///{out / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=_pruner(pruner),
    )

    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, space)
        model_section = {**base["model"], **point["model"]}
        train_section = {**base["train"], **point["train"]}
        model_cfg = model_config_for(data, model_section)
        cfg = build(TrainConfig, train_section, where="[train]")

        def on_epoch(record: dict[str, Any]) -> None:
            if "valid_NDCG@10" in record:
                trial.report(float(record["valid_NDCG@10"]), int(record["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {record['epoch']}")

        t0 = time.perf_counter()
        _, state = fit(
            data, model_cfg, cfg, out_dir=out / "trials" / f"{trial.number:03d}", on_epoch=on_epoch
        )
        trial.set_user_attr("best_epoch", state.best_epoch)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        log(f"trial {trial.number}: validation {state.best_ndcg:.4f} (epoch {state.best_epoch}) {point}")
        return float(state.best_ndcg)

    before = len(study.trials)
    study.optimize(objective, n_trials=trials, timeout=None if not minutes else minutes * 60)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise InputError("no trial finished: give more --minutes, or fewer epochs (--set train.epochs=…)")
    best = study.best_trial
    best_sections: dict[str, dict[str, Any]] = {s: dict(base[s]) for s in SECTIONS}
    for name, v in best.params.items():
        section, _, key = name.partition(".")
        best_sections[section][key] = v
    _write_atomic(out / "best.toml", best_config_toml(best_sections))
    _write_atomic(out / "trials.csv", trials_csv(study.trials, list(space)))
    _plot(study, out / "trials.png")
    states = [t.state.name.lower() for t in study.trials]
    return {
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": best.params,
        "best_config": str(out / "best.toml"),
        "trials": {s: states.count(s) for s in sorted(set(states))},
        "trials_this_run": len(study.trials) - before,
        "metric": "best validation NDCG@10 of the trial (the checkpoint rule of train); test never read",
    }


def trials_csv(trials: list[Any], names: list[str]) -> str:
    """One row per trial: number, state, validation NDCG@10, best epoch, seconds, then each setting."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", "valid_NDCG@10", "best_epoch", "seconds", *names])
    for t in trials:
        w.writerow(
            [
                t.number,
                t.state.name.lower(),
                "" if t.value is None else f"{t.value:.6f}",
                t.user_attrs.get("best_epoch", ""),
                t.user_attrs.get("seconds", ""),
                *(t.params.get(n, "") for n in names),
            ]
        )
    return buf.getvalue()


def tune_source(
    source: str | Path,
    out: str | Path,
    *,
    format: str | None = None,
    mapping: Mapping[str, str | None] | None = None,
    config_path: str | Path | None = None,
    sets: list[str] | None = None,
    log: Callable[[str], None] = lambda _: None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`tune` on raw events (prepared into ``out/data`` with ``[prepare]``) or a prepared dataset."""
    from nextaction.workflow import training_data

    sections = load_sections(config_path, sets or [], sections=(*SECTIONS, "prepare"))
    data = training_data(
        source,
        Path(out) / "data",
        sections=sections,
        format=format,
        mapping=mapping,
        items=None,
        resume=True,  # a resumed search reads the data it prepared the first time
        holdout_items=None,
        seed=0,
        log=log,
    )
    return tune(data, out, base={s: sections[s] for s in SECTIONS}, log=log, **options)


def _plot(study: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [t.number for t in study.trials if t.value is not None]
    ys = [t.value for t in study.trials if t.value is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(xs, ys, s=14, label="trial (complete)")
    best, run = [], float("-inf")
    for y in ys:
        run = max(run, y)
        best.append(run)
    ax.step(xs, best, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation NDCG@10")
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
