"""The end-to-end verbs behind the CLI: prepare, train, evaluate. Thin glue over the stage modules.

Each function takes plain values and returns plain results (dicts, paths), so the CLI only parses options
and prints; the same calls are the Python API for scripts and notebooks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nextaction.config import build, load_sections
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import CLOCK_POSITIONS, COLD, COLD_FIT, ITEM_ID, ITEM_IDX, TEST, VALID
from nextaction.errors import InputError

# torch-backed modules are imported inside the functions that train or score, so that `nextaction prepare`
# starts in a fraction of a second.

if TYPE_CHECKING:
    from nextaction.data.prepare import PrepareResult

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def prepare_source(
    source: Any,
    *,
    format: str | None = None,
    mapping: Mapping[str, str | None] | None = None,
    separator: str | None = None,
    items: str | Path | None = None,
    config: Any = None,
    progress: Log | None = None,
) -> PrepareResult:
    """Read an event log (and optional item table) and prepare it with ``config`` (a PrepareConfig)."""
    from nextaction.data.prepare import prepare
    from nextaction.data.prepare_config import PrepareConfig
    from nextaction.data.readers import read_events, read_items

    read = read_events(source, format=format, mapping=mapping, separator=separator)
    item_table = read_items(items) if items is not None else None
    return prepare(read, items=item_table, config=config or PrepareConfig(), progress=progress)


def is_prepared_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "events.parquet").is_file()


def train_model(
    source: str | Path,
    out: str | Path,
    *,
    format: str | None = None,
    mapping: Mapping[str, str | None] | None = None,
    items: str | Path | None = None,
    config_path: str | Path | None = None,
    sets: list[str] | None = None,
    resume: bool = False,
    holdout_items: float | None = None,
    init_from: str | Path | None = None,
    log: Log = _quiet,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Prepare (if ``source`` is raw events), train, save and evaluate a model into ``out``.

    ``init_from`` (a model directory): a warm start. The old model's [model] settings are the defaults, its
    weights the starting point (items matched by id; new items start fresh: training/warm.py), the schedule
    is short (``WARM_START_EPOCHS`` unless ``train.epochs`` is set) and the optimiser starts afresh.

    With an item table (``items``, or a ``[text]`` section, or ``model.fusion`` other than ``id``) item text
    is encoded and fused into the item representation (default fusion ``id+text``). ``holdout_items``
    removes the training events of that fraction of items for the cold-start protocol.

    Under torchrun every process runs this (see training/distributed.py): rank 0 prepares the data, logs, and
    writes ``out``; the other ranks read the prepared data from ``out`` (so with several nodes ``out`` must
    be on a shared file system), train their shards quietly, and return rank 0's test result.
    """
    from nextaction.device import device_precision
    from nextaction.scoring import default_exclude_seen
    from nextaction.training import distributed
    from nextaction.training.checkpoint import save_model
    from nextaction.training.loop import fit
    from nextaction.training.state import TEXT_MODEL_EPOCHS, TrainConfig

    out = Path(out)
    from nextaction.privacy.dp import PrivacyConfig

    sections = load_sections(
        config_path, sets or [], sections=("model", "train", "prepare", "text", "privacy")
    )
    train_cfg = build(TrainConfig, sections["train"], where="[train]")
    privacy_cfg = build(PrivacyConfig, sections["privacy"], where="[privacy]")
    info = distributed.init_from_env()
    main = info.is_main
    if not main:
        log, on_epoch, progress = _quiet, None, None
    try:
        data_dir = out / "data"
        if main:
            data = training_data(
                source,
                data_dir,
                sections=sections,
                format=format,
                mapping=mapping,
                items=items,
                resume=resume,
                holdout_items=holdout_items,
                seed=train_cfg.seed,
                log=log,
            )
        distributed.barrier()  # rank 0 has saved the prepared data: the other ranks load that very data
        if not main:
            data = PreparedDataset.load(data_dir)
        item_text, text_info = None, None
        # Categorical item columns enter as embeddings (model.categorical); an item table that holds only
        # such columns has no text to encode.
        categorical = tuple(sections["model"].get("categorical", ()))
        skip = (ITEM_ID, ITEM_IDX, COLD, COLD_FIT, *categorical)
        text_columns = [c for c in data.items.columns if c not in skip]
        wants_text = (items is not None and bool(text_columns)) or bool(sections["text"])
        if wants_text or sections["model"].get("fusion", "id") != "id":
            from nextaction.text.encoder import TextConfig
            from nextaction.text.items import encode_catalogue

            if not main:
                distributed.barrier()  # let rank 0 encode first: the others then read its cache
            log("encoding item text …")
            # a Rich bar on stderr when the caller shows progress (the CLI): a cold cache takes a while
            item_text, text_info = encode_catalogue(
                data.items, TextConfig.from_dict(sections["text"]), progress=log is not _quiet
            )
            log(
                f"item text: {text_info['model']} ({text_info['dim']}-d), {text_info['encoded']} encoded, "
                f"{text_info['cached']} from cache, {text_info['without_text']} without text, "
                f"{text_info['seconds']} s"
            )
            if main:
                distributed.barrier()
        warm = None
        if init_from is not None:
            if privacy_cfg.enabled or info.distributed or resume:
                raise InputError("--init-from does not combine with privacy.epsilon, torchrun or --resume")
            warm = _warm_start_source(init_from, data)
            # the old model's settings are the defaults: the same shapes, so its weights fit
            inherited = {k: v for k, v in warm["config"]["model"].items() if k not in _DATA_SIZED}
            sections = {**sections, "model": {**inherited, **sections["model"]}}
        model_cfg = model_config_for(
            data,
            sections["model"],
            text_dim=0 if item_text is None else item_text.shape[1],
            private=privacy_cfg.enabled,
        )
        init_weights, warm_report = None, None
        if warm is not None:
            import torch

            from nextaction.model import NextActionModel
            from nextaction.training.state import WARM_START_EPOCHS
            from nextaction.training.warm import carry_over

            if "epochs" not in sections["train"]:
                train_cfg = replace(train_cfg, epochs=WARM_START_EPOCHS)
            torch.manual_seed(train_cfg.seed)  # new items' rows: fit's own initialisation
            init_weights, warm_report = carry_over(
                warm["weights"], warm["item_ids"], NextActionModel(model_cfg).state_dict(),
                data.items[ITEM_ID].to_list(), model_cfg,
            )  # fmt: skip
            warm_report = {"from": str(init_from), **warm_report, "epochs": train_cfg.epochs}
            log(
                f"warm start from {init_from}: {warm_report['items_kept']} items kept, "
                f"{warm_report['items_new']} new, {warm_report['items_dropped']} dropped; "
                f"{train_cfg.epochs} epochs"
            )
        if model_cfg.fusion == "id+text" and "epochs" not in sections["train"] and warm is None:
            train_cfg = replace(train_cfg, epochs=TEXT_MODEL_EPOCHS)
        # private training computes per-user gradients in fp32 (privacy/dp.py)
        precision = "fp32" if privacy_cfg.enabled else device_precision(train_cfg.precision, info.device)
        on_gpu = info.device.type == "cuda"
        note = "fp32" if precision == "fp32" else "autocast" if on_gpu else "native bf16 matmuls on this CPU"
        log(f"precision: {precision} ({note})")
        if on_gpu or info.distributed:
            ranks = (
                f", {info.world_size} processes ({'NCCL' if on_gpu else 'gloo'})" if info.distributed else ""
            )
            log(f"device: {info.device}{ranks}")
        privacy = None
        if privacy_cfg.enabled:
            from nextaction.privacy.dp import check_private, fit_private

            if "holdout_users" not in sections["train"]:
                train_cfg = replace(train_cfg, holdout_users=1000)
            check_private(
                model_cfg,
                train_cfg,
                explicit_train=sections["train"],
                distributed=info.distributed,
                resume=resume,
            )
            train_cfg = replace(train_cfg, new_item_tolerance=-1.0)
            model, state, privacy = fit_private(
                data,
                model_cfg,
                train_cfg,
                privacy_cfg,
                out_dir=out,
                item_text=item_text,
                on_epoch=on_epoch,
                progress=progress,
            )
            log(
                f"user-level DP: ε = {privacy['epsilon']:.3g} (target {privacy_cfg.epsilon:g}), "
                f"δ = {privacy['delta']:.3g}, noise multiplier {privacy['noise_multiplier']:.3g}, "
                f"{privacy['steps']} steps at q = {privacy['sample_rate']:.4f}"
            )
        else:
            model, state = fit(
                data,
                model_cfg,
                train_cfg,
                out_dir=out,
                resume=resume,
                on_epoch=on_epoch,
                progress=progress,
                item_text=item_text,
                dist_info=info,
                init_weights=init_weights,
            )
        if main:
            exclude_seen = (
                default_exclude_seen(data) if train_cfg.exclude_seen is None else train_cfg.exclude_seen
            )
            behavior_stage = calibrate_model(model, data, train_cfg)
            new_items = new_item_offset(model, data, train_cfg, exclude_seen=exclude_seen)
            if new_items is not None:
                log(
                    f"new (text-only) items: score offset {new_items['offset']:g}, fitted on validation "
                    f"({new_items['evidence']}; ≤ {train_cfg.new_item_tolerance:.0%} of NDCG@10)"
                )
            save_model(
                out,
                model,
                train_cfg,
                {
                    "exclude_seen": exclude_seen,
                    "precision": precision,
                    "best_epoch": state.best_epoch,
                    "epochs_run": state.epoch,
                    "train_seconds": round(state.seconds, 1),
                    "learned_valid_events": state.learned_valid_events,
                    "best_valid_score": state.best_ndcg,  # NDCG@10 (+ mean behaviour AUC with a head)
                    **behavior_stage,
                    "new_item_offset": new_items,
                    "text": text_info,
                    "world_size": info.world_size,
                    "privacy": privacy,
                    "warm_start": warm_report,
                },
            )
            plot_metrics(out)
            # the report after training follows train.valid_users (a sample on huge logs; `evaluate` does all)
            result = evaluate_dir(out, split="test", max_users=train_cfg.valid_users)
            (out / "eval_test.json").write_text(json.dumps(result, indent=2))
        distributed.barrier()  # rank 0 has written the model directory and its test result
        if not main:
            result = json.loads((out / "eval_test.json").read_text())
        return result
    finally:
        distributed.shutdown()


# ModelConfig fields that follow the data (never inherited by a warm start)
_DATA_SIZED = ("n_items", "n_behaviors", "category_sizes")


def _warm_start_source(model_dir: str | Path, data: PreparedDataset) -> dict[str, Any]:
    """The old model's weights, config and item ids; its behaviours must be the new log's."""
    from nextaction.training.checkpoint import load_model

    model, config = load_model(model_dir)
    old = PreparedDataset.load(Path(model_dir) / "data")
    if old.behaviors != data.behaviors:
        raise InputError(
            f"--init-from {model_dir}: its behaviours ({', '.join(old.behaviors[1:])}) are not the new log's "
            f"({', '.join(data.behaviors[1:])}); a warm start needs the same behaviours"
        )
    return {"weights": model.state_dict(), "config": config, "item_ids": old.items[ITEM_ID].to_list()}


def model_config_for(
    data: PreparedDataset, model_section: Mapping[str, Any], *, text_dim: int = 0, private: bool = False
) -> Any:
    """The ModelConfig ``train`` builds for ``data``: the data's sizes and the defaults that depend on the
    log, then ``[model]`` (``model_section``) on top."""
    from nextaction.model import ModelConfig

    categorical = tuple(model_section.get("categorical", ()))
    return build(
        ModelConfig,
        {
            "n_items": data.n_items,
            "n_behaviors": len(data.behaviors),
            "text_dim": text_dim,
            "fusion": "id" if not text_dim else "id+text",
            # behaviour probabilities are the point of a multi-behaviour log; single-behaviour logs
            # skip the head unless asked (it would only predict "interacts"). Private models too: the
            # head reads item statistics counted over every user (privacy.dp.check_private).
            "behavior_head": len(data.behaviors) > 2 and not private,
            # repeats are served there (seen items stay candidates): score them as such
            "repeat_score": len(data.behaviors) > 2,
            # a log without a clock has position steps for gaps: nothing to learn from them
            "time_gaps": data.clock != CLOCK_POSITIONS,
            **model_section,
            **_categories(data, categorical),
        },
        where="[model]",
    )


def _categories(data: PreparedDataset, columns: tuple[str, ...]) -> dict[str, Any]:
    """model.categorical as a tuple with each column's vocabulary size (from the item table)."""
    if not columns:
        return {}
    from nextaction.data.vocab import category_codes

    _, sizes = category_codes(data.items, columns)
    return {"categorical": columns, "category_sizes": sizes}


def training_data(
    source: str | Path,
    data_dir: Path,
    *,
    sections: dict[str, dict[str, Any]],
    format: str | None,
    mapping: Mapping[str, str | None] | None,
    items: str | Path | None,
    resume: bool,
    holdout_items: float | None,
    seed: int,
    log: Log,
) -> PreparedDataset:
    """The dataset to train on, prepared (or copied) into ``data_dir`` — the model directory's data/."""
    if resume and is_prepared_dir(data_dir):
        data = PreparedDataset.load(data_dir)
    elif is_prepared_dir(source):
        if sections["prepare"]:
            raise InputError("[prepare] settings apply to raw events, but the input is a prepared dataset")
        if items is not None:
            raise InputError(
                "--items is joined when events are prepared; pass it to `nextaction prepare` (or train on "
                "the raw events), the prepared dataset's item table is used as it is"
            )
        data = PreparedDataset.load(source)
        if Path(source).resolve() != data_dir.resolve():
            shutil.rmtree(data_dir, ignore_errors=True)
            data.save(data_dir)
    else:
        from nextaction.data.prepare_config import PrepareConfig

        log(f"preparing {source} …")
        prep_cfg = PrepareConfig.from_dict(sections["prepare"])
        prepared = prepare_source(source, format=format, mapping=mapping, items=items, config=prep_cfg)
        data = prepared.dataset
        data.save(data_dir, rejects=prepared.rejects)
        rows = data.report.get("rows", {})
        log(
            f"prepared {rows.get('kept', '?')} events of {data.n_users} users and {data.n_items} items "
            f"({rows.get('rejected', 0)} rejected, see {data_dir / 'rejects.csv'})"
        )
    if holdout_items is not None and "holdout_items" not in data.report:
        from nextaction.text.items import hold_out_items

        data = hold_out_items(data, fraction=holdout_items, seed=seed)
        data.save(data_dir)
        data = PreparedDataset.load(data_dir)
        h = data.report["holdout_items"]
        log(f"held out {h['items']} items ({h['train_events_removed']} training events removed)")
    return data


def new_item_offset(
    model: Any, data: PreparedDataset, train_cfg: Any, *, exclude_seen: bool
) -> dict[str, Any] | None:
    """Fit the new items' score offset on the users validated during training (see
    text.cold.fit_new_item_offset); None for models without item text. With held-out items, users whose
    validation target is one of the held-out items the offset is tested on are left out: the offset is
    chosen on the other half (``cold_fit``) alone."""
    from nextaction.batches import select_users
    from nextaction.evaluation.ranking import eval_examples
    from nextaction.text.cold import fit_new_item_offset
    from nextaction.training.loop import validation_users

    validated, _ = validation_users(data, train_cfg)
    if COLD in data.items.columns:
        tested = data.items.filter(pl.col(COLD) & ~pl.col(COLD_FIT))[ITEM_IDX].to_numpy()
        ex = eval_examples(data.seqs, split=VALID).of_users(validated)
        validated = ex.user_idx[~np.isin(ex.target, tested)]
    seqs = data.seqs if validated is None else select_users(data.seqs, validated)
    return fit_new_item_offset(model, seqs, exclude_seen=exclude_seen, tolerance=train_cfg.new_item_tolerance)


def calibrate_model(model: Any, data: PreparedDataset, train_cfg: Any) -> dict[str, Any]:
    """The behaviour stage fitted on the valid window of the users whose validation events the model did
    not learn: ``behavior_ranker`` (behavior.ranker.BehaviorRanker as a dict) and ``calibration`` (Platt
    scaling + max-F1 thresholds of its scores); both None without a head or without a valid window. And
    ``propensity`` (behavior.propensity.PropensityModel as a dict: P(the user does b at all within a
    horizon), one stage per horizon), fitted on temporal splits with a head; None otherwise."""
    from nextaction.behavior.calibration import calibrate
    from nextaction.behavior.evaluation import eval_setup
    from nextaction.behavior.propensity import fit_propensity
    from nextaction.behavior.ranker import ModelBehaviorScorer
    from nextaction.training.loop import held_out_validation_users

    none: dict[str, Any] = {"behavior_ranker": None, "calibration": None, "propensity": None}
    if model.behavior is None:
        return none
    users = held_out_validation_users(data, train_cfg)
    prop = fit_propensity(model, data, users=users)
    user_stage: dict[str, Any] = {"propensity": None if prop is None else prop.to_dict()}
    setup = eval_setup(data, valid_users=users)
    if len(setup.valid) == 0:
        return {**none, **user_stage}
    scorer = ModelBehaviorScorer(model).fit(data, train=setup.valid)
    assert scorer.ranker is not None
    scores = scorer.behavior_scores(data.seqs, setup.valid)
    return {
        "behavior_ranker": scorer.ranker.to_dict(),
        "calibration": calibrate(scores, setup.valid.labels, data.behaviors),
        **user_stage,
    }


def evaluate_behaviors(
    model: Any,
    data: PreparedDataset,
    train_cfg: Any,
    *,
    ranker: dict[str, Any] | None = None,
    baselines: bool = False,
    windows: int = 0,
) -> dict[str, Any]:
    """The behaviour-prediction protocol of behavior/evaluation.py for the model (and the behaviour baselines).

    ranker: the model's saved behaviour ranker (config ``behavior_ranker``); without one it is fitted on
    the valid window here, as :func:`calibrate_model` does after training. ``windows`` > 0 adds
    ``windows``: the rolling-origin evaluation over that many consecutive test windows (behavior/windows.py).
    """
    from nextaction.behavior.evaluation import behavior_protocol, eval_setup, evaluate_behavior_scorer
    from nextaction.behavior.ranker import BehaviorRanker, ModelBehaviorScorer
    from nextaction.training.loop import held_out_validation_users, trained_view

    setup = eval_setup(data, valid_users=held_out_validation_users(data, train_cfg))
    scorer = ModelBehaviorScorer(model, ranker=BehaviorRanker.from_dict(ranker))
    result: dict[str, Any] = evaluate_behavior_scorer(scorer, data, setup)
    result["protocol"] = behavior_protocol(data, setup)
    if baselines:
        from nextaction.behavior.baselines import default_behavior_baselines

        view = trained_view(data, train_cfg)
        result["baselines"] = {
            b.name: evaluate_behavior_scorer(b, data, setup, fit_data=view)
            for b in default_behavior_baselines()
        }
    if windows:
        from nextaction.behavior.baselines import default_behavior_baselines
        from nextaction.behavior.windows import evaluate_windows

        scorers: dict[str, Any] = {
            "nextaction": ModelBehaviorScorer(model, ranker=BehaviorRanker.from_dict(ranker))
        }
        fit_on: dict[str, PreparedDataset] = {}
        if baselines:
            view = trained_view(data, train_cfg)
            for b in default_behavior_baselines():
                scorers[b.name], fit_on[b.name] = b, view
        result["windows"] = evaluate_windows(scorers, data, setup, k=windows, fit_data=fit_on)
    return result


def evaluate_dir(
    model_dir: str | Path,
    *,
    split: str = "test",
    baselines: bool = False,
    exclude_seen: bool | None = None,
    max_users: int = 0,
    windows: int = 0,
    targets: str | Path | None = None,
    routing: str | None = None,
    owner_behavior: str | None = None,
) -> dict[str, Any]:
    """Full-ranking evaluation of a model directory (and optionally the baselines, with the same code).

    ``targets`` (a ``user_id,item_id`` CSV of held-out items) adds ``leave_one_out``: each listed user's item
    ranked from their full history over the whole catalogue and among 99 sampled negatives (see
    behavior/leave_one_out.py), the baselines too with ``baselines``; ``split`` and ``max_users`` do not
    apply to it.

    ``routing`` (a behaviour, e.g. "answer"): also question routing, users ranked per test-window item
    (routing.py), with ``owner_behavior`` marking the item's owner (e.g. "ask").

    ``windows`` > 0 (models with a behaviour head): also the rolling-origin behaviour evaluation over that
    many consecutive test windows, under ``behaviors.windows``.

    Models with a behaviour head add ``behaviors``: per-behaviour probability metrics on the test window
    and next-behaviour full ranking (see behavior/evaluation.py). Models with a propensity stage (temporal
    splits) add ``propensity``: the user-level P(does b within the horizon) on the test window against RFM
    logistic regression and gradient boosting (see behavior/propensity.py).
    """
    import time

    from nextaction.evaluation.metrics import coverage, ranking_metrics
    from nextaction.evaluation.ranking import eval_examples, evaluate_scorer, protocol
    from nextaction.scoring import evaluate_model
    from nextaction.training.checkpoint import load_model
    from nextaction.training.loop import held_out_validation_users, resolve_outcome_weight, trained_view
    from nextaction.training.state import TrainConfig

    if split not in ("test", "valid"):
        raise InputError(f"--split must be test or valid, got '{split}'")
    code = TEST if split == "test" else VALID
    model, config = load_model(model_dir)
    if windows and (model.behavior is None or split != "test"):
        raise InputError(
            f"--windows measures behaviour prediction on the test period: {model_dir} needs a behaviour head "
            "(a multi-behaviour log) and --split test"
        )
    data = PreparedDataset.load(Path(model_dir) / "data")
    loo_targets = None
    if targets is not None:  # read first: a bad file fails before minutes of evaluation
        from nextaction.behavior.leave_one_out import read_targets

        loo_targets = read_targets(targets, data)
    train_cfg = build(
        TrainConfig, config.get("train", {}), where=f"{Path(model_dir) / 'config.json'} [train]"
    )
    excl = bool(config.get("exclude_seen", True)) if exclude_seen is None else exclude_seen
    # validation: only the users whose validation events the model did not learn (the rest is in-sample)
    users = held_out_validation_users(data, train_cfg) if code == VALID else None
    t0 = time.perf_counter()
    if max_users < 0:
        raise InputError(f"--users must be positive (0 = all), got {max_users}")
    ranks, tops = evaluate_model(
        model, data.seqs, split=code, exclude_seen=excl, max_users=max_users, users=users
    )
    seconds = time.perf_counter() - t0
    n_all = len(eval_examples(data.seqs, split=code).of_users(users))
    sampled = max_users and max_users < n_all
    metrics = ranking_metrics(ranks)
    metrics["coverage@10"] = coverage(tops[:, :10], data.n_items)
    seed = config.get("train", {}).get("seed")
    from nextaction.text.cold import new_items_by_time, scored_as
    from nextaction.text.items import cold_warm

    split_metrics = None if sampled else cold_warm(data, code, ranks, users=users)
    if split_metrics is not None and model.text_proj is not None:
        # what the fitted offset buys on the tested cold items, and costs on the warm ones
        ranks0 = ranks
        if model.has_new_item_offset():
            with scored_as(model, offset=0.0):
                ranks0, _ = evaluate_model(
                    model, data.seqs, split=code, exclude_seen=excl, k_top=0, users=users
                )
        at0 = cold_warm(data, code, ranks0, users=users) or {}
        split_metrics["at_offset_0"] = {k: at0[k] for k in (COLD, "warm")}
    new_by_time = None
    if not sampled and model.text_proj is not None and data.report.get("split", {}).get("kind") == "temporal":
        new_by_time = new_items_by_time(model, data, code, ranks, exclude_seen=excl, users=users)
    result: dict[str, Any] = {
        "metrics": metrics,
        "protocol": protocol(
            data,
            split=code,
            exclude_seen=excl,
            target_behavior=None,
            n_users=len(ranks),
            seed=seed,
            sampled_from=n_all if sampled else None,
        ),
        "seconds": round(seconds, 3),
    }
    learned = config.get("learned_valid_events")
    if learned:
        sample = (
            f"train.holdout_users = {train_cfg.holdout_users}, never trained on"
            if train_cfg.holdout_users
            else f"train.valid_holdout = {train_cfg.valid_holdout}"
        )
        result["protocol"]["trained_on"] = (
            f"train events + the validation events of {learned} users outside the validation sample "
            f"({sample}); test events never"
        )
    if privacy := config.get("privacy"):
        result["privacy"] = privacy
        result["protocol"]["trained_on"] = (
            f"user-level DP-SGD (ε = {privacy['epsilon']:.3g}, δ = {privacy['delta']:.3g}) on "
            f"{privacy['training_users']} users; {privacy['held_out_users']} held-out users never trained on "
            "(the checkpoint is chosen on them); test events never"
        )
    if warm := config.get("warm_start"):
        result["protocol"]["warm_start"] = (
            f"warm start from {warm['from']} ({warm['items_kept']} items kept, {warm['items_new']} new, "
            f"{warm['items_dropped']} dropped), then {warm['epochs']} epochs on this log"
        )
    if fed := config.get("federated"):
        result["protocol"]["trained_on"] = (
            f"federated ({fed['strategy']}): {fed['rounds_run']} rounds over clients' TRAIN events; "
            "this directory's data/ was read for the catalogue and this evaluation only"
        )
    if users is not None:
        result["protocol"]["validation_users"] = (
            f"the {len(users)} validated users only: the other users' validation events were trained on"
        )
    if split_metrics is not None:
        # "cold" and "warm": targets held out of training vs the rest, with the holdout that made them
        result.update(split_metrics)
    if new_by_time is not None:
        result["new_by_time"] = new_by_time
    if baselines:
        view = trained_view(data, train_cfg)  # baselines fit on exactly the model's training events
        result["baselines"] = {
            b.name: evaluate_scorer(
                b.fit(view), data, split=code, exclude_seen=excl, max_users=max_users, users=users
            )["metrics"]
            for b in default_baselines(data)
        }
    if loo_targets is not None:
        from nextaction.behavior.leave_one_out import evaluate_leave_one_out
        from nextaction.behavior.ranker import BehaviorRanker

        result["leave_one_out"] = evaluate_leave_one_out(
            model,
            data,
            loo_targets,
            fit_data=trained_view(data, train_cfg),  # baselines fit on exactly the model's training events
            ranker=BehaviorRanker.from_dict(config.get("behavior_ranker")),
            baselines=baselines,
        )
    if model.behavior is not None and split == "test" and resolve_outcome_weight(train_cfg, data) > 0:
        # the next event's behaviour given its item (knowledge tracing's "correct on this exercise?")
        from nextaction.behavior.outcome import evaluate_outcomes

        result["outcome"] = evaluate_outcomes(
            model, data, fit_data=trained_view(data, train_cfg), baselines=baselines
        )
    if model.behavior is not None and split == "test" and data.clock != CLOCK_POSITIONS:
        result["behaviors"] = evaluate_behaviors(
            model, data, train_cfg, ranker=config.get("behavior_ranker"), baselines=baselines, windows=windows
        )
    if routing is not None:
        # who will do `routing` on each test-window item (routing.py), with its baselines
        from nextaction.routing import TrainedModel, evaluate_routing

        result["routing"] = evaluate_routing(
            TrainedModel.from_config(model, config, data),  # the model and data loaded above, not again
            behavior=routing,
            owner_behavior=owner_behavior,
            baselines=baselines,
        )
    if config.get("propensity") and split == "test":
        # P(does b at all within the horizon) on the test window, against RFM logreg / gbm (always run)
        from nextaction.behavior.propensity import PropensityModel, evaluate_propensity

        prop = PropensityModel.from_dict(config["propensity"])
        assert prop is not None
        result["propensity"] = evaluate_propensity(
            model, data, prop, users=held_out_validation_users(data, train_cfg), max_users=max_users
        )
    return result


def default_baselines(data: PreparedDataset) -> list[Any]:
    """The reference scorers for a dataset: popularity, recency, transitions (+ repeats if multi-behaviour)."""
    from nextaction.evaluation.baselines import ItemToItem, MostPopular, RecentlyPopular, RepeatRecent

    out: list[Any] = [MostPopular(), RecentlyPopular(), ItemToItem()]
    if len(data.behaviors) > 2:
        out.append(RepeatRecent())
    return out


def plot_metrics(model_dir: Path) -> Path | None:
    """training.png: loss and validation NDCG@10 per epoch, from metrics.jsonl."""
    path = model_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    epochs = np.array([r["epoch"] for r in rows])
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [r["loss"] for r in rows], color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    valid = [(r["epoch"], r["valid_NDCG@10"]) for r in rows if "valid_NDCG@10" in r]
    if valid:
        ax2 = ax1.twinx()
        ax2.plot(*zip(*valid, strict=True), color="tab:orange", label="valid NDCG@10")
        ax2.set_ylabel("valid NDCG@10 (full ranking)", color="tab:orange")
    ax1.set_title("nextaction training")
    fig.tight_layout()
    out = model_dir / "training.png"
    tmp = model_dir / ".training.png.tmp"
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
