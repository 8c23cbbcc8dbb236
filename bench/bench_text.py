"""Benchmark of item text (`make bench-text`): encoding speed, and accuracy with text on Amazon Beauty.

1. Encoding all Beauty items with all-MiniLM-L6-v2: cold (empty cache) and warm (second run), each in a
   fresh child process, median of ``--runs``.
2. Training with default settings, as a user runs it:
       nextaction train Beauty.txt --format sequences [--items item_text.tsv] [--holdout-items 0.1] --out M
   for id-only vs id+text on the standard split, and on the cold-start split (10% of items held out of
   training; `cold` / `warm` metrics by the target item), once per seed (``--seeds``; seed 42 is the
   default command, others add ``--set train.seed=S``). Early stopping on a 5,000-user validation sample
   makes single runs differ by a few percent, so targets are judged on the mean over seeds.
Each run's result is kept in its own file under bench/.cache/models, so runs can be split over processes
(``--only``, ``--seeds``, ``--no-encoding``) and the section rebuilt from whatever is there (``--reuse``).
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
from nextaction.text.encoder import TextConfig, encode_items
items = read_items(sys.argv[1])
t = time.perf_counter()
_, _, report = encode_items(items, TextConfig(cache_dir=sys.argv[2]))
print(time.perf_counter() - t, report.n_encoded, report.n_cached, report.n_items)
"""

DEFAULT_SEED = 42  # train.seed's default
BEAUTY_SOURCE = [str(BEAUTY / "Beauty.txt"), "--format", "sequences"]
MOVIELENS = SHARED / "data" / "movielens-100k"
RUNS = {
    "id": [*BEAUTY_SOURCE],
    "id+text": [*BEAUTY_SOURCE, "--items", str(BEAUTY / "item_text.tsv")],
    "id (cold split)": [*BEAUTY_SOURCE, "--holdout-items", "0.1"],
    "id+text (cold split)": [
        *BEAUTY_SOURCE,
        "--items",
        str(BEAUTY / "item_text.tsv"),
        "--holdout-items",
        "0.1",
    ],
    # new by time: MovieLens-100k's titles and genres (u.item), a global temporal split; the items first
    # seen in the test window are the new ones (issue 17: "new" defined by time, not by a held-out draw)
    "id+text (MovieLens temporal)": [
        str(MOVIELENS),
        "--format",
        "movielens",
        "--set",
        "prepare.split.kind=temporal",
        "--set",
        "model.fusion=id+text",
    ],
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


def slug(name: str, seed: int) -> str:
    base = name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
    return f"text_{base}" + ("" if seed == DEFAULT_SEED else f"_s{seed}")


def train(name: str, args: list[str], seed: int) -> dict:
    model_dir = CACHE / slug(name, seed)
    seed_args = [] if seed == DEFAULT_SEED else ["--set", f"train.seed={seed}"]
    cmd = [
        str(BIN),
        "train",
        *args,
        *seed_args,
        "--out",
        str(model_dir),
        "--json",
    ]
    print(f"[{name}, seed {seed}] {' '.join(cmd)}", flush=True)
    out, wall, rss = run(cmd)
    config = json.loads((model_dir / "config.json").read_text())
    return {
        "name": name,
        "seed": seed,
        "command": " ".join(cmd).replace(str(ROOT.parent), ".."),
        "result": json.loads(out),
        "train_s": config["train_seconds"],
        "wall_s": wall,
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "rss": rss,
        "new_item_offset": config.get("new_item_offset"),
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
    }


def markdown(enc: dict, results: list[dict]) -> str:
    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    lines = [
        SECTION,
        "",
        f"- Command: `make bench-text` (bench/bench_text.py). Date: {date.today().isoformat()}. Machine: {machine()}.",
        "- Data: Amazon Beauty, S3-Rec leave-one-out split, full ranking, seen items excluded (a repeated target "
        "is a miss); item text = `item_text.tsv` (title words + brand|categories; the ASIN column is detected as "
        "an identifier and left out). Baselines and models learn the same events.",
        "- New items: the new-item offset lifts only items registered as new (`items add`; on the cold split the "
        "held-out items). The held-out items are split in two halves: the offset is chosen on the validation "
        "targets of one half (`cold_fit`), cold metrics are reported on the other, at offset 0 and at the "
        "fitted offset. Before 2026-12-07 (issue 17) the offset lifted every item without training events, "
        "i.e. on a log's catalogue the items that appear in validation or test.",
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
        "Training with default settings (at most 50 epochs for id, 30 for id+text; early stopping on validation "
        "NDCG@10), one row per seed:",
        "",
        "| model | split | seed | HR@10 | NDCG@10 | MRR@10 | HR@20 | cold HR@10 (offset 0 / fitted) "
        "| cold NDCG@10 (offset 0 / fitted) | warm NDCG@10 (offset 0 / fitted) | epochs (best) | training s | threads |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        res = r["result"]
        m = res["metrics"]
        cold, warm = res.get("cold"), res.get("warm")
        at0 = res.get("at_offset_0", {})

        def pair(group: dict | None, group0: dict | None, key: str) -> str:
            if not group:
                return "—"
            return f"{(group0 or group)[key]:.4f} / {group[key]:.4f}"

        split = "10% items held out" if cold else "temporal" if "temporal" in r["name"] else "standard"
        lines.append(
            f"| {r['name'].split(' (')[0]} | {split} | {r['seed']} | "
            + " | ".join(f"{m[k]:.4f}" for k in keys)
            + f" | {pair(cold, at0.get('cold'), 'HR@10')} | {pair(cold, at0.get('cold'), 'NDCG@10')}"
            + f" | {pair(warm, at0.get('warm'), 'NDCG@10')}"
            + f" | {r['epochs']} ({r['best_epoch']}) | {r['train_s']:.0f} | {r['threads']} |"
        )
    lines.append("")

    def runs(name: str) -> list[dict]:
        return [r for r in results if r["name"] == name]

    def mean(rows: list[dict], *path: str) -> float:
        values = []
        for r in rows:
            v = r["result"]
            for key in path:
                v = v[key]
            values.append(v)
        return statistics.fmean(values)

    if runs("id") and runs("id+text"):
        a, b = mean(runs("id"), "metrics", "NDCG@10"), mean(runs("id+text"), "metrics", "NDCG@10")
        ndcg = {(r["name"], r["seed"]): r["result"]["metrics"]["NDCG@10"] for r in results}
        seeds = sorted(
            {sd for name, sd in ndcg if name == "id"} & {sd for name, sd in ndcg if name == "id+text"}
        )
        per_seed = ", ".join(f"seed {sd}: ×{ndcg['id+text', sd] / ndcg['id', sd]:.3f}" for sd in seeds)
        lines.append(
            f"- Overall (mean over {len(runs('id+text'))} id+text and {len(runs('id'))} id runs): id+text NDCG@10 "
            f"{b:.4f} vs id {a:.4f} = ×{b / a:.3f} (target ≥ ×1.05: {'met' if b >= 1.05 * a else 'missed'}; "
            f"{per_seed})."
        )
    cold_runs = runs("id+text (cold split)")
    if cold_runs:
        c = cold_runs[0]["result"]["cold"]
        hr, ndcg = mean(cold_runs, "cold", "HR@10"), mean(cold_runs, "cold", "NDCG@10")
        hr0 = mean(cold_runs, "at_offset_0", "cold", "HR@10")
        lines.append(
            f"- Cold items (their training events removed; {c['users']:,} users whose test item is a cold item the "
            f"offset was not fitted on, {cold_runs[0]['result']['cold_fit_users']:,} users on the other half left "
            f"out; mean of {len(cold_runs)} run(s)): HR@10 {hr:.4f} at the fitted offset, {hr0:.4f} at offset 0, "
            f"NDCG@10 {ndcg:.4f} (target HR@10 ≥ 0.02: {'met' if hr >= 0.02 else 'missed'}). The ID-only model "
            "on the same split: HR@10 "
            + (
                f"{mean(runs('id (cold split)'), 'cold', 'HR@10'):.4f}."
                if runs("id (cold split)")
                else "not run."
            )
        )
        for r in cold_runs:
            fitted = r.get("new_item_offset")
            if fitted:
                curve = ", ".join(f"{k}: {v:.4f}" for k, v in fitted["valid_NDCG@10"].items())
                lines.append(
                    f"- New-item score offset chosen on validation (seed {r['seed']}; {fitted['evidence']}, "
                    f"{fitted['validation_users']:,} validation users): {fitted['offset']:g}, the largest whose "
                    f"validation NDCG@10 stays within {fitted['tolerance']:.0%} of the best (offset: NDCG@10 — "
                    f"{curve})."
                )
    for r in runs("id+text (MovieLens temporal)"):
        nbt = r["result"].get("new_by_time")
        if nbt:
            a, b = nbt["as_scored"], nbt["registered_new"]
            lines.append(
                f"- New by time (MovieLens-100k, temporal split, seed {r['seed']}): {nbt['items']} items are first "
                f"seen in the test window, the target of {nbt['users']} of "
                f"{r['result']['protocol']['users_evaluated']} test users. As scored (nobody registered them: text "
                f"alone, no offset): HR@10 {a['HR@10']:.4f}, NDCG@10 {a['NDCG@10']:.4f}. Registered as new before "
                f"the window (offset {nbt['offset']:g}): HR@10 {b['HR@10']:.4f}, NDCG@10 {b['NDCG@10']:.4f}, and the "
                f"other users' NDCG@10 {nbt['others_registered_new']['NDCG@10']:.4f} (as scored: "
                f"{nbt['others_as_scored']['NDCG@10']:.4f}). Every new item in this catalogue has "
                "a test event, so the registered figure is an upper bound: in a real catalogue most new items get "
                "none and the offset lifts them all the same."
            )
    for r in results:
        rss = f", peak RSS {r['rss']:,} MiB" if r["rss"] else ""
        lines.append(f"- `{r['command']}`: {r['epochs']} epochs (best {r['best_epoch']}){rss}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="encoding runs (median)")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated training runs")
    ap.add_argument("--seeds", default="42,7", help="comma-separated train.seed values, one run each")
    ap.add_argument("--reuse", action="store_true", help="keep the results of earlier runs")
    ap.add_argument("--no-encoding", action="store_true", help="skip the encoding runs (keep earlier ones)")
    args = ap.parse_args()
    if not (BEAUTY / "Beauty.txt").exists():
        sys.exit(f"Beauty not found under {BEAUTY}")
    CACHE.mkdir(parents=True, exist_ok=True)
    enc_path = CACHE / "text_encoding.json"
    if not (args.no_encoding or (args.reuse and enc_path.exists())):
        enc_path.write_text(json.dumps(encoding(args.runs), indent=2))
    seeds = [int(x) for x in args.seeds.split(",") if x]
    for name in [n for n in args.only.split(",") if n]:
        for seed in seeds:
            path = CACHE / f"{slug(name, seed)}.json"
            if not (args.reuse and path.exists()):
                path.write_text(json.dumps(train(name, RUNS[name], seed), indent=2))
    order = list(RUNS)
    results = [json.loads(p.read_text()) for p in CACHE.glob("text_*.json") if p != enc_path]
    results = sorted(
        (r for r in results if r.get("name") in RUNS),  # everything on record, in table order
        key=lambda r: (order.index(r["name"]), r["seed"] != DEFAULT_SEED, r["seed"]),
    )
    if not enc_path.exists():  # with --no-encoding, another process may measure it later
        print(
            "results saved; no encoding results yet, so BENCHMARKS.md is unchanged (run once without --no-encoding)"
        )
        return
    text = markdown(json.loads(enc_path.read_text()), results)
    print(text)
    write_section(text, SECTION)


if __name__ == "__main__":
    main()
