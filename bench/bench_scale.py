"""Scale benchmark (`make bench-scale`): large logs and large catalogues on this machine.

For a synthetic shop log of 1M events (100k users) and of 10M events (1M users), both over a catalogue of
1M items (of which those that occur in the log become the model's catalogue):

1. prepare — `nextaction prepare events.csv` (CSV → cleaned, indexed, split, memory-mappable arrays);
2. train — `nextaction train` for one epoch with sampled softmax (next-item objective; the behaviour head
   is switched off: it is measured in `make bench-behaviors`), validation on a fixed sample of 10k users;
3. evaluate — `nextaction evaluate --users 10000`: full ranking of 10k test users over the whole catalogue;
4. retrieve — top-10 over the catalogue for one user at a time: exact (chunked matrix product) and the
   FAISS HNSW index (`Predictor.use_index`), with recall@10 of the index against exact.

Every stage runs as its own child process; its wall time and peak RSS (`wait4`) are recorded. The growth
from 1M to 10M events per stage is the ratio of times (linear = 10×). Results go to the "Scale" section of
BENCHMARKS.md; the 2-process DDP comparison (bench/bench_ddp.py) is a separate section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "scale"
sys.path.insert(0, str(ROOT / "bench"))

from bench_model import machine, write_section  # noqa: E402

RSS_LIMIT_GB = 12.0
# (events, users, items): the log grows tenfold over the same 1M-item catalogue, users growing with it
SIZES = {"1M": (1_000_000, 100_000, 1_000_000), "10M": (10_000_000, 1_000_000, 1_000_000)}


def run_stage(cmd: list[str], *, log: Path) -> dict[str, float]:
    """Run a child process; its wall time and peak RSS (from wait4, the child's own maximum)."""
    env = dict(os.environ, NEXTACTION_DEBUG="1")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"stage failed (exit {code}): {' '.join(cmd)}; see {log}")
    return {"seconds": wall, "peak_rss_gb": usage.ru_maxrss / 2**20}  # ru_maxrss is in KiB on Linux


def generate(n_events: int, n_users: int, n_items: int) -> Path:
    out = CACHE / f"log-{n_events}-{n_users}-{n_items}"
    if (out / "events.csv").is_file():
        return out / "events.csv"
    from nextaction.datasets import synthetic

    t0 = time.perf_counter()
    log = synthetic(n_events=n_events, n_users=n_users, n_items=n_items, seed=0)
    events_csv, _ = log.write(out)
    print(f"generated {n_events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    return Path(events_csv)


RETRIEVE = r"""
import json, sys, time
import numpy as np, torch
from nextaction import Predictor
from nextaction.retrieval import ExactIndex, FaissIndex, recall_at_k
torch.set_num_threads(int(sys.argv[3]))
import faiss; faiss.omp_set_num_threads(int(sys.argv[3]))
p = Predictor.load(sys.argv[1])
users = p.data.users["user_id"].to_list()
rng = np.random.default_rng(0)
histories = [p.history(users[u], split="all") for u in rng.choice(len(users), 300, replace=False)]
states = []
with torch.no_grad():
    for h in histories:
        items, behs, times = p.encode(h)
        from nextaction.batches import from_lists
        b = from_lists([items], [behs], [times], p.model.cfg.max_len)
        states.append(p.model.output_states(p.model.last_state(b.items, b.behaviors, b.timestamps)))
vectors = p.model.output_embeddings().detach()
out = {"items": int(vectors.shape[0] - 1)}
def timed(index, name):
    for s in states[:20]:
        index.search(s, 10)
    ts, hits = [], []
    for s in states:
        t = time.perf_counter(); hits.append(index.search(s, 10)); ts.append(time.perf_counter() - t)
    out[name] = {"median_ms": 1e3 * float(np.median(ts)), "p95_ms": 1e3 * float(np.percentile(ts, 95))}
    return hits
exact_hits = timed(ExactIndex(vectors), "exact")
# speed at exactly 1M rows: the trained vectors plus jittered copies of random ones (the exact search is
# memory-bound, so its time depends on the row count, not on what the rows hold)
extra = 1_000_001 - len(vectors)
if extra > 0:
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(1, len(vectors), (extra,), generator=g)
    big = torch.cat([vectors, vectors[pick] + 0.01 * torch.randn(extra, vectors.shape[1], generator=g)])
    timed(ExactIndex(big), "exact_1M")
    out["exact_1M"]["rows"] = int(len(big) - 1)
    del big
t = time.perf_counter(); faiss_index = FaissIndex(vectors, ef_search=int(sys.argv[2])); build = time.perf_counter() - t
approx_hits = timed(faiss_index, "faiss")
out["faiss"]["build_s"] = build
out["faiss"]["ef_search"] = int(sys.argv[2])
out["faiss"]["recall@10"] = float(np.mean([recall_at_k(a, e) for a, e in zip(approx_hits, exact_hits)]))
print(json.dumps(out))
"""


def bench_size(name: str, *, batch_size: int, ef_search: int, threads: int) -> dict:
    n_events, n_users, n_items = SIZES[name]
    events = generate(n_events, n_users, n_items)
    work = CACHE / f"run-{name}"
    work.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "nextaction"]
    res: dict = {"events": n_events, "users": n_users, "items": n_items}
    res["prepare"] = run_stage(
        [*py, "prepare", str(events), "--out", str(work / "data")], log=work / "prepare.log"
    )
    sets = [
        "train.epochs=1",
        "train.loss=sampled",
        "model.behavior_head=false",
        "train.valid_users=10000",
        f"train.batch_size={batch_size}",
        f"train.threads={threads}",
    ]
    train_cmd = [*py, "train", str(work / "data"), "--out", str(work / "model")]
    for s in sets:
        train_cmd += ["--set", s]
    res["train"] = run_stage(train_cmd, log=work / "train.log")
    metrics = [json.loads(x) for x in (work / "model" / "metrics.jsonl").read_text().splitlines()]
    res["train"].update(
        {"epoch_s": metrics[-1]["epoch_s"], "events_per_s": metrics[-1]["events_per_s"], "sets": sets}
    )
    eval_json = work / "evaluate.json"
    res["evaluate"] = run_stage(
        [*py, "evaluate", str(work / "model"), "--users", "10000", "--json"], log=eval_json
    )
    res["evaluate"]["metrics"] = json.loads(eval_json.read_text())["metrics"]
    out = work / "retrieve.json"
    res["retrieve"] = run_stage(
        [sys.executable, "-c", RETRIEVE, str(work / "model"), str(ef_search), str(threads)], log=out
    )
    res["retrieve"].update(json.loads(out.read_text().strip().splitlines()[-1]))
    print(json.dumps({name: res}, indent=2), flush=True)
    return res


def markdown(results: dict, args: argparse.Namespace) -> str:
    stages = ("prepare", "train", "evaluate", "retrieve")
    lines = [
        "## Scale",
        "",
        f"- Command: `make bench-scale` (bench/bench_scale.py). Date: {date.today().isoformat()}. "
        f"Machine: {machine()}. torch threads: {args.threads}.",
        "- Data: the synthetic shop log (`nextaction.datasets.synthetic`, seed 0; view/cart/buy funnel) at 1M "
        "events (100k users) and 10M events (1M users), both drawn over a 1M-item catalogue (the items that "
        "occur form the model's catalogue: see the item counts below), written as CSV.",
        "- Stages, each a child process (wall time includes start-up; peak RSS from `wait4`): `prepare`; "
        f"`train` one epoch with sampled softmax (256 shared negatives, logQ; sparse item-table updates), batch {args.batch_size} "
        "sequences, behaviour head off, validation on 10k sampled users; `evaluate --users 10000` (full "
        "ranking over the whole catalogue, exclude_seen off as for multi-behaviour logs); retrieval of the "
        "top-10 for one user at a time over the catalogue (300 users' real states; exact = one bf16 pass over the catalogue, then fp32 rescoring of every item that could be in the top-10, "
        f"FAISS HNSW, inner-product metric, M=32, efConstruction 80, efSearch {args.ef_search}; recall against exact).",
        "",
        "| stage | "
        + " | ".join(f"{n} s" for n in results)
        + " | growth | "
        + " | ".join(f"{n} peak RSS GB" for n in results)
        + " |",
        "|---|" + "---:|" * (2 * len(results) + 1),
    ]
    names = list(results)
    for st in stages:
        secs = [results[n][st]["seconds"] for n in names]
        growth = f"{secs[-1] / secs[0]:.1f}×" if len(secs) > 1 else ""
        rss = [results[n][st]["peak_rss_gb"] for n in names]
        lines.append(
            f"| {st} | "
            + " | ".join(f"{s:,.1f}" for s in secs)
            + f" | {growth} | "
            + " | ".join(f"{r:.2f}" for r in rss)
            + " |"
        )
    total = {n: sum(results[n][st]["seconds"] for st in stages[:3]) for n in names}
    peak = {n: max(results[n][st]["peak_rss_gb"] for st in stages) for n in names}
    lines.append("")
    for n in names:
        r = results[n]
        ret = r["retrieve"]
        lines.append(
            f"- {n}: prepare + train + evaluate {total[n]:,.0f} s, peak RSS {peak[n]:.2f} GB "
            f"(≤ {RSS_LIMIT_GB:.0f} GB: {'met' if peak[n] <= RSS_LIMIT_GB else 'missed'}); training "
            f"{r['train']['events_per_s']:,} events/s (epoch {r['train']['epoch_s']:,.0f} s); test NDCG@10 "
            f"{r['evaluate']['metrics']['NDCG@10']:.4f} / HR@10 {r['evaluate']['metrics']['HR@10']:.4f} after one "
            f"epoch; top-10 over {ret['items']:,} items: exact {ret['exact']['median_ms']:.1f} ms median "
            f"(p95 {ret['exact']['p95_ms']:.1f})"
            + (
                f" and {ret['exact_1M']['median_ms']:.1f} ms over 1,000,000 rows (the trained vectors plus "
                f"jittered copies; target ≤ 20 ms: {'met' if ret['exact_1M']['median_ms'] <= 20 else 'missed'})"
                if "exact_1M" in ret
                else ""
            )
            + f", FAISS {ret['faiss']['median_ms']:.2f} ms (p95 "
            f"{ret['faiss']['p95_ms']:.2f}) at recall@10 {ret['faiss']['recall@10']:.3f} (target ≤ 2 ms at ≥ 0.95: "
            f"{'met' if ret['faiss']['median_ms'] <= 2 and ret['faiss']['recall@10'] >= 0.95 else 'missed'}), index built in "
            f"{ret['faiss']['build_s']:.0f} s."
        )
    if len(names) > 1:
        g = {st: results[names[-1]][st]["seconds"] / results[names[0]][st]["seconds"] for st in stages[:3]}
        ok = all(v <= 10.5 for v in g.values())
        lines.append(
            "- Growth from 1M to 10M events (×10 data): "
            + ", ".join(f"{st} ×{v:.1f}" for st, v in g.items())
            + f" — linear or better: {'met' if ok else 'missed'}."
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--ef-search", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep the cached results of sizes not run now")
    ap.add_argument(
        "--only-retrieve", action="store_true", help="rerun only the retrieval stage (cached models)"
    )
    args = ap.parse_args()
    cached = CACHE / "results.json"
    reuse = args.reuse or args.only_retrieve
    results = json.loads(cached.read_text()) if reuse and cached.is_file() else {}
    for n in args.sizes.split(","):
        if args.only_retrieve:  # the other stages' figures stay as cached
            work = CACHE / f"run-{n}"
            out = work / "retrieve.json"
            r = run_stage(
                [sys.executable, "-c", RETRIEVE, str(work / "model"), str(args.ef_search), str(args.threads)],
                log=out,
            )
            results[n]["retrieve"] = {**r, **json.loads(out.read_text().strip().splitlines()[-1])}
            continue
        results[n] = bench_size(n, batch_size=args.batch_size, ef_search=args.ef_search, threads=args.threads)
    results = {n: results[n] for n in SIZES if n in results}
    cached.write_text(json.dumps(results, indent=2))
    text = markdown(results, args)
    print(text)
    if not args.no_write:
        write_section(text, "## Scale")


if __name__ == "__main__":
    main()
