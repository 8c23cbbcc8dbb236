"""Benchmark of the next-item model (`make bench`): accuracy, training and evaluation speed, memory.

For each dataset it runs, as fresh child processes, exactly what a user runs:

    nextaction train SOURCE --format F --out MODEL --json      (default settings)
    nextaction evaluate MODEL --json                            (3 times: median evaluation seconds)
    nextaction evaluate MODEL --baselines --json                (the baselines, by the same code)

and writes the "Next-item model" section of BENCHMARKS.md. RecBole 1.2.1 SASRec figures come from
../shared/peers/README.md (measured on this machine); with --recbole the peer's epoch time is also
measured in this run (its own virtual environment, a short wall budget).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CACHE = ROOT / "bench" / ".cache" / "models"
BIN = Path(sys.executable).parent / "nextaction"

DATASETS = {
    "beauty": {
        "label": "Amazon Beauty (S3-Rec split)",
        "source": SHARED / "data" / "amazon-beauty-s3rec" / "Beauty.txt",
        "format": "sequences",
        "recbole": {
            "HR@10": 0.0810,
            "NDCG@10": 0.0403,
            "MRR@10": 0.0278,
            "HR@20": 0.1160,
            "NDCG@20": 0.0491,
            "epoch_s": 101.9,
            "note": "SASRec, dropout 0.5, 22-min budget",
        },
        "targets": "NDCG@10 ≥ 0.053 and HR@10 ≥ 0.092 (stretch NDCG@10 ≥ 0.060)",
    },
    "ml100k": {
        "label": "MovieLens-100k (leave-one-out by time)",
        "source": SHARED / "data" / "movielens-100k",
        "format": "movielens",
        "recbole": {
            "HR@10": 0.1357,
            "NDCG@10": 0.0640,
            "MRR@10": 0.0425,
            "HR@20": 0.2291,
            "NDCG@20": 0.0876,
            "epoch_s": 60.6,
            "note": "SASRec, dropout 0.2, 22-min budget",
        },
        "targets": "NDCG@10 ≥ 1.1 × RecBole SASRec's (≥ 0.0704)",
    },
}


def run(cmd: list[str]) -> tuple[str, float, int]:
    """Run a child; return (stdout, wall seconds, peak RSS MiB of *this* child, from wait4)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    return stdout, wall, usage.ru_maxrss // 1024


def bench_dataset(name: str, spec: dict, *, sets: list[str]) -> dict:
    model_dir = CACHE / name
    cmd = [
        str(BIN),
        "train",
        str(spec["source"]),
        "--format",
        spec["format"],
        "--out",
        str(model_dir),
        "--json",
    ]
    for s in sets:
        cmd += ["--set", s]
    print(f"[{name}] training: {' '.join(cmd)}", flush=True)
    out, wall, rss = run(cmd)
    result = json.loads(out)
    config = json.loads((model_dir / "config.json").read_text())
    epochs = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    evals = []
    for _ in range(3):
        o, _, _ = run([str(BIN), "evaluate", str(model_dir), "--json"])
        evals.append(json.loads(o)["seconds"])
    o, _, _ = run([str(BIN), "evaluate", str(model_dir), "--baselines", "--json"])
    baselines = json.loads(o)["baselines"]
    return {
        "metrics": result["metrics"],
        "protocol": result["protocol"],
        "train_wall_s": wall,
        "train_loop_s": config["train_seconds"],
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "epoch_s_median": statistics.median(e["epoch_s"] for e in epochs),
        "best_elapsed_s": next(
            (e["elapsed_s"] for e in epochs if e["epoch"] == config["best_epoch"]), config["train_seconds"]
        ),
        "eval_s_median": statistics.median(evals),
        "eval_s_runs": evals,
        "peak_rss_mib": rss,
        "precision": config["precision"],
        "baselines": baselines,
        "command": " ".join(["nextaction", *cmd[1:]]).replace(str(ROOT.parent), ".."),
    }


def recbole_epoch_seconds(run_name: str, budget_s: int) -> float | None:
    """Measure RecBole SASRec's median epoch time in this run (needs its own venv; see peers/recbole)."""
    script = SHARED / "peers" / "recbole" / "run.sh"
    env = dict(os.environ, BUDGET_S=str(budget_s))
    proc = subprocess.run(
        ["bash", str(script), run_name], env=env, capture_output=True, text=True, check=False
    )
    path = Path(env.get("RUNS", "/tmp/recbole-runs")) / run_name / "result.json"
    if proc.returncode != 0 or not path.is_file():
        print(f"RecBole run failed: {proc.stderr[-1000:]}", file=sys.stderr)
        return None
    res = json.loads(path.read_text())
    return res.get("train_s_per_epoch_median")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {cpu}, {platform.system()} {platform.release()}"


def markdown(results: dict[str, dict], recbole_measured: dict[str, float | None]) -> str:
    keys = ["HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20"]
    lines = [
        "## Next-item model",
        "",
        f"- Command: `make bench` (bench/bench_model.py). Date: {date.today().isoformat()}. Machine: {machine()}.",
        "- Protocol: leave-one-out (last event → test, second-last → validation), full ranking over the whole "
        "catalogue, ties counted against the model, one target per user; seen items excluded (single-behaviour "
        "logs). Best checkpoint by validation NDCG@10. Default settings, no tuning flags.",
        "- Training data: the train events, plus — on logs with more than 5,000 users (Beauty) — the validation "
        "events of the users outside a fixed 5,000-user validation sample (`train.valid_holdout`, default): "
        "their most recent transitions, as libraries that train on everything but the test event do. Test "
        "events are never trained on. RecBole trains on neither; with `--set train.valid_holdout=0` nextaction "
        "does the same (figure below).",
        "- RecBole 1.2.1 SASRec: the figures in ../shared/peers/README.md, measured on this machine with the "
        "same split and full ranking (RecBole does not exclude seen items; on these 5-core sets the "
        "difference is small but favours us). Its training was capped at 22 minutes.",
        "",
    ]
    for name, r in results.items():
        spec = DATASETS[name]
        rb = spec["recbole"]
        lines += [
            f"### {spec['label']}",
            "",
            f"Command: `{r['command']}` · target: {spec['targets']}",
            "",
            "| model | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
            "| **nextaction** | " + " | ".join(f"**{r['metrics'][k]:.4f}**" for k in keys) + " |",
            f"| RecBole SASRec ({rb['note']}) | " + " | ".join(f"{rb[k]:.4f}" for k in keys) + " |",
        ]
        for bname, m in r["baselines"].items():
            lines.append(f"| {bname} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
        measured = recbole_measured.get(name)
        rb_epoch = (
            f"{measured:.1f} s (measured in this run)" if measured else f"{rb['epoch_s']} s (peers README)"
        )
        lines += [
            "",
            f"- Training: {r['train_loop_s']:.0f} s training loop ({r['train_wall_s']:.0f} s wall with data "
            f"preparation and final evaluation), {r['epochs']} epochs, best epoch {r['best_epoch']}, "
            f"precision {r['precision']}; the best checkpoint was reached after "
            f"{r.get('best_elapsed_s', r['train_loop_s']):.0f} s (the rest is early stopping's patience).",
            f"- Epoch time: median {r['epoch_s_median']:.1f} s vs RecBole SASRec {rb_epoch} "
            f"(×{(measured or rb['epoch_s']) / r['epoch_s_median']:.1f} faster).",
            f"- Full-ranking evaluation of all {r['protocol']['users_evaluated']:,} users: median "
            f"{r['eval_s_median']:.2f} s (runs: {', '.join(f'{s:.2f}' for s in r['eval_s_runs'])}).",
            f"- Peak RSS of training: {r['peak_rss_mib']:,} MiB. Coverage@10: {r['metrics']['coverage@10']:.3f}.",
            "",
        ]
    return "\n".join(lines)


NOTES_MARK = "<!-- notes: kept when the section is regenerated -->"


def write_section(text: str, section: str = "## Next-item model") -> None:
    """Replace (in place) or append one ``## …`` section of BENCHMARKS.md, atomically.

    Hand-written notes of the old section below the line ``NOTES_MARK`` are kept after the new text.
    """
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    block = text.rstrip() + "\n"
    start = current.find(section)
    if start < 0:
        updated = current.rstrip() + "\n\n" + block
    else:
        end = current.find("\n## ", start + 3)
        end = len(current) if end < 0 else end + 1
        old = current[start:end]
        if (mark := old.find(NOTES_MARK)) >= 0:
            block += "\n" + old[mark:].rstrip() + "\n"
        tail = current[end:]
        updated = current[:start] + block + ("\n" + tail if tail else "")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(updated)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="beauty,ml100k")
    ap.add_argument("--set", action="append", default=[], help="extra --set for training")
    ap.add_argument("--recbole", action="store_true", help="also measure RecBole's epoch time in this run")
    ap.add_argument("--recbole-budget", type=int, default=330)
    args = ap.parse_args()
    names = [n for n in args.datasets.split(",") if n]
    missing = [n for n in names if not DATASETS[n]["source"].exists()]
    if missing:
        sys.exit(f"datasets not found under {SHARED / 'data'}: {', '.join(missing)}")
    results = {n: bench_dataset(n, DATASETS[n], sets=args.set) for n in names}
    measured: dict[str, float | None] = {}
    if args.recbole:
        for n in names:
            measured[n] = recbole_epoch_seconds(f"sasrec_{n}", args.recbole_budget)
    text = markdown(results, measured)
    print(text)
    write_section(text)
    (CACHE / "results.json").write_text(json.dumps({"results": results, "recbole": measured}, indent=2))


if __name__ == "__main__":
    main()
