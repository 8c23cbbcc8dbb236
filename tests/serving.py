"""Helpers for the service tests: tiny trained models (one with a behaviour head, one from an order-only
``sequences`` log), and a real uvicorn server on a free loopback port in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl

from factories import funnel_dataset, sequences_log
from nextaction.model import ModelConfig
from nextaction.training.checkpoint import save_model
from nextaction.training.loop import fit
from nextaction.training.state import TrainConfig
from nextaction.workflow import train_model

API_KEY = "test-key-123"


def tiny_model(out: Path, *, epochs: int = 3, titles: bool = False) -> Path:
    """A view/cart/buy model (behaviour head) trained for a few seconds on the generated funnel shop;
    ``titles``: its item table has a ``title`` column (item ``i7`` is "Gadget 7")."""
    data = funnel_dataset(n_users=120, n_items=40, length=20, seed=3)
    if titles:
        data.items = data.items.with_columns(
            (pl.lit("Gadget ") + pl.col("item_id").str.slice(1)).alias("title")
        )
    mc = ModelConfig(
        n_items=data.n_items,
        n_behaviors=len(data.behaviors),
        dim=16,
        max_len=20,
        dropout=0.0,
        behavior_head=True,
    )
    tc = TrainConfig(epochs=epochs, batch_size=32, lr=5e-3, warmup_steps=2, precision="fp32", threads=1)
    model, _ = fit(data, mc, tc, out_dir=out)
    save_model(out, model, tc, {"exclude_seen": False})
    data.save(out / "data")
    return out


def sequences_model(root: Path) -> Path:
    """A model trained on an order-only ``sequences`` log (``factories.sequences_log``): its clock is
    "positions". Returns the model directory ``root / "model"``."""
    log = sequences_log(root / "log.txt")
    sets = ["model.dim=16", "model.max_len=8", "train.epochs=2", "train.precision=fp32"]
    train_model(log, root / "model", format="sequences", sets=sets)
    return root / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m nextaction serve`` in a subprocess; stop() kills it (SIGKILL when ``hard``)."""

    def __init__(self, model_dir: Path, store: Path, *, workers: int = 1, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, OMP_NUM_THREADS="1", NEXTACTION_API_KEY=API_KEY)
        cmd = [
            sys.executable, "-m", "nextaction", "serve", str(model_dir),
            "--store", f"sqlite:///{store}", "--port", str(self.port), "--workers", str(workers),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self, *, hard: bool = False) -> None:
        if self.proc.poll() is None:
            if hard:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
