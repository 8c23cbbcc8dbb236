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
import subprocess
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
    "ijcai15": {
        "label": "IJCAI-15 Tmall fav/cart/buy (../shared/data/ijcai15-mb), test period from 2015-10-20",
        "source": SHARED / "data" / "ijcai15-mb" / "events.csv",
        # The default split's test window is the log's last day, 11 November (Double 11: 82% of users with
        # history buy that day against ~3% a day before it): one day cannot hold rolling windows, and no
        # calibration fitted before it transfers. An earlier cutoff gives three windows, the last one Double 11.
        "args": ["--set", "prepare.split.test_cutoff=2015-10-20"],
        "targets": SHARED / "data" / "ijcai15-mb" / "test_buy.csv",
        "windows": 3,
        # 50 epochs of the 35k-item softmax would take ~45 minutes here: see the training-time note
        "train_sets": ["train.epochs=15"],
        "epoch_cost": True,
        "buy_only_args": ["--set", "prepare.split.valid_cutoff=2015-10-03T16:00:00+00:00"],
    },
    "ijcai15_default": {
        "label": "IJCAI-15 Tmall fav/cart/buy, default split (test window = 11 November, Double 11)",
        "source": SHARED / "data" / "ijcai15-mb" / "events.csv",
        # Defaults throughout: the training-time target's run, and the leave-one-out targets (held-out buys
        # of the log's end) ranked by a model trained up to 10 November, as the literature's models are.
        "args": [],
        "targets": SHARED / "data" / "ijcai15-mb" / "test_buy.csv",
        "buy_only_args": [
            "--set",
            "prepare.split.test_cutoff=2015-11-10T16:00:00+00:00",
            "--set",
            "prepare.split.valid_cutoff=2015-11-07T16:00:00+00:00",
        ],
    },
    "retailrocket": {
        "label": "RetailRocket view/cart/buy (../shared/data/retailrocket-mb)",
        "source": SHARED / "data" / "retailrocket-mb" / "events.csv",
        "args": [],
        "targets": SHARED / "data" / "retailrocket-mb" / "test_buy.csv",
        "windows": 3,
        # the buy-only model's split: the full log's cutoffs, so it learns from the same period's buys
        "buy_only_args": [
            "--set",
            "prepare.split.test_cutoff=2015-09-01T19:12:32+00:00",
            "--set",
            "prepare.split.valid_cutoff=2015-08-15T18:50:58+00:00",
        ],
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
    for s in [*spec.get("train_sets", []), *sets]:
        cmd += ["--set", s]
    print(f"[{name}] training: {' '.join(cmd)}", flush=True)
    _, train_wall, rss = run(cmd)
    config = json.loads((model_dir / "config.json").read_text())
    eval_cmd = [str(BIN), "evaluate", str(model_dir), "--baselines", "--json"]
    if spec.get("windows"):
        eval_cmd += ["--windows", str(spec["windows"])]
    if spec.get("targets"):
        eval_cmd += ["--targets", str(spec["targets"])]
    print(f"[{name}] evaluating: {' '.join(eval_cmd)}", flush=True)
    out, eval_wall, _ = run(eval_cmd)
    result = json.loads(out)
    extra: dict = {}
    if spec.get("targets"):
        extra["buy_only"] = buy_only(name, spec, sets=sets)
    if spec.get("epoch_cost"):
        extra["epoch_cost"] = epoch_cost(model_dir / "data")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "commit": commit.stdout.strip(),
        **extra,
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


def buy_only(name: str, spec: dict, *, sets: list[str]) -> dict:
    """nextaction trained on the buy events alone (what a single-behaviour sequential library sees), same
    temporal cutoff, then ranked on the same leave-one-out targets."""
    model_dir = CACHE / f"beh_{name}_buyonly"
    cmd = [
        str(BIN), "train", str(spec["source"]), *spec["args"], *spec.get("buy_only_args", []),
        "--set", "prepare.behaviors.keep=[\"buy\"]", "--set", "prepare.split.kind=temporal",
        "--out", str(model_dir), "--json",
    ]  # fmt: skip
    for s in [*spec.get("train_sets", []), *sets]:
        cmd += ["--set", s]
    print(f"[{name}] buy-only training: {' '.join(cmd)}", flush=True)
    _, wall, _ = run(cmd)
    out, _, _ = run([str(BIN), "evaluate", str(model_dir), "--targets", str(spec["targets"]), "--json"])
    return {"command": " ".join(cmd).replace(str(ROOT.parent), ".."), "train_wall_s": wall,
            "leave_one_out": json.loads(out)["leave_one_out"]}  # fmt: skip


def epoch_cost(data_dir: Path, *, steps: int = 30, warmup: int = 5) -> dict:
    """Seconds per training step with and without the behaviour head (and its repeat score), same batches,
    default settings, alternating runs in one process: the head's cost as a ratio."""
    import torch

    from nextaction import losses
    from nextaction.batches import gather_padded, length_batches, training_sequences, training_windows
    from nextaction.behavior.candidates import ContemporaryItems, ItemStats
    from nextaction.data.dataset import PreparedDataset
    from nextaction.data.schema import VALID
    from nextaction.device import device_precision
    from nextaction.model import ModelConfig, NextActionModel
    from nextaction.training import loop
    from nextaction.training.state import TrainConfig

    data = PreparedDataset.load(data_dir)
    cfg = TrainConfig()
    dtype = (
        torch.bfloat16 if device_precision(cfg.precision, torch.device("cpu")) == "bf16" else torch.float32
    )
    seqs = training_sequences(data.seqs)
    starts, lengths = training_windows(seqs, 50)
    batches = list(length_batches(lengths, cfg.batch_size, np.random.default_rng(0)))[: warmup + steps]
    nb = len(data.behaviors) - 1
    stats = ItemStats(data.seqs, nb)
    negs = ContemporaryItems(seqs, window=int((np.asarray(data.seqs.split) == VALID).sum()))
    log_q = losses.uniform_log_q(data.n_items)
    out: dict = {}
    for label, head in (("next-item only", False), ("with behaviour head", True)) * 2:
        torch.manual_seed(0)
        mc = ModelConfig(n_items=data.n_items, n_behaviors=nb + 1, behavior_head=head, repeat_score=head)
        model = NextActionModel(mc)
        opt = loop.make_optimizer(model, cfg, sparse=False)
        gen = torch.Generator().manual_seed(0)
        events = 0
        for i, rows in enumerate(batches):
            if i == warmup:
                t0, events = time.perf_counter(), 0
            batch = gather_padded(seqs, starts[rows], lengths[rows])
            loss, n = loop.step_loss(
                model, batch, cfg, log_q, gen, matmul_dtype=dtype,
                behavior_negatives=negs if head else None, item_stats=stats if head else None,
            )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            events += n
        seconds = time.perf_counter() - t0
        out.setdefault(label, []).append({"s_per_step": seconds / steps, "events_per_s": events / seconds})
    plain = statistics.median(r["s_per_step"] for r in out["next-item only"])
    full = statistics.median(r["s_per_step"] for r in out["with behaviour head"])
    return {
        "runs": out,
        "ratio": full / plain,
        "steps": steps,
        "steps_per_epoch": len(starts) // cfg.batch_size,
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


def _ci(m: dict, key: str) -> str:
    lo, hi = m[f"{key}_ci"]
    return f"{m[key]:.4f} [{lo:.4f}, {hi:.4f}]"


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def windows_lines(beh: dict, conv: str) -> list[str]:
    """Rolling windows: pooled figures with CIs, paired differences, and each window's AUC."""
    w = beh.get("windows")
    if not w:
        return []
    nxt = f"next_{conv}"
    pooled, diffs = w["pooled"], w["differences"]
    lines = [
        "",
        f"Rolling origin, {w['k']} windows after one training run ({', '.join(w['protocol']['windows'])}); "
        "pooled, 95% bootstrap intervals over users:",
        "",
        f"| model | {conv} AUC | {conv} GAUC | next-{conv} HR@10 | next-{conv} NDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in pooled.items():
        label = f"**{name}**" if name == "nextaction" else name
        lines.append(
            f"| {label} | {_ci(m[conv], 'AUC')} | {_ci(m[conv], 'GAUC')} | {_ci(m[nxt], 'HR@10')} | "
            f"{_ci(m[nxt], 'NDCG@10')} |"
        )
    lines += [
        "",
        "nextaction − baseline (paired: same users, same candidates, same draws):",
        "",
        f"| baseline | Δ {conv} AUC | Δ {conv} GAUC | Δ next-{conv} NDCG@10 |",
        "|---|---:|---:|---:|",
    ]
    for name, d in diffs.items():
        cells = []
        for section, metric in ((conv, "AUC"), (conv, "GAUC"), (nxt, "NDCG@10")):
            x = d[section][metric]
            cells.append(f"{x['diff']:+.4f} [{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ours = pooled["nextaction"]
    others = [n for n in pooled if n != "nextaction"]
    best_auc = max(others, key=lambda n: pooled[n][conv]["AUC"])
    best_ndcg = max(others, key=lambda n: pooled[n][nxt]["NDCG@10"])
    d_auc = diffs[best_auc][conv]["AUC"]
    gauc_ok = all(diffs[n][conv]["GAUC"]["ci"][0] > 0 for n in others)
    ratio = ours[nxt]["NDCG@10"] / max(pooled[best_ndcg][nxt]["NDCG@10"], 1e-12)
    lines += [
        "",
        f"- Pooled targets: {conv} AUC ≥ best baseline ({best_auc}) + 0.01 with the paired interval above 0: "
        f"{d_auc['diff']:+.4f} [{d_auc['ci'][0]:+.4f}, {d_auc['ci'][1]:+.4f}]: "
        f"{_met(d_auc['diff'] >= 0.01 and d_auc['ci'][0] > 0)}; {conv} GAUC ahead of every baseline with the "
        f"interval above 0: {_met(gauc_ok)}; next-{conv} NDCG@10 ≥ 1.05 × best ({best_ndcg}): ×{ratio:.3f}: "
        f"{_met(ratio >= 1.05)}.",
    ]
    names = list(pooled)
    lines += [
        "",
        f"Each window's {conv} AUC / next-{conv} NDCG@10:",
        "",
        "| window | users | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for win in w["windows"]:
        cells = [
            f"{win['scores'][n][conv]['AUC']:.4f} / {win['scores'][n][nxt]['NDCG@10']:.4f}" for n in names
        ]
        lines.append(f"| {win['window']} | {win['users']:,} | " + " | ".join(cells) + " |")
    return lines


def loo_lines(r: dict) -> list[str]:
    """Leave-one-out next-buy on test_buy.csv: full ranking, and 99 sampled negatives beside."""
    loo = r["result"].get("leave_one_out")
    if not loo:
        return []
    rows = {"**nextaction**": loo, **loo.get("baselines", {})}
    buy_only = r.get("buy_only", {}).get("leave_one_out")
    if buy_only:
        rows["nextaction, buy events only"] = buy_only
    listed = loo["protocol"].get("rows_read", loo["users"])
    lines = [
        "",
        f"Leave-one-out next-buy on `test_buy.csv` ({listed:,} rows; history = every event of the user in "
        "events.csv; seen items kept). Scored users differ where a model's catalogue lacks the item or user, "
        "so the last two columns count every listed row, unscored ones as misses:",
        "",
        "| model | users scored | full HR@10 | full NDCG@10 | 99-neg HR@10 | 99-neg NDCG@10 "
        "| full HR@10, all rows | full NDCG@10, all rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best_hr = best_ndcg = 0.0
    for name, m in rows.items():
        f, smp = m["full"], m["sampled_99"]
        share = m.get("users", loo["users"]) / listed
        lines.append(
            f"| {name} | {m.get('users', loo['users']):,} | {f['HR@10']:.4f} | {f['NDCG@10']:.4f} | "
            f"{smp['HR@10']:.4f} | {smp['NDCG@10']:.4f} | {f['HR@10'] * share:.4f} | {f['NDCG@10'] * share:.4f} |"
        )
        if name != "**nextaction**":
            best_hr = max(best_hr, f["HR@10"] * share)
            best_ndcg = max(best_ndcg, f["NDCG@10"] * share)
    share = loo["users"] / listed
    ours_hr, ours_ndcg = loo["full"]["HR@10"] * share, loo["full"]["NDCG@10"] * share
    lines += [
        "",
        f"- Target (all listed rows): HR@10 and NDCG@10 ≥ 1.1 × the best baseline: HR@10 {ours_hr:.4f} vs "
        f"{best_hr:.4f} (×{ours_hr / max(best_hr, 1e-12):.2f}), NDCG@10 {ours_ndcg:.4f} vs {best_ndcg:.4f} "
        f"(×{ours_ndcg / max(best_ndcg, 1e-12):.2f}): {_met(ours_hr >= 1.1 * best_hr and ours_ndcg >= 1.1 * best_ndcg)}.",
        f"- Skipped rows: {loo['skipped']}.",
    ]
    return lines


def propensity_lines(result: dict) -> list[str]:
    prop = result.get("propensity")
    if not prop:
        return []
    lines = [
        "",
        f"User propensity (does the user do the behaviour at all within {prop['horizon']} of the test cutoff):",
        "",
        "| behaviour | model | AUC ± SD | logloss | ECE | mean p | rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = {"**nextaction**": prop["model"], **prop.get("baselines", {})}
    for b in prop["model"]:
        for name, m in rows.items():
            x = m[b]
            lines.append(
                f"| {b} | {name} | {x['AUC']:.4f} ± {x['AUC_sd']:.3f} | {x['logloss']:.4f} | {x['ECE']:.4f} | "
                f"{x['mean_probability']:.4f} | {x['rate']:.4f} |"
            )
    for b, d in prop.get("difference", {}).items():
        lines.append(
            f"- {b}: nextaction − {d['against']} AUC {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] "
            f"(target ≥ +0.01 with the interval above 0: {_met(d['diff'] >= 0.01 and d['lo'] > 0)}); ECE "
            f"{prop['model'][b]['ECE']:.4f} (target ≤ 0.02: {_met(prop['model'][b]['ECE'] <= 0.02)})."
        )
    return lines


def markdown(results: dict[str, dict]) -> str:
    lines = [
        SECTION,
        "",
        f"- Command: `make bench-behaviors` (bench/bench_behaviors.py). Date: {date.today().isoformat()}. "
        f"Machine: {machine()}. Seeds: training seed 42 (default), evaluation seed 0.",
        "- Protocol (single test window): global temporal split. Per user in the test window: candidates = the "
        "items they touched in it, labelled per behaviour, + 20 negatives per positive sampled by popularity "
        "within the same window (the items other users were active on then; seed 0); history = all events "
        "before the window. Scores of every model are Platt-calibrated per behaviour on the validation window "
        "(same construction); F1 at the threshold that maximises F1 on validation; ECE over 15 equal-width "
        "bins; GAUC = per-user AUC weighted by candidates; ± SD = the AUC's standard deviation over "
        f"{AUC_BOOTSTRAP_DRAWS} bootstrap resamples of the test window's users. Next-buy by order: each test "
        "user's first order of the conversion behaviour (every item done at the first such moment is "
        "relevant: HR = any in the top 10, NDCG with several relevant items), ranked against the whole "
        "catalogue (history = all events before it, seen items kept, ties pessimistic).",
        "- Rolling origin (`evaluate --windows 3`): the test period cut into 3 windows of about equal event "
        "counts; one training run; each window's histories and item statistics are every event before its "
        "start; fitting and calibration once, on the validation window. Pooled = all windows' candidates "
        f"together; intervals: {AUC_BOOTSTRAP_DRAWS} bootstrap resamples of users (a user's candidates of every "
        "window together), percentile 95%; differences paired.",
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
            f"Code: commit {r.get('commit', '?')}. Command: `{r['command']}`, then `nextaction evaluate MODEL "
            "--baselines --json"
            + (f" --windows {spec['windows']}" if spec.get("windows") else "")
            + (" --targets test_buy.csv" if spec.get("targets") else "")
            + "`",
            "",
            "Single test window:",
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
        lines += windows_lines(beh, conv)
        lines += loo_lines(r)
        lines += propensity_lines(r["result"])
        lat = r["latency"]
        p = beh["protocol"]
        lines += [
            "",
            f"- Single window: {conv} AUC {ours_auc:.4f} vs best baseline {best_auc:.4f}; next-{conv} NDCG@10 "
            f"{ours_ndcg:.4f} vs {best_ndcg:.4f} (×{ours_ndcg / max(best_ndcg, 1e-12):.2f}); ECE ≤ 0.02 "
            f"({', '.join(f'{b} {e:.4f}' for b, e in eces.items())}: {_met(max(eces.values()) <= 0.02)}).",
            f"- Test window: {p['users']:,} users, {p['candidates_total']:,} candidates; next-{conv}: "
            f"{beh[target]['users']:,} users, {beh[target].get('items_per_order', 1.0):.2f} items per order.",
            f"- Training: {r['train_loop_s']:.0f} s loop ({r['train_loop_s'] / 60:.1f} min; "
            + (
                f"{r['train_wall_s']:.0f} s wall with preparation, calibration and propensity; peak RSS "
                f"{r['peak_rss_mib']:,} MiB"
                if r.get("peak_rss_mib")
                else "wall time and peak RSS not recorded: the run's bench process was stopped after training"
            )
            + f"), {r['epochs']} epochs, best epoch {r['best_epoch']}. `evaluate`: {r['eval_wall_s']:.0f} s wall.",
            f"- `Predictor.predict` with 100 candidates: median {lat['median_ms']:.2f} ms, p95 "
            f"{lat['p95_ms']:.2f} ms over {lat['calls']} calls (histories of {lat['mean_history']:.0f} events "
            f"on average; target ≤ 10 ms: {_met(lat['median_ms'] <= 10)}).",
        ]
        cost = r.get("epoch_cost")
        if cost:
            plain = statistics.median(x["s_per_step"] for x in cost["runs"]["next-item only"])
            full = statistics.median(x["s_per_step"] for x in cost["runs"]["with behaviour head"])
            lines.append(
                f"- Cost of the behaviour head (+ repeat score), same batches, default settings, alternating "
                f"runs in one process: {full:.3f} s vs {plain:.3f} s per step next-item only (×{cost['ratio']:.2f}; "
                f"target ≤ ×1.5: {_met(cost['ratio'] <= 1.5)}); {cost['steps_per_epoch']} steps per epoch, so "
                f"a default 50-epoch run costs ≈ {50 * cost['steps_per_epoch'] * full / 60:.0f} min of steps "
                "before validation."
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="ijcai15,retailrocket,ml100k")
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
