"""Benchmark of explanations (`make bench-explain`): latency and faithfulness on Amazon Beauty.

Uses the Beauty model that `make bench` trains (bench/.cache/models/beauty) and writes the "Explanations"
section of BENCHMARKS.md.

- Latency: ``Predictor.explain(history, item)`` over the last 50 events of every user with at least 50,
  explaining their top-1 recommendation; median and p95 after warm-up, on one thread and on torch's default.
- Faithfulness (a deletion test): for test users with at least 4 events before their test target, remove
  the top-3 events by an attribution from the history and compare the drop of the recommended item's score
  with the drop when 3 random events are removed (seed fixed). An attribution is faithful when the events it
  ranks first are the ones the prediction really depends on.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from datetime import date

import numpy as np
import polars as pl
import torch
from bench_model import CACHE, SHARED, machine, write_section

from nextaction import Predictor
from nextaction import explain as ex
from nextaction.batches import from_lists
from nextaction.scoring import score_histories

SECTION = "## Explanations"
MODEL = CACHE / "beauty"
ITEM_TEXT = SHARED / "data" / "amazon-beauty-s3rec" / "item_text.tsv"


def latency(p: Predictor, histories: list[list[dict]], targets: list[str], *, rounds: int = 4) -> dict:
    """Median / p95 ms of explain (occlusion and rollout) and similar, at the current thread count."""
    out: dict[str, dict[str, float]] = {}
    calls = {
        "occlusion": lambda h, t: p.explain(h, t),
        "rollout": lambda h, t: p.explain(h, t, method="rollout"),
        "similar (k=10)": lambda h, t: p.similar(t, k=10),
    }
    for name, call in calls.items():
        for h, t in zip(histories[:10], targets[:10], strict=True):  # warm-up
            call(h, t)
        times = []
        for _ in range(rounds):
            for h, t in zip(histories, targets, strict=True):
                t0 = time.perf_counter()
                call(h, t)
                times.append((time.perf_counter() - t0) * 1000)
        out[name] = {
            "median_ms": statistics.median(times),
            "p95_ms": float(np.percentile(times, 95)),
            "calls": len(times),
        }
    return out


def ranks_and_scores(p: Predictor, histories: list[list[dict]], item: int, seen: np.ndarray) -> tuple:
    """The item's score and rank (1 = best; seen items excluded, as recommend does) after each history."""
    encoded = [p.encode(h) for h in histories]
    batch = from_lists(*(list(a) for a in zip(*encoded, strict=True)), p.model.cfg.max_len)
    with torch.no_grad():
        s = score_histories(p.model, batch).double().numpy()  # (R, n_items + 1)
    s[:, 0] = -np.inf
    s[:, seen] = -np.inf
    target = s[:, item]
    return target, 1 + (s > target[:, None]).sum(axis=1)  # ties count in the item's favour


def all_triples(p: Predictor, history: list[dict], item: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Every 3-event removal and the item's score drop for each (one batched pass, the item alone)."""
    triples = list(itertools.combinations(range(len(history)), 3))
    kept = [history, *([e for i, e in enumerate(history) if i not in t] for t in triples)]
    encoded = [p.encode(h) for h in kept]
    batch = from_lists(*(list(a) for a in zip(*encoded, strict=True)), p.model.cfg.max_len)
    s = ex.next_item_scorer(p.model, item)(batch)
    return triples, s[0] - s[1:]


def sampled_triples(
    p: Predictor, history: list[dict], item: int, rng: np.random.Generator, n: int = 64
) -> np.ndarray:
    """The item's score drop for ``n`` random 3-event removals (one batched pass): the expected random drop."""
    triples = [rng.choice(len(history), size=3, replace=False) for _ in range(n)]
    kept = [history, *([e for i, e in enumerate(history) if i not in set(t.tolist())] for t in triples)]
    encoded = [p.encode(h) for h in kept]
    batch = from_lists(*(list(a) for a in zip(*encoded, strict=True)), p.model.cfg.max_len)
    s = ex.next_item_scorer(p.model, item)(batch)
    return s[0] - s[1:]


def faithfulness(p: Predictor, n_users: int, *, seed: int = 0, exact_upto: int = 12) -> dict:
    """Deletion test on Beauty test users: top-3 by occlusion / rollout vs 3 random events.

    For users with at most ``exact_upto`` events the chance of beating a random draw is also computed
    exactly, over every 3-event subset, beside the best any choice of 3 events could do (the ceiling).
    """
    rng = np.random.default_rng(seed)
    users = p.data.users["user_id"].to_list()
    rows = []
    for u in rng.permutation(len(users)):
        history = p.history(users[u], split="test")
        if len(history) < 4:
            continue
        item = p.recommend(history, k=1)[0][0]
        idx = p._item_idx[item]
        seen, _, _ = p.encode(history)
        top3 = {
            "occlusion": {c[0] for c in p.explain(history, item, top=3).contributions},
            "rollout": {c[0] for c in p.explain(history, item, method="rollout", top=3).contributions},
        }
        removals = {**top3, "random": {int(i) for i in rng.choice(len(history), size=3, replace=False)}}
        variants = [history] + [[e for i, e in enumerate(history) if i not in r] for r in removals.values()]
        scores, ranks = ranks_and_scores(p, variants, idx, seen)
        row: dict = {"n": len(history), "rank0": int(ranks[0])}
        for k, name in enumerate(removals, 1):
            row[f"drop_{name}"] = float(scores[0] - scores[k])
            row[f"rankdrop_{name}"] = int(ranks[k] - ranks[0])
        for name, chosen in top3.items():
            row[f"same_{name}"] = chosen == removals["random"]
        if len(history) <= exact_upto:
            triples, drops = all_triples(p, history, idx)
            for name, chosen in top3.items():
                row[f"exact_{name}"] = float(np.mean(drops[triples.index(tuple(sorted(chosen)))] > drops))
            row["exact_ceiling"] = float(np.mean(drops.max() > drops))
        else:
            drops = sampled_triples(p, history, idx, rng)
        # the expected effect of removing 3 random events (exact mean over all triples, or 64 sampled)
        for name in top3:
            row[f"beats_mean_{name}"] = row[f"drop_{name}"] > float(np.mean(drops))
        rows.append(row)
        if len(rows) == n_users:
            break
    df = pl.DataFrame(rows)
    out: dict = {"users": df.height, "rank0_is_1": float((df["rank0"] == 1).mean()), "groups": {}}
    for label, sub in (("all (≥ 4 events)", df), ("≥ 8 events", df.filter(pl.col("n") >= 8))):
        g: dict = {"users": sub.height, "median_events": float(sub["n"].median())}
        for name in ("occlusion", "rollout"):
            beats = sub[f"drop_{name}"] > sub["drop_random"]
            differ = ~sub[f"same_{name}"]
            g[name] = {
                "beats_random": float(beats.mean()),
                "same_set": float(sub[f"same_{name}"].mean()),
                "beats_random_differ": float((beats & differ).sum() / max(1, differ.sum())),
                "beats_mean_random": float(sub[f"beats_mean_{name}"].mean()),
                "median_drop": float(sub[f"drop_{name}"].median()),
                "median_rank_drop": float(sub[f"rankdrop_{name}"].median()),
            }
        g["random"] = {
            "median_drop": float(sub["drop_random"].median()),
            "median_rank_drop": float(sub["rankdrop_random"].median()),
        }
        out["groups"][label] = g
    small = df.filter(pl.col("n") <= exact_upto)
    out["exact"] = {
        "upto": exact_upto,
        "users": small.height,
        **{name: float(small[f"exact_{name}"].mean()) for name in ("occlusion", "rollout", "ceiling")},
    }
    return out


def example(p: Predictor, user: str) -> str:
    """One explanation sentence with Beauty's titles, for the record."""
    history = p.history(user, split="test")
    item = p.recommend(history, k=1)[0][0]
    return f"user {user}, {len(history)} events, top-1 {item} (“{p.titles.get(item, item)}”): {p.explain(history, item).sentence}"


def markdown(lat: dict, faith: dict, sentence: str, threads_note: str) -> str:
    lines = [
        SECTION,
        "",
        f"- Command: `make bench-explain` (bench/bench_explain.py). Date: {date.today().isoformat()}. "
        f"Machine: {machine()}. {threads_note}",
        "- Model: the Beauty model of `make bench` (bench/.cache/models/beauty: dim 64, 2 layers, 12,101 items, "
        "max_len 50).",
        "- Latency protocol: `Predictor.explain(history, item)` (the whole call: encoding, one batched forward "
        "pass of 51 rows plus one per repeated item, sorting, the sentence, similar history items) over the "
        "last 50 events of each of the "
        f"{lat['histories']} users with ≥ 50 events, explaining their top-1 recommendation; "
        "10 warm-up calls, then 4 rounds over all histories.",
        "",
        "| call | threads | median ms | p95 ms | calls | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for threads, res in lat["runs"].items():
        for name, r in res.items():
            call = name if name.startswith("similar") else f"explain, {name}"
            target = ""
            if name == "occlusion":
                target = "≤ 20 ms: " + ("met" if r["median_ms"] <= 20 else "missed")
            lines.append(
                f"| {call} | {threads} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['calls']} | {target} |"
            )
    lines += [
        "",
        "- Faithfulness protocol (deletion test): "
        f"{faith['users']} Beauty test users drawn at random (seed 0) among those with ≥ 4 events before "
        "their test target; history = those events (`p.history(user, 'test')`); item = the user's top-1 "
        "recommendation (seen items excluded). Remove the top-3 events of an attribution (occlusion, or "
        "attention rollout) and, separately, 3 events drawn uniformly at random (same seed stream); "
        "*beats random* = the share of users for whom the item's score falls more without the top-3 than "
        "without the random 3 (strictly; when the random draw is the top-3 set itself, the two tie and the "
        "user counts as a failure: *same set* gives how often). *Beats the mean random removal*: the top-3 "
        "removal lowers the score more than removing 3 random events does on average (the exact mean over "
        "every 3-subset for histories of ≤ 12 events, else over 64 random 3-subsets), which removes the "
        "luck of a single draw. Rank = the item's rank over the whole "
        "catalogue, seen items excluded as in `recommend`, 1 before any removal; rank drop = rank after − rank before.",
        "",
        "| users | attribution | beats random | same set as random | beats random, sets differ | "
        "beats the mean random removal | "
        "median score drop | median rank drop | random: median score drop | random: median rank drop | "
        "target (≥ 90%) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, g in faith["groups"].items():
        for name in ("occlusion", "rollout"):
            r = g[name]
            target = ""
            if name == "occlusion" and label.startswith("all"):
                target = (
                    f"one draw: {'met' if r['beats_random'] >= 0.9 else 'missed'}; "
                    f"mean: {'met' if r['beats_mean_random'] >= 0.9 else 'missed'}"
                )
            lines.append(
                f"| {label}: {g['users']} (median {g['median_events']:.0f} events) | {name} | "
                f"{r['beats_random']:.1%} | {r['same_set']:.1%} | {r['beats_random_differ']:.1%} | "
                f"{r['beats_mean_random']:.1%} | "
                f"{r['median_drop']:.2f} | {r['median_rank_drop']:.0f} | {g['random']['median_drop']:.2f} | "
                f"{g['random']['median_rank_drop']:.0f} | {target} |"
            )
    x = faith["exact"]
    lines += [
        "",
        f"Exact chance of beating a uniformly random 3-event removal (every 3-subset scored), for the "
        f"{x['users']} of these users with ≤ {x['upto']} events: occlusion top-3 {x['occlusion']:.1%}, "
        f"rollout top-3 {x['rollout']:.1%}, and the ceiling — the best 3 events found by trying every "
        f"subset — {x['ceiling']:.1%}. With 4 events a random draw is the chosen set itself 1 time in 4 "
        "(with 5, 1 in 10), which caps what any attribution can reach on short histories.",
        "",
        f"- Top-1 recommendation at rank 1 before removal for {faith['rank0_is_1']:.1%} of users (ties in "
        "the item's favour), as it should be.",
        f"- Example (titles from item_text.tsv): {sentence}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=5000, help="test users in the faithfulness test")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = ap.parse_args()
    if not (MODEL / "config.json").is_file():
        sys.exit(f"no Beauty model at {MODEL}: run `make bench` first")
    p = Predictor.load(MODEL)
    if ITEM_TEXT.is_file():
        t = pl.read_csv(ITEM_TEXT, separator="\t", quote_char=None, infer_schema_length=0)
        p.titles = dict(
            zip(t["item_id"].to_list(), t["idgenrec_text_id"].fill_null("").to_list(), strict=True)
        )

    users = p.data.users["user_id"].to_list()
    histories = [h[-50:] for h in (p.history(u, split="all") for u in users) if len(h) >= 50]
    targets = [p.recommend(h, k=1)[0][0] for h in histories]
    default_threads = torch.get_num_threads()
    runs = {}
    for threads in dict.fromkeys([1, default_threads]):
        torch.set_num_threads(threads)
        runs[threads] = latency(p, histories, targets)
        print(f"latency, {threads} thread(s): {runs[threads]}", flush=True)
    torch.set_num_threads(1)
    omp = os.environ.get("OMP_NUM_THREADS")
    threads_note = (
        f"Run with OMP_NUM_THREADS={omp}, so torch's default thread count "
        f"was {default_threads}; without it the table also has a row for all cores."
        if omp
        else f"torch's default: {default_threads} threads."
    )
    lat = {"histories": len(histories), "runs": runs}

    t0 = time.perf_counter()
    faith = faithfulness(p, args.users)
    print(f"faithfulness ({time.perf_counter() - t0:.0f} s): {faith}", flush=True)
    text = markdown(lat, faith, example(p, users[0]), threads_note)
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
