"""Benchmark of the hyperparameter search (`make bench-tune`): BENCHMARKS.md "Tuning".

On MovieLens-100k (leave-one-out, full ranking): `nextaction tune` for 30 minutes with the built-in search
space (TPE, median pruning, validation NDCG@10), then `nextaction train --config best.toml` and, in the same
run, `nextaction train` with the defaults; both evaluated on the test events, which the search never read.

    python bench/bench_tune.py [--minutes 30] [--reuse] [--no-write]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from datetime import date
from pathlib import Path

from bench_model import BIN, SHARED, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "tune" / "ml100k"
SECTION = "## Tuning"
SOURCE = [str(SHARED / "data" / "movielens-100k"), "--format", "movielens"]


def rel(cmd: list[str]) -> str:
    return " ".join(["nextaction", *cmd[1:]]).replace(str(ROOT.parent), "..").replace(str(ROOT) + "/", "")


def train(name: str, extra: list[str], *, reuse: bool) -> dict:
    out = CACHE / name
    meta = out / "bench.json"
    if reuse and meta.exists():
        return json.loads(meta.read_text())
    cmd = [str(BIN), "train", *SOURCE, "--out", str(out), *extra, "--json"]
    stdout, wall, _ = run(cmd)
    config = json.loads((out / "config.json").read_text())
    record = {
        "metrics": json.loads(stdout)["metrics"],
        "valid": config["best_valid_score"],
        "best_epoch": config["best_epoch"],
        "wall_s": round(wall, 1),
        "command": rel(cmd),
    }
    meta.write_text(json.dumps(record, indent=2))
    return record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    study = CACHE / "study"
    summary_path = CACHE / "tune.json"
    cmd = [str(BIN), "tune", *SOURCE, "--out", str(study), "--minutes", f"{args.minutes:g}", "--json"]
    if args.reuse and summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        shutil.rmtree(study, ignore_errors=True)
        stdout, wall, _ = run(cmd)
        summary = {**json.loads(stdout), "wall_s": round(wall, 1), "command": rel(cmd)}
        summary_path.write_text(json.dumps(summary, indent=2))
    default = train("default", [], reuse=args.reuse)
    tuned = train("tuned", ["--config", str(study / "best.toml")], reuse=args.reuse)
    rows = list(csv.DictReader((study / "trials.csv").open()))
    d, t = default["metrics"], tuned["metrics"]
    gain = t["NDCG@10"] / d["NDCG@10"] - 1
    text = "\n".join(
        [
            SECTION,
            "",
            f"MovieLens-100k (leave-one-out, full ranking, seen items excluded). Search: `{summary['command']}` "
            f"({summary['wall_s'] / 60:.1f} min: {len(rows)} trials, {summary['trials']}), built-in space "
            "(model.dim, n_layers, dropout, max_len; train.lr, weight_decay), TPE sampler (seed 0), median "
            "pruning from epoch 5 on validation NDCG@10; the test events are never read by the search. Then "
            "both models trained in this run and evaluated on the test events.",
            "",
            "| model | valid NDCG@10 | test NDCG@10 | test HR@10 | best epoch | training |",
            "|---|---|---|---|---|---|",
            f"| defaults (`{default['command']}`) | {default['valid']:.4f} | {d['NDCG@10']:.4f} | "
            f"{d['HR@10']:.4f} | {default['best_epoch']} | {default['wall_s']:.0f} s |",
            f"| tuned (`{tuned['command']}`) | {tuned['valid']:.4f} | {t['NDCG@10']:.4f} | {t['HR@10']:.4f} | "
            f"{tuned['best_epoch']} | {tuned['wall_s']:.0f} s |",
            "",
            f"Best settings: {summary['best_params']}. Test NDCG@10 {gain:+.1%} over the defaults "
            f"(target: an improvement, or how little). Date: {date.today().isoformat()}. Machine: {machine()}.",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
