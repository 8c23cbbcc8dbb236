"""Benchmark of item text (`make bench-text`): encoding speed, and accuracy with text on Amazon Beauty.

1. Encoding all Beauty items with all-MiniLM-L6-v2: cold (empty cache) and warm (second run), each in a
   fresh child process, median of ``--runs``.
2. Training with default settings, as a user runs it:
       nextaction train Beauty.txt --format sequences [--items item_text.tsv] [--holdout-items 0.1] --out M
   for id-only vs id+text on the standard split, and on the cold-start split (10% of items held out of
   training; `cold` / `warm` metrics by the target item).
Writes the "Item text" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

from bench_model import BIN, CACHE, SHARED, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Item text"
BEAUTY = SHARED / "data" / "amazon-beauty-s3rec"
ENCODE = """
import sys, time
from nextaction.data.readers import read_items
from nextaction.text import TextConfig, encode_items
items = read_items(sys.argv[1])
t = time.perf_counter()
_, _, report = encode_items(items, TextConfig(cache_dir=sys.argv[2]))
print(time.perf_counter() - t, report.n_encoded, report.n_cached, report.n_items)
"""

RUNS = {
    "id": [],
    "id+text": ["--items", str(BEAUTY / "item_text.tsv")],
    "id (cold split)": ["--holdout-items", "0.1"],
    "id+text (cold split)": ["--items", str(BEAUTY / "item_text.tsv"), "--holdout-items", "0.1"],
}


def encoding(runs: int) -> dict:
    cold, warm = [], []
    for _ in range(runs):
        cache = Path(tempfile.mkdtemp(prefix="textcache."))
        try:
            for target in (cold, warm):
                out, wall, rss = run(
                    [sys.executable, "-c", ENCODE, str(BEAUTY / "item_text.tsv"), str(cache)]
                )
                seconds, encoded, _cached, n = out.split()
                target.append(
                    {
                        "seconds": float(seconds),
                        "wall": wall,
                        "rss": rss,
                        "encoded": int(encoded),
                        "n": int(n),
                    }
                )
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    threads = os.environ.get("OMP_NUM_THREADS", "all cores")
    return {"cold": cold, "warm": warm, "threads": threads}


def train(name: str, args: list[str]) -> dict:
    model_dir = CACHE / f"text_{name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', '_')}"
    cmd = [
        str(BIN),
        "train",
        str(BEAUTY / "Beauty.txt"),
        "--format",
        "sequences",
        *args,
        "--out",
        str(model_dir),
        "--json",
    ]
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    out, wall, rss = run(cmd)
    config = json.loads((model_dir / "config.json").read_text())
    return {
        "command": " ".join(cmd).replace(str(ROOT.parent), ".."),
        "result": json.loads(out),
        "train_s": config["train_seconds"],
        "wall_s": wall,
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "rss": rss,
        "new_item_offset": config.get("new_item_offset"),
    }


def markdown(enc: dict, results: dict) -> str:
    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    lines = [
        SECTION,
        "",
        f"- Command: `make bench-text` (bench/bench_text.py). Date: {date.today().isoformat()}. Machine: {machine()}.",
        "- Data: Amazon Beauty, S3-Rec leave-one-out split, full ranking, seen items excluded; item text = "
        "`item_text.tsv` (title words + brand|categories; the ASIN column is detected as an identifier and left out).",
        "",
        f"Encoding all-MiniLM-L6-v2 (bf16 autocast on this CPU), each in a fresh process, threads: "
        f"{enc.get('threads', 'all cores')}:",
        "",
        "| run | items | encoded | median s (in encode_items) | runs (s) | process wall s | target |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for label, rows, target in (("cold cache", enc["cold"], 60), ("warm cache", enc["warm"], 2)):
        m = med(rows, "seconds")
        lines.append(
            f"| {label} | {rows[0]['n']:,} | {rows[0]['encoded']:,} | {m:.2f} | "
            + ", ".join(f"{r['seconds']:.2f}" for r in rows)
            + f" | {med(rows, 'wall'):.2f} | ≤ {target} s: {'met' if m <= target else 'missed'} |"
        )
    keys = ["HR@10", "NDCG@10", "MRR@10", "HR@20"]
    lines += [
        "",
        "Training with default settings (50 epochs max, early stopping on validation NDCG@10):",
        "",
        "| model | split | HR@10 | NDCG@10 | MRR@10 | HR@20 | cold HR@10 | cold NDCG@10 | warm NDCG@10 | training s "
        "| threads |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        res = r["result"]
        m = res["metrics"]
        cold, warm = res.get("cold"), res.get("warm")
        lines.append(
            f"| {name.split(' (')[0]} | {'10% items held out' if cold else 'standard'} | "
            + " | ".join(f"{m[k]:.4f}" for k in keys)
            + (
                f" | {cold['HR@10']:.4f} | {cold['NDCG@10']:.4f} | {warm['NDCG@10']:.4f}"
                if cold
                else " | — | — | —"
            )
            + f" | {r['train_s']:.0f} | {r.get('threads', os.environ.get('OMP_NUM_THREADS', 'all'))} |"
        )
    lines.append("")
    if "id" in results and "id+text" in results:
        a, b = (
            results["id"]["result"]["metrics"]["NDCG@10"],
            results["id+text"]["result"]["metrics"]["NDCG@10"],
        )
        lines.append(
            f"- Overall: id+text NDCG@10 {b:.4f} vs id {a:.4f} = ×{b / a:.3f} "
            f"(target ≥ ×1.05: {'met' if b >= 1.05 * a else 'missed'})."
        )
    cold_run = results.get("id+text (cold split)")
    if cold_run:
        c = cold_run["result"]["cold"]
        lines.append(
            f"- Cold items (their training events removed; {c['users']:,} users whose test item is cold): "
            f"HR@10 {c['HR@10']:.4f}, NDCG@10 {c['NDCG@10']:.4f} (target HR@10 ≥ 0.02: "
            f"{'met' if c['HR@10'] >= 0.02 else 'missed'})."
        )
        fitted = cold_run.get("new_item_offset")
        if fitted:
            curve = ", ".join(f"{k}: {v:.4f}" for k, v in fitted["valid_NDCG@10"].items())
            lines.append(
                f"- New-item score offset chosen on validation ({fitted['evidence']}, "
                f"{fitted['validation_users']:,} validation users): {fitted['offset']:g}, the largest whose "
                f"validation NDCG@10 stays within {fitted['tolerance']:.0%} of the best (offset: NDCG@10 — "
                f"{curve})."
            )
    for r in results.values():
        rss = f", peak RSS {r['rss']:,} MiB" if r["rss"] else ""
        lines.append(f"- `{r['command']}`: {r['epochs']} epochs (best {r['best_epoch']}){rss}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated training runs")
    ap.add_argument("--reuse", action="store_true", help="keep results of earlier runs in text.json")
    args = ap.parse_args()
    if not (BEAUTY / "Beauty.txt").exists():
        sys.exit(f"Beauty not found under {BEAUTY}")
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "text.json"
    state = json.loads(path.read_text()) if args.reuse and path.exists() else {"results": {}}
    if "encoding" not in state:
        state["encoding"] = encoding(args.runs)
        path.write_text(json.dumps(state, indent=2))
    for name in [n for n in args.only.split(",") if n]:
        if name not in state["results"]:
            state["results"][name] = train(name, RUNS[name])
            path.write_text(json.dumps(state, indent=2))
    text = markdown(state["encoding"], {n: state["results"][n] for n in RUNS if n in state["results"]})
    print(text)
    write_section(text, SECTION)


if __name__ == "__main__":
    main()
