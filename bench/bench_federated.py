"""Benchmark of federated training (part of `make bench-privacy`): BENCHMARKS.md "Federated".

On Amazon Beauty, as fresh child processes, one after the other:
- the centralised model of the same events: `nextaction train` with the federation's held-out users
  (`train.holdout_users`) and no validation event learned (`train.valid_holdout=0`), as the clients;
- `nextaction federated run` with 10 local clients (Flower SuperLink + 10 SuperNodes on localhost), users
  split IID, and split by their dominant leaf category (non-IID);
- the popularity baseline, and `nextaction audit` (membership inference) of every model against the
  privacy benchmark's reference model when it is cached (bench_privacy.py).

    python bench/bench_federated.py [--rounds 20] [--local-epochs 2] [--reuse] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import date
from pathlib import Path

from bench_model import BIN, SHARED, machine, run, write_section

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "federated" / "beauty"
REFERENCE = ROOT / "bench" / ".cache" / "privacy" / "beauty" / "id" / "reference"
SECTION = "## Federated"
BEAUTY = SHARED / "data" / "amazon-beauty-s3rec"
HOLDOUT = 1000
CLIENTS = 10
SPLITS = {"iid": ["--by", "iid"], "category": ["--by", "attributes", "--segment", "-1"]}


def rel(cmd: list[str]) -> str:
    return " ".join(["nextaction", *cmd[1:]]).replace(str(ROOT) + "/", "").replace(str(ROOT.parent), "..")


def prepared(*, reuse: bool) -> Path:
    data = CACHE / "data"
    if not (reuse and (data / "events.parquet").exists()):
        run(
            [
                str(BIN),
                "prepare",
                str(BEAUTY / "Beauty.txt"),
                "--format",
                "sequences",
                "--items",
                str(BEAUTY / "item_text.tsv"),
                "--out",
                str(data),
            ]
        )
    return data


def central(data: Path, *, reuse: bool) -> dict:
    out = CACHE / "central"
    meta = out / "bench.json"
    if reuse and meta.exists():
        return json.loads(meta.read_text())
    cmd = [
        str(BIN),
        "train",
        str(data),
        "--out",
        str(out),
        "--set",
        f"train.holdout_users={HOLDOUT}",
        "--set",
        "train.valid_holdout=0",
        "--json",
    ]
    print(f"[central] {rel(cmd)}", flush=True)
    stdout, wall, rss = run(cmd)
    config = json.loads((out / "config.json").read_text())
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    record = {
        "metrics": json.loads(stdout)["metrics"],
        "train_wall_s": round(wall, 1),
        "epoch_s_median": statistics.median(e["epoch_s"] for e in epochs),
        "epochs": config["epochs_run"],
        "best_epoch": config["best_epoch"],
        "peak_rss_mib": rss,
        "command": rel(cmd),
        "date": date.today().isoformat(),
    }
    meta.write_text(json.dumps(record, indent=2))
    return record


def federated(data: Path, split: str, *, rounds: int, local_epochs: int, reuse: bool) -> dict:
    out = CACHE / split
    meta = out / "bench.json"
    if reuse and meta.exists():
        return json.loads(meta.read_text())
    cmd = [
        str(BIN),
        "federated",
        "run",
        str(data),
        "--out",
        str(out),
        "--clients",
        str(CLIENTS),
        *SPLITS[split],
        "--set",
        f"train.holdout_users={HOLDOUT}",
        "--set",
        f"federated.rounds={rounds}",
        "--set",
        f"federated.local_epochs={local_epochs}",
        "--set",
        "federated.eval_every=5",
        "--json",
    ]
    print(f"[{split}] {rel(cmd)}", flush=True)
    stdout, wall, rss = run(cmd)
    config = json.loads((out / "config.json").read_text())
    rounds_log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    split_info = json.loads((out / "clients" / "split.json").read_text())
    record = {
        "metrics": json.loads(stdout)["metrics"],
        "federated": config["federated"],
        "rounds": rounds_log,
        "clients_users": split_info["users"],
        "wall_s": round(wall, 1),
        "train_round_s_median": statistics.median(r["train_round_s"] for r in rounds_log),
        "eval_round_s_median": statistics.median(
            r["eval_round_s"] for r in rounds_log if "eval_round_s" in r
        ),
        "client_train_s_median": statistics.median(r["client_train_s"] for r in rounds_log),
        "bytes_round": rounds_log[0]["bytes_down"] + rounds_log[0]["bytes_up"],
        "peak_rss_mib_server_process": rss,
        "command": rel(cmd),
        "date": date.today().isoformat(),
    }
    meta.write_text(json.dumps(record, indent=2))
    return record


def audit(name: str, *, reuse: bool) -> dict | None:
    path = CACHE / name / "audit.json"
    if reuse and path.exists():
        return json.loads(path.read_text())
    if not (REFERENCE / "config.json").exists():
        return None
    stdout, _, _ = run([str(BIN), "audit", str(CACHE / name), "--reference", str(REFERENCE), "--json"])
    result = json.loads(stdout)
    path.write_text(json.dumps(result, indent=2))
    return result


def popularity(*, reuse: bool) -> dict:
    path = CACHE / "central" / "baselines.json"
    if reuse and path.exists():
        return json.loads(path.read_text())
    stdout, _, _ = run([str(BIN), "evaluate", str(CACHE / "central"), "--baselines", "--json"])
    result = json.loads(stdout)["baselines"]
    path.write_text(json.dumps(result, indent=2))
    return result


def _attack(a: dict | None) -> str:
    if a is None:
        return "–"
    loss, cal = a["attacks"]["loss"], a["attacks"].get("calibrated")
    text = f"{loss['auc']:.3f}"
    if cal:
        text += f" / {cal['auc']:.3f} (TPR@1% {cal['tpr_at_1pct_fpr']:.1%})"
    return text


def markdown(res: dict) -> str:
    c = res["central"]
    base = c["metrics"]["NDCG@10"]
    lines = [
        f"Amazon Beauty (S3-Rec leave-one-out split), {CLIENTS} clients with disjoint users; the first "
        f"{HOLDOUT} users of `train.holdout_users` are in no client (the audit's non-members, as in the "
        "centralised model). Every model learns the TRAIN events of the same 21,363 users, no validation event "
        "(`train.valid_holdout=0`), and is tested on every user's test event: full ranking, seen items excluded, "
        "pessimistic ties. Federated: Flower deployment engine on localhost (a SuperLink and 10 SuperNodes, "
        "each SuperNode starting a `flwr-clientapp` process per message; one torch thread each on 2 cores), "
        "FedAvg weighted by each client's training targets, one cosine schedule across rounds, federated "
        "validation (NDCG@10 over all clients' users) every 5 rounds and the best validated round kept. The "
        "centralised model keeps its epoch by the held-out users' validation NDCG@10.",
        "",
        "| model | NDCG@10 | HR@10 | of centralised | rounds (best) | round wall s (train / validate) | "
        "client train s | MB per round | attack AUC loss / calibrated |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| centralised (`nextaction train`) | {base:.4f} | {c['metrics']['HR@10']:.4f} | 100% | "
        f"{c['epochs']} epochs ({c['best_epoch']}), {c['epoch_s_median']:.1f} s each | – | – | – | "
        f"{_attack(c.get('audit'))} |",
    ]
    for split, label in (("iid", "federated, IID users"), ("category", "federated, by dominant category")):
        f = res.get(split)
        if f is None:
            continue
        m = f["metrics"]
        fed = f["federated"]
        lines.append(
            f"| {label} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} | {m['NDCG@10'] / base:.0%} | "
            f"{fed['rounds_run']} ({fed['best_round']}) | {f['train_round_s_median']:.1f} / "
            f"{f['eval_round_s_median']:.1f} | {f['client_train_s_median']:.1f} | "
            f"{f['bytes_round'] / 1e6:.1f} | {_attack(f.get('audit'))} |"
        )
    if "NDCG@10" in res["popularity"]:
        lines += ["", f"Most-popular baseline (same events): NDCG@10 {res['popularity']['NDCG@10']:.4f}."]
    lines += [
        "",
        "- Client sizes (users): "
        + "; ".join(f"{k}: {res[k]['clients_users']}" for k in ("iid", "category") if k in res),
        "- MB per round: the weights sent to every client plus every client's reply (float32, all weights).",
        "- Round wall s: from the server's sending to its aggregating, median over rounds (includes each "
        "client process start: importing torch and reading its log, about 2.5 s of CPU per client).",
        "- Commands: "
        + "; ".join(f"`{res[k]['command']}`" for k in ("central", "iid", "category") if k in res),
        f"- Date: {res['central']['date']}. Machine: {machine()}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--splits", default="iid,category")
    ap.add_argument("--reuse", action="store_true", help="keep the runs already cached")
    ap.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    data = prepared(reuse=args.reuse)
    res: dict = {"central": central(data, reuse=args.reuse)}
    res["central"]["audit"] = audit("central", reuse=args.reuse)
    for split in args.splits.split(","):
        res[split] = federated(
            data, split, rounds=args.rounds, local_epochs=args.local_epochs, reuse=args.reuse
        )
        res[split]["audit"] = audit(split, reuse=args.reuse)
    res["popularity"] = popularity(reuse=args.reuse).get("most-popular", {})
    (CACHE / "results.json").write_text(json.dumps(res, indent=2))
    text = f"{SECTION}\n\n" + markdown(res)
    print(text)
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
