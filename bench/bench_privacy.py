"""Benchmark of private training (`make bench-privacy`): BENCHMARKS.md "Privacy".

For each data set and item design it trains, as fresh child processes:
- the non-private model (ε = ∞) with the same held-out users as the private ones (`train.holdout_users`),
  so that every model of a row learns from the same people;
- a reference model that holds out twice as many users (the calibrated membership attack's reference);
- user-level DP-SGD models at each ε (`--set privacy.epsilon=E`, δ = 1 / training users);
then reads each model's full-ranking test metrics (leave-one-out, every user), the popularity baseline, and
runs `nextaction audit MODEL --reference REF` (loss and calibrated attacks on members against held-out users).

Designs: `id` (ID embeddings: the item table is noised), `text` (`model.fusion=text`: items are the frozen
text encoder's vectors through a learned projection, so only the transformer and the projection are noised;
Beauty only, which has item text).

    python bench/bench_privacy.py [--datasets beauty,ml100k] [--eps 1,2,4,8,16] [--designs id,text]
                                  [--reuse] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

from bench_model import BIN, SHARED, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "privacy"
SECTION = "## Privacy"
BEAUTY = SHARED / "data" / "amazon-beauty-s3rec"
SOURCES = {
    "beauty": [str(BEAUTY / "Beauty.txt"), "--format", "sequences"],
    "ml100k": [str(SHARED / "data" / "movielens-100k"), "--format", "movielens"],
}
DESIGNS = {
    "id": [],
    "text": ["--items", str(BEAUTY / "item_text.tsv"), "--set", "model.fusion=text"],
}
# Per data set: held-out users (non-members and validation users) and users per private step. MovieLens-100k
# has 943 users: 100 held out, and a quarter of the rest per step.
SETTINGS = {
    "beauty": {"holdout": 1000, "users_per_step": 1024},
    "ml100k": {"holdout": 100, "users_per_step": 256},
}
# Private runs: a 20-epoch schedule (σ is calibrated for it) with a 20-step warm-up (an epoch is ~21 steps on
# Beauty: the default 100-step warm-up would take a quarter of the run); the non-private model keeps its defaults.
PRIVATE_SETS = ["train.epochs=20", "train.warmup_steps=20"]


def train(name: str, args: list[str], *, reuse: bool) -> dict:
    out = CACHE / name
    meta = out / "bench.json"
    if reuse and meta.exists():
        return json.loads(meta.read_text())
    cmd = [str(BIN), "train", *args, "--out", str(out), "--json"]
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    stdout, wall, rss = run(cmd)
    result = json.loads(stdout)
    config = json.loads((out / "config.json").read_text())
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    record = {
        "metrics": result["metrics"],
        "protocol": result["protocol"],
        "privacy": config.get("privacy"),
        "train_wall_s": round(wall, 1),
        "epoch_s_median": statistics.median(e["epoch_s"] for e in epochs),
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "peak_rss_mib": rss,
        "command": " ".join(["nextaction", *cmd[1:]]).replace(str(ROOT.parent), ".."),
        "date": date.today().isoformat(),
    }
    meta.write_text(json.dumps(record, indent=2))
    return record


def audit(name: str, reference: str, *, reuse: bool) -> dict:
    path = CACHE / name / "audit.json"
    if reuse and path.exists():
        return json.loads(path.read_text())
    stdout, _, _ = run(
        [str(BIN), "audit", str(CACHE / name), "--reference", str(CACHE / reference), "--json"]
    )
    result = json.loads(stdout)
    path.write_text(json.dumps(result, indent=2))
    return result


def popularity(name: str, *, reuse: bool) -> dict:
    path = CACHE / name / "baselines.json"
    if reuse and path.exists():
        return json.loads(path.read_text())
    stdout, _, _ = run([str(BIN), "evaluate", str(CACHE / name), "--baselines", "--json"])
    result = json.loads(stdout)["baselines"]
    path.write_text(json.dumps(result, indent=2))
    return result


def bench(dataset: str, design: str, eps: list[float], *, reuse: bool, cached_only: bool = False) -> dict:
    if cached_only:  # report the runs already measured, train none
        eps = [e for e in eps if (CACHE / dataset / design / f"eps{e:g}" / "bench.json").exists()]
    s = SETTINGS[dataset]
    base = [*SOURCES[dataset], *DESIGNS[design], "--set", f"train.holdout_users={s['holdout']}"]
    key = f"{dataset}/{design}"
    rows: dict[str, dict] = {"inf": train(f"{key}/inf", base, reuse=reuse)}
    ref_args = [*SOURCES[dataset], *DESIGNS[design], "--set", f"train.holdout_users={2 * s['holdout']}"]
    train(f"{key}/reference", ref_args, reuse=reuse)
    for e in eps:
        args = [
            *base,
            "--set",
            f"privacy.epsilon={e:g}",
            "--set",
            f"privacy.users_per_step={s['users_per_step']}",
        ]
        args += [x for p in PRIVATE_SETS for x in ("--set", p)]
        rows[f"{e:g}"] = train(f"{key}/eps{e:g}", args, reuse=reuse)
    for tag in rows:
        rows[tag]["audit"] = audit(
            f"{key}/{'inf' if tag == 'inf' else 'eps' + tag}", f"{key}/reference", reuse=reuse
        )
    return {"rows": rows, "popularity": popularity(f"{key}/inf", reuse=reuse)["most-popular"]}


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "Protocol: full-ranking leave-one-out test metrics over every user (the held-out users included: their "
        "test targets are predicted from their histories like anyone's); the models of a row learn from the "
        "same users (`train.holdout_users` held out of all of them). Private models: user-level DP-SGD "
        "(privacy/dp.py), δ = 1 / training users, RDP accountant (Opacus), σ calibrated for a 20-epoch "
        "schedule, ε the spent budget of the steps actually taken. Membership inference (`nextaction audit`): "
        "the held-out users against as many trained-on users that the reference model (twice the held-out "
        "users) never saw; AUC 0.5 = no leak, and an AUC below 0.5 leaks as much as its mirror above (an attacker "
        "who knows the direction flips the score). MovieLens-100k holds out 100 users (943 in all), so its attacks "
        "compare 100 users with 100 and their intervals are wide; its ε = 1, 2, 4 runs stopped early (spent ε below "
        "the target).",
        "",
        "| data | design | ε | NDCG@10 | HR@10 | vs non-private (same design) | vs non-private ID | vs popularity "
        "| σ | steps | epoch | loss attack AUC | calibrated AUC | TPR@1%FPR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        dataset, design = key.split("/")
        ref = r["rows"]["inf"]["metrics"]["NDCG@10"]
        id_ref = results.get(f"{dataset}/id", r)["rows"]["inf"]["metrics"]["NDCG@10"]
        pop = r["popularity"]["NDCG@10"]
        if design == "id" or f"{dataset}/id" not in results:
            lines.append(
                f"| {dataset} | most popular | — | {pop:.4f} | {r['popularity']['HR@10']:.4f} | | "
                f"{pop / id_ref:.2f} | 1.00 | | | | | | |"
            )
        for tag, row in r["rows"].items():
            m, p, a = row["metrics"], row.get("privacy") or {}, row["audit"]["attacks"]
            eps = "∞" if tag == "inf" else f"{p['epsilon']:.2f}"
            noise = f"{p['noise_multiplier']:.3g} | {p['steps']}" if p else "— | —"
            lines.append(
                f"| {dataset} | {design} | {eps} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} | "
                f"{m['NDCG@10'] / ref:.2f} | {m['NDCG@10'] / id_ref:.2f} | {m['NDCG@10'] / pop:.2f} | "
                f"{noise} | {row['epoch_s_median']:.1f} s | "
                f"{a['loss']['auc']:.3f} {a['loss']['auc_ci95']} | {a['calibrated']['auc']:.3f} | "
                f"{max(a['loss']['tpr_at_1pct_fpr'], a['calibrated']['tpr_at_1pct_fpr']):.3f} |"
            )
    lines.append("")
    for key, r in results.items():
        for tag, row in r["rows"].items():
            lines.append(
                f"- {key} ε={tag}: `{row['command']}` ({row['date']}, {row['train_wall_s'] / 60:.1f} min)"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="beauty,ml100k")
    ap.add_argument("--designs", default="id,text")
    ap.add_argument("--eps", default="1,2,4,8,16")
    ap.add_argument("--reuse", action="store_true", help="keep the runs already measured")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--cached-only", action="store_true", help="report the runs already measured, train none")
    args = ap.parse_args()
    eps = [float(e) for e in args.eps.split(",") if e]
    t0 = time.perf_counter()
    results = {}
    for dataset in args.datasets.split(","):
        for design in args.designs.split(","):
            if design == "text" and dataset != "beauty":
                continue  # item text: Beauty's
            done = [CACHE / dataset / design / tag / "bench.json" for tag in ("inf", "reference")]
            if args.cached_only and not all(p.exists() for p in done):
                continue
            results[f"{dataset}/{design}"] = bench(
                dataset, design, eps, reuse=args.reuse or args.cached_only, cached_only=args.cached_only
            )
    text = "\n".join([
        SECTION, "",
        f"Machine: {machine()}. Written {date.today().isoformat()} ({(time.perf_counter() - t0) / 60:.0f} min of runs "
        "in this call; earlier runs reused per model). Seeds: training 42, noise 42 × 7919 + 1, audit 0.",
        "", markdown(results),
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
