"""The Flower apps: the ClientApp every SuperNode runs on its own log, and the ServerApp that runs FedAvg and
writes the global model as a normal model directory.

Flower 1.42's message API. A SuperNode starts a ``flwr-clientapp`` process for each message it receives,
so a client reloads its log and the model each round: that start-up is part of the measured round time.

What travels: the server sends the global weights (all of them, every round) and a config record (the
model and training config as JSON, the round, the schedule); a client answers with its new weights and a
few numbers (targets trained on, training loss, seconds; for validation: users ranked, NDCG@10, HR@10).
Events, user ids and per-user results never leave a client.

Run config (the app's ``[tool.flwr.app.config]``, written by runner.py): ``data`` (the server's prepared
dataset: the item catalogue and behaviours it builds the model for, and the population the final model is
evaluated on, see README "Federated"), ``out`` (the model directory) and ``sections`` (JSON of the
``[model]``, ``[train]`` and ``[federated]`` sections). Node config (``flower-supernode --node-config``):
``data`` (the client's own prepared log) and ``threads``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy

from nextaction.config import build
from nextaction.data.dataset import PreparedDataset
from nextaction.errors import InputError
from nextaction.federated.local import FederatedConfig, local_train, local_validate
from nextaction.model import ModelConfig, NextActionModel
from nextaction.scoring import default_exclude_seen
from nextaction.training.state import TrainConfig

SECTIONS = ("model", "train", "federated")


def model_config(data: PreparedDataset, model_section: dict[str, Any]) -> ModelConfig:
    """The global model's config for the server's catalogue: next-item models with ID item embeddings.

    Refused (one-line errors): item text (every client would encode the catalogue; not built yet) and the
    behaviour head (its item statistics count every user's events, which no party holds).
    """
    fusion = model_section.get("fusion", "id")
    if fusion != "id":
        raise InputError(f"federated training supports model.fusion=id only, got '{fusion}'")
    if model_section.get("behavior_head"):
        raise InputError(
            "federated training does not train the behaviour head (its item statistics count every "
            "user's events, which no single party holds); remove model.behavior_head"
        )
    from nextaction.workflow import model_config_for

    return model_config_for(data, {**model_section, "behavior_head": False})


# --- the client ------------------------------------------------------------------------------------------


def _client_state(msg: Message, context: Context) -> tuple[NextActionModel, PreparedDataset, TrainConfig]:
    config = msg.content["config"]
    node = context.node_config
    if "data" not in node:
        raise ValueError(
            "the SuperNode has no node config 'data' (its prepared log): start it with "
            "`nextaction federated client DATA`"
        )
    data = PreparedDataset.load(str(node["data"]))
    # the split already left the held-out users out of every client: a client holds out nobody itself
    cfg = replace(build(TrainConfig, json.loads(str(config["train"])), where="[train]"), holdout_users=0)
    threads = int(node.get("threads", 0))
    if threads:
        cfg = replace(cfg, threads=threads)
        torch.set_num_threads(threads)
    model_cfg = build(ModelConfig, json.loads(str(config["model"])), where="[model]")
    if data.n_items != model_cfg.n_items or len(data.behaviors) != model_cfg.n_behaviors:
        raise ValueError(
            f"{node['data']}: its catalogue ({data.n_items} items, {len(data.behaviors) - 1} behaviours) is "
            f"not the server's ({model_cfg.n_items} items): every client needs the server's item vocabulary"
        )
    model = NextActionModel(model_cfg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model, data, cfg


def client_train(msg: Message, context: Context) -> Message:
    """One round on this client: the global weights in, a few local epochs, the new weights out."""
    t0 = time.perf_counter()
    model, data, cfg = _client_state(msg, context)
    config = msg.content["config"]
    metrics = local_train(
        model,
        data,
        cfg,
        server_round=int(config["server-round"]),
        rounds=int(config["rounds"]),
        local_epochs=int(config["local-epochs"]),
    )
    metrics["client-s"] = round(time.perf_counter() - t0, 3)
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


def client_evaluate(msg: Message, context: Context) -> Message:
    """Validation metrics of the global weights on this client's users."""
    model, data, cfg = _client_state(msg, context)
    content = RecordDict({"metrics": MetricRecord(local_validate(model, data, cfg))})
    return Message(content=content, reply_to=msg)


client_app = ClientApp()
client_app.train()(client_train)
client_app.evaluate()(client_evaluate)
# with federated.dp_noise > 0: Flower's client-side clipping of the update before it is sent
client_app_dp = ClientApp(mods=[fixedclipping_mod])
client_app_dp.train()(client_train)
client_app_dp.evaluate()(client_evaluate)


# --- the server ------------------------------------------------------------------------------------------


def _record_bytes(record: ArrayRecord) -> int:
    return int(record.count_bytes())


class TrackedStrategy(Strategy):
    """Wraps a strategy: validates every ``eval_every`` rounds and after the last, keeps the weights of the
    round with the best federated validation NDCG@10, and writes a metrics.jsonl line per round (wall time
    of its phases, bytes each way, clients, aggregated metrics)."""

    def __init__(self, inner: Strategy, *, rounds: int, eval_every: int, metrics_path: Path) -> None:
        self.inner = inner
        self.rounds = rounds
        self.eval_every = eval_every
        self.metrics_path = metrics_path
        self.best_arrays: ArrayRecord | None = None
        self.best_round = 0
        self.best_score = -1.0
        self.records: list[dict[str, Any]] = []
        self._evaluated: ArrayRecord | None = None
        self._t0 = time.perf_counter()
        self._phase = 0.0
        self._record: dict[str, Any] = {}

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._phase = time.perf_counter()
        self._record = {
            "round": server_round,
            "clients": len(messages),
            "bytes_down": _record_bytes(arrays) * len(messages),
        }
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        self._record["bytes_up"] = sum(
            _record_bytes(r.content["arrays"]) for r in ok if "arrays" in r.content
        )
        self._record["failures"] = len(replies) - len(ok)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self._record["train_round_s"] = round(time.perf_counter() - self._phase, 3)
        if metrics is not None:
            self._record["train_loss"] = float(metrics.get("train-loss", float("nan")))
            self._record["client_train_s"] = float(metrics.get("train-s", float("nan")))
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._phase = time.perf_counter()
        if server_round % self.eval_every and server_round != self.rounds:
            self._evaluated = None
            return []
        self._evaluated = arrays
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        metrics = self.inner.aggregate_evaluate(server_round, replies) if replies else None
        if metrics is not None and self._evaluated is not None:
            score = float(metrics["valid-ndcg10"])
            self._record.update(
                {
                    "valid_NDCG@10": score,
                    "valid_HR@10": float(metrics["valid-hr10"]),
                    "eval_round_s": round(time.perf_counter() - self._phase, 3),
                }
            )
            if score > self.best_score:
                self.best_score, self.best_round = score, server_round
                self.best_arrays = self._evaluated
        self._record["elapsed_s"] = round(time.perf_counter() - self._t0, 2)
        self.records.append(self._record)
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        tmp.replace(self.metrics_path)
        return metrics


def run_server(grid: Grid, run_config: dict[str, Any]) -> dict[str, Any]:
    """FedAvg over the connected clients; write the global model directory ``out`` and its test result."""
    from nextaction.training.checkpoint import save_model
    from nextaction.workflow import evaluate_dir

    sections = json.loads(str(run_config["sections"]))
    cfg = build(TrainConfig, sections.get("train", {}), where="[train]")
    fed = build(FederatedConfig, sections.get("federated", {}), where="[federated]")
    data_dir = Path(str(run_config["data"]))
    out = Path(str(run_config["out"]))
    data = PreparedDataset.load(data_dir)
    model_cfg = model_config(data, sections.get("model", {}))
    torch.manual_seed(cfg.seed)
    model = NextActionModel(model_cfg)
    out.mkdir(parents=True, exist_ok=True)
    inner: Strategy = FedAvg(
        fraction_train=fed.fraction,
        fraction_evaluate=fed.fraction,
        min_train_nodes=fed.min_clients,
        min_evaluate_nodes=fed.min_clients,
        min_available_nodes=fed.min_clients,
    )
    if fed.dp_noise:
        sampled = max(fed.min_clients, int(fed.fraction * fed.min_clients))
        inner = DifferentialPrivacyClientSideFixedClipping(
            inner, noise_multiplier=fed.dp_noise, clipping_norm=fed.dp_clip, num_sampled_clients=sampled
        )
    strategy = TrackedStrategy(
        inner, rounds=fed.rounds, eval_every=fed.eval_every, metrics_path=out / "metrics.jsonl"
    )
    config = ConfigRecord(
        {
            "model": json.dumps(asdict(model_cfg)),
            "train": json.dumps(asdict(cfg)),
            "rounds": fed.rounds,
            "local-epochs": fed.local_epochs,
        }
    )
    t0 = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=fed.rounds,
        timeout=fed.round_timeout_s,
        train_config=config,
        evaluate_config=ConfigRecord(dict(config)),
    )
    seconds = time.perf_counter() - t0
    final = strategy.best_arrays or result.arrays
    model.load_state_dict(final.to_torch_state_dict())
    model.eval()
    # the model directory's data: the server's dataset (catalogue, and who `evaluate` and `recommend` read)
    if (out / "data").resolve() != data_dir.resolve():
        shutil.rmtree(out / "data", ignore_errors=True)
        shutil.copytree(data_dir, out / "data")
    records = strategy.records
    report = {
        "engine": "flower deployment engine (SuperLink + SuperNodes)",
        "strategy": "FedAvg" if not fed.dp_noise else "FedAvg + client-side fixed clipping DP",
        "config": asdict(fed),
        "clients_per_round": [r["clients"] for r in records],
        "rounds_run": len(records),
        "best_round": strategy.best_round,
        "best_valid_NDCG@10": strategy.best_score,
        "bytes_per_round_median": float(np.median([r["bytes_down"] + r.get("bytes_up", 0) for r in records])),
        "round_s_median": float(
            np.median([r["train_round_s"] + r.get("eval_round_s", 0.0) for r in records])
        ),
        "seconds": round(seconds, 1),
        "outside": "the server's dataset (--data) is read for the item catalogue and the final evaluation only",
    }
    save_model(
        out,
        model,
        cfg,
        {
            "exclude_seen": default_exclude_seen(data) if cfg.exclude_seen is None else cfg.exclude_seen,
            "precision": "fp32",
            "best_epoch": strategy.best_round,
            "epochs_run": len(records),
            "train_seconds": round(seconds, 1),
            "learned_valid_events": 0,
            "best_valid_score": strategy.best_score,
            "federated": report,
        },
    )
    test = evaluate_dir(out, split="test", max_users=cfg.valid_users)
    tmp = out / ".eval_test.json.tmp"
    tmp.write_text(json.dumps(test, indent=2))
    tmp.replace(out / "eval_test.json")
    return test


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    run_server(grid, dict(context.run_config))
