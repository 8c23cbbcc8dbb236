"""Short ablations on Beauty: the same training budget for each variant (`make ablate`).

Each variant is a list of ``--set`` overrides on top of the defaults and trains for ``--epochs`` epochs
(cosine schedule over that many), then reports validation and test NDCG@10 / HR@10 (full ranking, seen
items excluded). Short budgets rank variants by how fast they learn, not by where they end; the table says
so. Writes the "Ablations" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "data" / "amazon-beauty-s3rec" / "Beauty.txt"
CACHE = ROOT / "bench" / ".cache" / "ablate"
BIN = Path(sys.executable).parent / "nextaction"

VARIANTS: dict[str, list[str]] = {
    "default (full softmax)": [],
    "sampled softmax, 256 negatives, logQ": ["train.loss=sampled"],
    "gBCE, 256 negatives, t=0.75": ["train.loss=gbce"],
    "BCE, 256 negatives": ["train.loss=bce"],
    "SwiGLU + LiGR gated residuals": ["model.ffn=swiglu", "model.gated_residual=true"],
    "relative position bias (HSTU-style)": ["model.rel_pos_bias=true"],
    "item bias": ["model.item_bias=true"],
    "embedding init 0.02 (was the default)": ["model.emb_init_std=0.02"],
}


def run_variant(name: str, sets: list[str], epochs: int) -> dict:
    out = CACHE / "".join(c if c.isalnum() else "_" for c in name)
    cmd = [str(BIN), "train", str(BEAUTY), "--format", "sequences", "--out", str(out), "--json",
           "--set", f"train.epochs={epochs}"]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    test = json.loads(proc.stdout)["metrics"]
    config = json.loads((out / "config.json").read_text())
    return {
        "valid_NDCG@10": config["best_valid_NDCG@10"],
        "test_NDCG@10": test["NDCG@10"],
        "test_HR@10": test["HR@10"],
        "train_s": config["train_seconds"],
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated substrings of variant names")
    args = ap.parse_args()
    if not BEAUTY.exists():
        sys.exit(f"Beauty not found at {BEAUTY}")
    chosen = {n: v for n, v in VARIANTS.items() if not args.only or any(o in n for o in args.only.split(","))}
    rows = []
    for name, sets in chosen.items():
        print(f"{name} …", flush=True)
        r = run_variant(name, sets, args.epochs)
        rows.append((name, sets, r))
        print(f"  {r}", flush=True)
    lines = [
        "## Ablations (Beauty, short budget)",
        "",
        f"- Command: `python bench/ablate.py --epochs {args.epochs}`. Date: {date.today().isoformat()}. "
        "Same machine as above. Each variant: defaults plus the listed overrides, "
        f"{args.epochs} epochs (cosine over {args.epochs}), best validation checkpoint, test = full ranking, "
        "seen items excluded. One seed; differences under ~0.002 NDCG@10 are noise at this budget.",
        "",
        "| variant | overrides | valid NDCG@10 | test NDCG@10 | test HR@10 | train s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, sets, r in rows:
        if "error" in r:
            lines.append(f"| {name} | `{' '.join(sets)}` | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {name} | `{' '.join(sets) or '—'}` | {r['valid_NDCG@10']:.4f} | {r['test_NDCG@10']:.4f} | "
            f"{r['test_HR@10']:.4f} | {r['train_s']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text()
    start = current.find("## Ablations")
    if start >= 0:
        end = current.find("\n## ", start + 3)
        current = current[:start] + (current[end + 1 :] if end >= 0 else "")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(current.rstrip() + "\n\n" + text)
    tmp.replace(path)


if __name__ == "__main__":
    main()
