"""How far history alone gets in next-conversion ranking (the ``next_<behaviour>`` metric of bench_behaviors).

    python bench/behavior_ceiling.py bench/.cache/models/beh_retailrocket/data

For each test user's first conversion event (buy, …): is the item already in their history, and where do
two history-only rules rank it: most recent interaction first, and "items with a stronger-than-first
behaviour (cart) first, then by recency"? Items outside the history count as misses. Prints HR@10,
NDCG@10 and the share of users with the item at rank 1, i.e. what the +10% next-buy target asks for; then
how often the target is one of several items converted at the same moment, and the NDCG@10 an oracle
could reach then (:func:`transaction_ceiling`).
"""

from __future__ import annotations

import argparse

import numpy as np

from nextaction.behavior.candidates import primary_behavior
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import TEST
from nextaction.evaluation.ranking import EvalExamples, eval_examples

MISS = 10**9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir", help="a prepared multi-behaviour dataset (a model directory's data/)")
    args = ap.parse_args()
    data = PreparedDataset.load(args.data_dir)
    target = primary_behavior(data.behaviors)
    if target is None:
        raise SystemExit("a single-behaviour log has no conversion behaviour")
    ex = eval_examples(data.seqs, split=TEST, target_behavior=target)
    items, behaviors = np.asarray(data.seqs.items), np.asarray(data.seqs.behaviors)
    in_history, n_distinct, by_recency, strong_first = [], [], [], []
    for start, end, item in zip(ex.hist_start, ex.hist_end, ex.target, strict=True):
        last_seen = {int(i): pos for pos, i in enumerate(items[start:end])}
        strong = {int(i) for i, b in zip(items[start:end], behaviors[start:end], strict=True) if b >= 2}
        recency = sorted(last_seen, key=lambda i: -last_seen[i])
        funnel = sorted(last_seen, key=lambda i: (i not in strong, -last_seen[i]))
        n_distinct.append(len(last_seen))
        in_history.append(int(item) in last_seen)
        by_recency.append(recency.index(int(item)) if int(item) in last_seen else MISS)
        strong_first.append(funnel.index(int(item)) if int(item) in last_seen else MISS)
    print(
        f"{len(ex)} users; target '{data.behaviors[target]}' in history: {np.mean(in_history):.3f}; "
        f"median distinct history items: {np.median(n_distinct):.0f}"
    )
    for name, ranks in (("most recent first", by_recency), ("carted first, then recency", strong_first)):
        r = np.asarray(ranks, dtype=np.float64)
        ndcg = np.where(r < 10, 1.0 / np.log2(r + 2), 0.0).mean()
        print(f"{name}: HR@10 {(r < 10).mean():.4f}  NDCG@10 {ndcg:.4f}  rank 1 {(r == 0).mean():.3f}")
    transaction_ceiling(data, ex, target)


def transaction_ceiling(data: PreparedDataset, ex: EvalExamples, target: int) -> None:
    """Ties in the target itself: items converted at the very same moment (one multi-item order).

    The target is the *first* such event, and events of one moment keep the source file's row order, which
    no model sees. An oracle that knows the order's items but not their row order puts them in the top k
    in random order: its expected NDCG@10 is the mean of 1/log2(r + 1), r = 1 … k. Printed with items
    outside the history scored as hits (a generous bound) and as misses (history-only rankers).
    """
    items, behaviors = np.asarray(data.seqs.items), np.asarray(data.seqs.behaviors)
    times, offsets = np.asarray(data.seqs.timestamps), np.asarray(data.seqs.offsets)
    shared, generous, history_only = [], [], []
    for start, end in zip(ex.hist_start, ex.hist_end, strict=True):
        user_end = offsets[np.searchsorted(offsets, end, side="right")]
        pos = np.arange(end, user_end)
        same = pos[(behaviors[pos] == target) & (times[pos] == times[end])]
        k = len(set(items[same].tolist()))
        expected = sum(1.0 / np.log2(r + 1) for r in range(1, min(k, 10) + 1)) / k
        shared.append(k > 1)
        generous.append(expected)
        history_only.append(expected if int(items[end]) in set(items[start:end].tolist()) else 0.0)
    print(
        f"first '{data.behaviors[target]}' shares its timestamp with another converted item: "
        f"{np.mean(shared):.3f} of users; oracle NDCG@10 knowing the order's items but not their row order: "
        f"{np.mean(generous):.4f} (items outside the history missed: {np.mean(history_only):.4f})"
    )


if __name__ == "__main__":
    main()
