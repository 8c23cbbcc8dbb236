"""Benchmark of batch scoring (`make bench-batch`): BENCHMARKS.md "Batch scoring".

Every user of the Beauty model of `make bench` (bench/.cache/models/beauty: 22,363 users, 12,101 items)
gets a top-50 list into one Parquet file with `nextaction recommend MODEL --all-users --k 50 --out …`, as a
fresh child process each run (model load and the write included); median of 3 runs, peak RSS of the child.
The baseline in the same run: the same users one at a time through `Predictor.recommend` (what a loop over
the single-user API costs), on a 2,000-user sample, scaled to every user.

    python bench/bench_batch.py [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from bench_model import BIN, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "bench" / ".cache" / "models" / "beauty"
SECTION = "## Batch scoring"


def one_at_a_time(sample: int = 2000) -> float:
    """Seconds per user of Predictor.recommend over the first ``sample`` users (histories from the model)."""
    from nextaction import Predictor

    p = Predictor.load(MODEL)
    users = p.data.users["user_id"].to_list()[:sample]
    t0 = time.perf_counter()
    for u in users:
        p.recommend(p.history(u, split="all"), k=50)
    return (time.perf_counter() - t0) / len(users)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not (MODEL / "config.json").exists():
        raise SystemExit(f"{MODEL} is missing: run `make bench` first (it trains the Beauty model)")
    walls, inner, rss = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        cmd = [str(BIN), "recommend", str(MODEL), "--all-users", "--k", "50", "--out", str(out), "--json"]
        for _ in range(args.runs):
            stdout, wall, peak = run(cmd)
            summary = json.loads(stdout)
            walls.append(wall)
            inner.append(summary["seconds"])
            rss.append(peak)
        users, rows, size = summary["users"], summary["rows"], out.stat().st_size
    per_user = one_at_a_time()
    wall = statistics.median(walls)
    text = "\n".join(
        [
            SECTION,
            "",
            f"- Command: `nextaction recommend bench/.cache/models/beauty --all-users --k 50 --out recs.parquet` "
            f"(the Beauty model of `make bench`), {args.runs} runs, each a fresh process. Date: "
            f"{date.today().isoformat()}. Machine: {machine()}.",
            "",
            "| what | median | runs | peak RSS |",
            "|---|---|---|---|",
            f"| whole command ({users:,} users × top-50 = {rows:,} rows, {size / 1e6:.1f} MB Parquet) | "
            f"{wall:.1f} s | {', '.join(f'{w:.1f}' for w in walls)} | {statistics.median(rss):.0f} MiB |",
            f"| scoring alone (chunks of 1,024 users, seen items excluded) | {statistics.median(inner):.1f} s | "
            f"{', '.join(f'{w:.1f}' for w in inner)} | |",
            f"| baseline: `Predictor.recommend` one user at a time (2,000 users, scaled to {users:,}) | "
            f"{per_user * users:.1f} s | {per_user * 1000:.2f} ms a user | |",
            "",
            f"Target ≤ 10 s for every Beauty user's top-50: {'met' if wall <= 10 else 'missed'} ({wall:.1f} s "
            "for the whole command). The 1M-user target over the 770k-item synthetic catalogue is not measured "
            "yet (its model is built by `make bench-scale`).",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
