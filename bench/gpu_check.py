"""One prepared GPU check (issue 23): every CUDA path of nextaction, run once, measured, one JSON out.

On the lent GPU machine (its own python3 holds a CUDA build of PyTorch; nothing can be fetched there, so
the packages it lacks travel as wheels, see ``make gpu-wheels``) this script, on Beauty with defaults:

1. trains to the end on ``cuda`` (bf16 autocast) and records the training time and test NDCG@10;
2. evaluates with full ranking over every user (``nextaction evaluate``), three times: median seconds;
3. loads a ``Predictor`` on ``cuda``: recommend / predict / explain / similar, each timed;
4. serves the model for 10 s (``nextaction serve``) under a small closed-loop load: requests, errors;
5. trains the same model under ``torchrun --standalone --nproc-per-node 1`` (NCCL): same command;
6. optionally a size sweep (``--sweep``): dim 64/128/256 × layers 2/4, test NDCG@10 and events/s.

It writes ``OUT/gpu_check.json`` and exits non-zero on any failure. ``--dry-run`` runs every step on the
CPU with a tiny schedule (CUDA_VISIBLE_DEVICES= and train.epochs=1 on a slice of the log), so device
minutes go only to the GPU part: ``python bench/gpu_check.py --dry-run --out /tmp/gpu_dry``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEAUTY = ROOT.parent / "shared" / "data" / "amazon-beauty-s3rec" / "Beauty.txt"


def cli(*args: str) -> list[str]:
    """The nextaction CLI under this interpreter (no console script needed where packages are carried)."""
    return [sys.executable, "-m", "nextaction", *args]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc.stdout, wall


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(
            device=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    info["python"] = platform.python_version()
    return info


def train(source: Path, out: Path, sets: list[str], env: dict[str, str], *, torchrun: bool = False) -> dict:
    args = ["train", str(source), "--format", "sequences", "--out", str(out), "--json"]
    for s in sets:
        args += ["--set", s]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        cmd += ["-m", "nextaction", *args]
    else:
        cmd = cli(*args)
    stdout, wall = run(cmd, env, timeout=1800)
    result = json.loads(stdout)
    config = json.loads((out / "config.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "NDCG@10": result["metrics"]["NDCG@10"],
        "HR@10": result["metrics"]["HR@10"],
        "train_s": config["train_seconds"],
        "wall_s": round(wall, 1),
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "precision": config["precision"],
        "world_size": config.get("world_size"),
        "events_per_s": statistics.median(e["events_per_s"] for e in epochs),
        "epoch_s": statistics.median(e["epoch_s"] for e in epochs),
    }


def evaluate(model: Path, env: dict[str, str], runs: int) -> dict:
    seconds = []
    for _ in range(runs):
        stdout, _ = run(cli("evaluate", str(model), "--json"), env, timeout=600)
        seconds.append(json.loads(stdout)["seconds"])
    return {"eval_s_median": statistics.median(seconds), "eval_s_runs": seconds}


def predictor_calls(model: Path, device: str) -> dict:
    import torch

    from nextaction import Predictor

    p = Predictor.load(model, device=device)
    assert next(p.model.parameters()).device.type == torch.device(device).type
    users = p.data.users["user_id"].to_list()[:50]
    out: dict[str, Any] = {}
    timings: dict[str, list[float]] = {"recommend": [], "score": [], "explain": [], "similar": []}
    for u in users:
        history = p.history(u, split="test")
        t = time.perf_counter()
        recs = p.recommend(history, k=10)
        timings["recommend"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.score(history, [recs[0][0], recs[-1][0]])
        timings["score"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.explain(history, recs[0][0], top=3)
        timings["explain"].append(time.perf_counter() - t)
        t = time.perf_counter()
        p.similar(recs[0][0], k=10)
        timings["similar"].append(time.perf_counter() - t)
    for name, values in timings.items():
        out[f"{name}_ms_median"] = round(1000 * statistics.median(values[5:] or values), 3)
    if p.model.behavior is not None:
        out["predict"] = p.predict(p.history(users[0], split="test"), [recs[0][0]])
    return out


def serve(model: Path, env: dict[str, str], seconds: float, port: int) -> dict:
    import httpx

    store = model.parent / "gpu_check_events.db"
    proc = subprocess.Popen(
        cli("serve", str(model), "--port", str(port), "--store", str(store)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"serve did not start: {proc.stdout.read()[-2000:] if proc.stdout else ''}"
                )
            time.sleep(0.5)
        users = httpx.get(f"{base}/healthz", timeout=5).json()
        counts = {"ok": 0, "errors": 0}
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.time() + seconds

        def client(k: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as c:
                i = 0
                while time.time() < stop:
                    t = time.perf_counter()
                    r = c.get(f"/users/{(k * 97 + i) % 500 + 1}/recommendations?k=10")
                    with lock:
                        latencies.append(time.perf_counter() - t)
                        counts["ok" if r.status_code in (200, 404) else "errors"] += 1
                    i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        latencies.sort()
        return {
            "seconds": seconds,
            "requests": counts["ok"] + counts["errors"],
            "errors": counts["errors"],
            "rps": round((counts["ok"] + counts["errors"]) / seconds, 1),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
            "healthz": {k: users.get(k) for k in ("status", "items")},
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_check")))
    ap.add_argument("--beauty", type=Path, default=DEFAULT_BEAUTY, help="Beauty.txt (sequences format)")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny schedule")
    ap.add_argument("--sweep", action="store_true", help="also dim 64/128/256 × layers 2/4")
    ap.add_argument("--serve-seconds", type=float, default=10.0)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sets: list[str] = []
    source = args.beauty
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        sets = ["train.epochs=1", "model.dim=16", "model.n_layers=1"]
        source = work / "beauty_slice.txt"  # the first 2,000 users: every step in about a minute on a CPU
        source.write_text("".join(args.beauty.read_text().splitlines(keepends=True)[:2000]))
    device = "cpu" if args.dry_run else "cuda"
    report: dict[str, Any] = {"dry_run": args.dry_run, "device": device_info(), "steps": {}, "failures": []}

    def step(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        try:
            value = fn()
            report["steps"][name] = {
                "ok": True,
                "seconds": round(time.perf_counter() - t, 1),
                "result": value,
            }
            return value
        except Exception as exc:  # a failed step is recorded and the others still run
            report["steps"][name] = {"ok": False, "error": repr(exc), "trace": traceback.format_exc()[-4000:]}
            report["failures"].append(name)
            return None
        finally:
            (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
            print(f"[{name}] {'ok' if name not in report['failures'] else 'FAILED'}", flush=True)

    model = work / "beauty"
    step("train", lambda: train(source, model, sets, env))
    step("evaluate", lambda: evaluate(model, env, runs=1 if args.dry_run else 3))
    step("predictor", lambda: predictor_calls(model, device))
    step("serve", lambda: serve(model, env, args.serve_seconds, port=8811))
    step("torchrun", lambda: train(source, work / "beauty_torchrun", sets, env, torchrun=True))
    if args.sweep:
        for dim in (64, 128, 256):
            for layers in (2, 4):
                extra = [f"model.dim={dim}", f"model.n_layers={layers}"]
                if args.dry_run:
                    extra = ["train.epochs=1", f"model.dim={dim // 4}", f"model.n_layers={layers // 2}"]
                step(
                    f"sweep_d{dim}_l{layers}",
                    lambda e=extra, d=dim, n=layers: train(source, work / f"s{d}_{n}", e, env),
                )
    shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {k: v.get("result", v.get("error")) for k, v in report["steps"].items()}, indent=1, default=str
        )
    )
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
