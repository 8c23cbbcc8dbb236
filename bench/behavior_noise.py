"""How precisely the behaviour benchmark's test window measures AUC: a bootstrap over its users.

    python bench/behavior_noise.py bench/.cache/models/beh_retailrocket [--draws 500]

Scores the test window exactly as ``nextaction evaluate MODEL --baselines`` does (every scorer fitted and
Platt-calibrated on the valid window), then resamples the window's *users* with replacement: candidates of
one user are not independent draws (a user's window items share the user), so the user is the unit. For
the primary behaviour it prints each scorer's AUC with its bootstrap standard deviation, and for
nextaction minus each baseline the mean difference, its standard deviation and 90% interval — the
resolution against which the "+0.02 AUC" target can be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from nextaction.behavior.baselines import default_behavior_baselines
from nextaction.behavior.calibration import calibrate, probabilities
from nextaction.behavior.candidates import primary_behavior
from nextaction.behavior.evaluation import BehaviorEvalSetup, eval_setup
from nextaction.behavior.ranker import BehaviorRanker, ModelBehaviorScorer
from nextaction.data.dataset import PreparedDataset
from nextaction.evaluation.metrics import auc
from nextaction.training.checkpoint import load_model


def load_behavior_model(
    model_dir: str,
) -> tuple[Any, dict[str, Any], PreparedDataset, int, BehaviorEvalSetup]:
    """Model, config, data, primary behaviour index and the evaluation windows of a model directory."""
    model, config = load_model(model_dir)
    data = PreparedDataset.load(Path(model_dir) / "data")
    target = primary_behavior(data.behaviors)
    if target is None:
        raise SystemExit("a single-behaviour log has no primary behaviour")
    return model, config, data, target, eval_setup(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, config, data, target, setup = load_behavior_model(args.model_dir)
    k = target - 1
    scorers = [
        ModelBehaviorScorer(model, ranker=BehaviorRanker.from_dict(config.get("behavior_ranker"))),
        *default_behavior_baselines(),
    ]
    probs = {}
    for s in scorers:
        s.fit(data, train=setup.valid)
        cal = calibrate(s.behavior_scores(data.seqs, setup.valid), setup.valid.labels, data.behaviors)
        probs[s.name] = probabilities(s.behavior_scores(data.seqs, setup.test), cal, data.behaviors)[:, k]
    y = setup.test.labels[:, k]
    users = setup.test.user_of_candidate()
    by_user = [np.flatnonzero(users == u) for u in range(len(setup.test))]
    rng = np.random.default_rng(args.seed)
    draws: dict[str, list[float]] = {name: [] for name in probs}
    for _ in range(args.draws):
        idx = np.concatenate([by_user[u] for u in rng.integers(0, len(by_user), len(by_user))])
        for name, p in probs.items():
            draws[name].append(auc(p[idx], y[idx]))
    behavior = data.behaviors[target]
    print(
        f"{behavior} AUC on the test window: {len(setup.test)} users, {int(y.sum())} positives, "
        f"{len(y)} candidates; {args.draws} bootstrap draws of users (seed {args.seed})\n"
    )
    print("| scorer | AUC | bootstrap SD | nextaction − scorer: mean | SD | 90% interval |")
    print("|---|---:|---:|---:|---:|---|")
    ours = np.asarray(draws["nextaction"])
    for name, p in probs.items():
        d = np.asarray(draws[name])
        diff = ours - d
        lo, hi = np.quantile(diff, [0.05, 0.95])
        cols = (
            "— | — | —"
            if name == "nextaction"
            else f"{diff.mean():+.4f} | {diff.std():.4f} | [{lo:+.4f}, {hi:+.4f}]"
        )
        print(f"| {name} | {auc(p, y):.4f} | {d.std():.4f} | {cols} |")


if __name__ == "__main__":
    main()
