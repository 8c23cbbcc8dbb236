"""Benchmark of behaviour prediction (`make bench-behaviors`): P(view/cart/buy …) and next-buy ranking.

For each multi-behaviour dataset it runs, as fresh child processes, what a user runs:

    nextaction train SOURCE [--format F] [--set prepare…] --out MODEL --json   (default settings)
    nextaction evaluate MODEL --baselines --json                               (model + baselines, same code)

then times ``Predictor.predict`` for 100 candidates in this process (median of many calls, after warm-up)
and writes the "Behaviour prediction" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from bench_model import BIN, CACHE, SHARED, machine, run, write_section

from nextaction.evaluation.metrics import AUC_BOOTSTRAP_DRAWS

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Behaviour prediction"

DATASETS = {
    "retailrocket": {
        "label": "RetailRocket view/cart/buy (../shared/data/retailrocket-mb)",
        "source": SHARED / "data" / "retailrocket-mb" / "events.csv",
        "args": [],
    },
    "ml100k": {
        "label": "MovieLens-100k, rating ≥ 4 → like, else watch",
        "source": SHARED / "data" / "movielens-100k",
        "args": ["--format", "movielens", "--set", "prepare.behaviors.value_rule=value>=4:like,else:watch"],
    },
}
PROB_KEYS = ["AUC", "GAUC", "logloss", "ECE", "F1"]


def bench_dataset(name: str, spec: dict, *, sets: list[str]) -> dict:
    model_dir = CACHE / f"beh_{name}"
    cmd = [str(BIN), "train", str(spec["source"]), *spec["args"], "--out", str(model_dir), "--json"]
    for s in sets:
        cmd += ["--set", s]
    print(f"[{name}] training: {' '.join(cmd)}", flush=True)
    _, train_wall, rss = run(cmd)
    config = json.loads((model_dir / "config.json").read_text())
    eval_cmd = [str(BIN), "evaluate", str(model_dir), "--baselines", "--json"]
    print(f"[{name}] evaluating: {' '.join(eval_cmd)}", flush=True)
    out, eval_wall, _ = run(eval_cmd)
    result = json.loads(out)
    return {
        "command": " ".join(cmd).replace(str(ROOT.parent), ".."),
        "train_wall_s": train_wall,
        "train_loop_s": config["train_seconds"],
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "peak_rss_mib": rss,
        "eval_wall_s": eval_wall,
        "result": result,
        "latency": predict_latency(model_dir),
    }


def predict_latency(model_dir: Path, *, n_candidates: int = 100, calls: int = 300) -> dict:
    """Median / p95 milliseconds of Predictor.predict(history, 100 item ids) over real users' histories."""
    from nextaction import Predictor

    p = Predictor.load(model_dir)
    users = p.data.users["user_id"].to_list()
    items = p.data.items["item_id"].to_list()
    rng = np.random.default_rng(0)
    histories = [p.history(u, split="all") for u in rng.choice(users, size=50)]
    candidates = [list(rng.choice(items, size=n_candidates, replace=False)) for _ in range(50)]
    for i in range(20):  # warm-up: allocator, thread pool, first-call dispatch
        p.predict(histories[i % 50], candidates[i % 50])
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        p.predict(histories[i % 50], candidates[i % 50])
        times.append((time.perf_counter() - t0) * 1000)
    lengths = [min(len(h), p.model.cfg.max_len) for h in histories]
    return {
        "median_ms": statistics.median(times),
        "p95_ms": float(np.percentile(times, 95)),
        "calls": calls,
        "mean_history": float(np.mean(lengths)),
    }


def _fmt(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def markdown(results: dict[str, dict]) -> str:
    lines = [
        SECTION,
        "",
        f"- Command: `make bench-behaviors` (bench/bench_behaviors.py). Date: {date.today().isoformat()}. "
        f"Machine: {machine()}.",
        "- Protocol: global temporal split (last 10% of events → test window, the 10% before → validation "
        "window). Per user in the test window: candidates = the items they touched in it, labelled per "
        "behaviour, + 20 negatives per positive sampled by popularity within the same window (the items other "
        "users were active on then; seed 0); history = all events before the window. Scores of every model are Platt-calibrated per behaviour on the validation window "
        "(same construction); F1 at the threshold that maximises F1 on validation; ECE over 15 equal-width "
        "bins; GAUC = per-user AUC weighted by candidates; ± SD = the AUC's standard deviation over "
        f"{AUC_BOOTSTRAP_DRAWS} bootstrap resamples of the test window's users (how precisely one window measures it). Next-buy: each test user's first event of the "
        "conversion behaviour, ranked against the whole catalogue (history = all events before it, seen items "
        "kept, ties pessimistic).",
        "- Baselines, measured in the same run by the same code: popularity per behaviour; repeat-recent "
        "(recency-weighted own history); logreg and gbm (scikit-learn) on hand-made features (counts per "
        "behaviour on the item, recency, item popularity and conversion rates, user activity), fitted on the "
        "validation window. Next-buy for logreg/gbm: history items ∪ 100 most-converted items re-ranked.",
        "",
    ]
    for name, r in results.items():
        spec = DATASETS[name]
        beh = r["result"]["behaviors"]
        names = [b for b, v in beh.items() if isinstance(v, dict) and "AUC" in v]
        target = next(k for k in beh if k.startswith("next_"))
        conv = target[len("next_") :]
        rows = {"**nextaction**": beh, **beh.get("baselines", {})}
        lines += [
            f"### {spec['label']}",
            "",
            f"Command: `{r['command']}`",
            "",
            f"| model | {conv} AUC ± SD | {conv} GAUC | {conv} logloss | {conv} ECE | {conv} F1 | next-{conv} HR@10 "
            f"| next-{conv} NDCG@10 |",
            "|---|" + "---:|" * 7,
        ]
        for label, m in rows.items():
            c, nx = m[conv], m[target]
            auc_sd = f" ± {c['AUC_sd']:.3f}" if "AUC_sd" in c else ""
            lines.append(
                f"| {label} | {_fmt(c['AUC'])}{auc_sd} | "
                + " | ".join(_fmt(c[k]) for k in PROB_KEYS[1:])
                + f" | {_fmt(nx['HR@10'])} | {_fmt(nx['NDCG@10'])} |"
            )
        base = beh.get("baselines", {})
        best_auc = max(m[conv]["AUC"] for m in base.values())
        best_ndcg = max(m[target]["NDCG@10"] for m in base.values())
        ours_auc, ours_ndcg = beh[conv]["AUC"], beh[target]["NDCG@10"]
        eces = {b: beh[b]["ECE"] for b in names}
        lines += [
            "",
            "nextaction, every behaviour:",
            "",
            "| behaviour | positives | AUC | GAUC | logloss | ECE | accuracy | precision | recall | F1 |",
            "|---|---:|" + "---:|" * 8,
        ]
        for b in names:
            m = beh[b]
            lines.append(
                f"| {b} | {m['positives']:,} | "
                + " | ".join(
                    _fmt(m[k])
                    for k in ("AUC", "GAUC", "logloss", "ECE", "accuracy", "precision", "recall", "F1")
                )
                + " |"
            )
        lat = r["latency"]
        p = beh["protocol"]
        lines += [
            "",
            f"- Targets: {conv} AUC ≥ best baseline + 0.02 ({ours_auc:.4f} vs {best_auc:.4f}: "
            f"{'met' if ours_auc >= best_auc + 0.02 else 'missed'}); next-{conv} NDCG@10 ≥ 1.1 × best "
            f"baseline ({ours_ndcg:.4f} vs {best_ndcg:.4f}: "
            f"{'met' if ours_ndcg >= 1.1 * best_ndcg else 'missed'}); ECE ≤ 0.02 "
            f"({', '.join(f'{b} {e:.4f}' for b, e in eces.items())}: "
            f"{'met' if max(eces.values()) <= 0.02 else 'missed'}).",
            f"- Test window: {p['users']:,} users, {p['candidates_total']:,} candidates; next-{conv}: "
            f"{beh[target]['users']:,} users.",
            f"- Training: {r['train_loop_s']:.0f} s loop ({r['train_wall_s']:.0f} s wall with preparation and "
            f"evaluation), {r['epochs']} epochs, best epoch {r['best_epoch']}; peak RSS {r['peak_rss_mib']:,} MiB. "
            f"`evaluate --baselines`: {r['eval_wall_s']:.0f} s wall.",
            f"- `Predictor.predict` with 100 candidates: median {lat['median_ms']:.2f} ms, p95 "
            f"{lat['p95_ms']:.2f} ms over {lat['calls']} calls (histories of {lat['mean_history']:.0f} events "
            "on average; target ≤ 10 ms: " + ("met" if lat["median_ms"] <= 10 else "missed") + ").",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="retailrocket,ml100k")
    ap.add_argument("--set", action="append", default=[], help="extra --set for training")
    ap.add_argument("--reuse", action="store_true", help="reuse results.json of an earlier run (no training)")
    args = ap.parse_args()
    names = [n for n in args.datasets.split(",") if n]
    missing = [n for n in names if not DATASETS[n]["source"].exists()]
    if missing:
        sys.exit(f"datasets not found under {SHARED / 'data'}: {', '.join(missing)}")
    path = CACHE / "behaviors.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if args.reuse else {}
    for n in names:
        if n not in results:
            results[n] = bench_dataset(n, DATASETS[n], sets=args.set)
            path.write_text(json.dumps(results, indent=2))
    text = markdown({n: results[n] for n in names})
    print(text)
    write_section(text, SECTION)


if __name__ == "__main__":
    main()
