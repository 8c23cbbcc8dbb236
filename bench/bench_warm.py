"""Benchmark of warm-start retraining (`make bench-warm`): BENCHMARKS.md "Warm start".

MovieLens-100k by time. T = the time of the 80th percentile event:
- the old model: `nextaction train` on the log up to T (its own temporal split: 80% train / 10% / 10%);
- the grown log: every event, split at T (validation: T to the 90th percentile event; test: after it), so
  both new models learn every event up to T and are tested on the same last 10% of events;
- full retrain: `nextaction train` on the grown log from scratch (the defaults);
- warm start: `nextaction train … --init-from OLD` on the grown log (the default short schedule).
Each is a fresh child process; wall time includes preparing the log.

    python bench/bench_warm.py [--reuse] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
from bench_model import BIN, SHARED, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "warm" / "ml100k"
ML = SHARED / "data" / "movielens-100k"
SECTION = "## Warm start"


def rel(cmd: list[str]) -> str:
    return " ".join(["nextaction", *cmd[1:]]).replace(str(ROOT.parent), "..").replace(str(ROOT) + "/", "")


def cutoffs() -> tuple[int, int]:
    ts = np.loadtxt(ML / "u.data", dtype=np.int64, usecols=3)
    t80, t90 = np.quantile(ts, [0.8, 0.9], method="lower")
    return int(t80), int(t90)


def old_log(t80: int) -> Path:
    """ML-100k with the events up to T only (u.item and u.genre beside it, as in the original folder)."""
    d = CACHE / "log_to_T"
    d.mkdir(parents=True, exist_ok=True)
    lines = (ML / "u.data").read_text().splitlines()
    kept = [x for x in lines if int(x.split("\t")[3]) <= t80]
    (d / "u.data").write_text("\n".join(kept) + "\n")
    for name in ("u.item", "u.genre"):
        shutil.copy(ML / name, d / name)
    return d


def train(name: str, args: list[str], *, reuse: bool) -> dict:
    out = CACHE / name
    meta = out / "bench.json"
    if reuse and meta.exists():
        return json.loads(meta.read_text())
    cmd = [str(BIN), "train", *args, "--out", str(out), "--json"]
    print(f"[{name}] {rel(cmd)}", flush=True)
    stdout, wall, rss = run(cmd)
    config = json.loads((out / "config.json").read_text())
    result = json.loads(stdout)
    record = {
        "metrics": result["metrics"],
        "protocol": result["protocol"],
        "wall_s": round(wall, 1),
        "train_s": config["train_seconds"],
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "warm_start": config.get("warm_start"),
        "peak_rss_mib": rss,
        "command": rel(cmd),
    }
    meta.write_text(json.dumps(record, indent=2))
    return record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    t80, t90 = cutoffs()
    temporal = ["--set", 'prepare.split.kind="temporal"']
    old = train("old", [str(old_log(t80)), "--format", "movielens", *temporal], reuse=args.reuse)
    grown = [
        str(ML),
        "--format",
        "movielens",
        *temporal,
        "--set",
        f"prepare.split.valid_cutoff={t80 * 1000}",
        "--set",
        f"prepare.split.test_cutoff={t90 * 1000}",
    ]
    full = train("full", grown, reuse=args.reuse)
    warm = train("warm", [*grown, "--init-from", str(CACHE / "old")], reuse=args.reuse)
    f, w = full["metrics"], warm["metrics"]
    ratio, cost = w["NDCG@10"] / f["NDCG@10"], warm["wall_s"] / full["wall_s"]
    ws = warm["warm_start"]
    text = "\n".join(
        [
            SECTION,
            "",
            "MovieLens-100k by time; T = the 80th-percentile event. Old model: the log up to T (its own temporal "
            "split). Grown log: every event; both new models learn every event up to T, choose their epoch on "
            "T → the 90th-percentile event, and are tested on the events after it (full ranking over the catalogue, "
            f"next item; {full['protocol'].get('users_evaluated', '?')} test users). The warm start "
            f"kept {ws['items_kept']} item rows, added {ws['items_new']} new items and dropped {ws['items_dropped']}.",
            "",
            "| model | NDCG@10 | HR@10 | epochs (best) | training s | wall s (prepare + train + evaluate) |",
            "|---|---|---|---|---|---|",
            f"| old model (log to T) | {old['metrics']['NDCG@10']:.4f}* | {old['metrics']['HR@10']:.4f}* | "
            f"{old['epochs']} ({old['best_epoch']}) | {old['train_s']:.0f} | {old['wall_s']:.0f} |",
            f"| full retrain | {f['NDCG@10']:.4f} | {f['HR@10']:.4f} | {full['epochs']} ({full['best_epoch']}) | "
            f"{full['train_s']:.0f} | {full['wall_s']:.0f} |",
            f"| warm start from the old model | {w['NDCG@10']:.4f} | {w['HR@10']:.4f} | {warm['epochs']} "
            f"({warm['best_epoch']}) | {warm['train_s']:.0f} | {warm['wall_s']:.0f} |",
            "",
            "\\* the old model's own test window (its last 10% of events up to T), not comparable with the rows below.",
            "",
            f"Warm start: {ratio:.1%} of the full retrain's NDCG@10 at {cost:.0%} of its wall time (target: within 2% "
            f"at ≤ 25%: {'met' if ratio >= 0.98 and cost <= 0.25 else 'missed'}). Commands: `{full['command']}`; "
            f"`{warm['command']}`. Date: {date.today().isoformat()}. Machine: {machine()}. RetailRocket and "
            "IJCAI-15 are not measured yet.",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
