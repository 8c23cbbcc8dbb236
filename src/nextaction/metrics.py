"""Ranking metrics from the rank of each user's target item.

Everything here works on ``ranks``: the 0-based position of the target in the user's ranked list, where
ties count *against* us (pessimistic: an item scored equal to the target is ranked above it). With one
target per user, Recall@K equals HR@K; it is reported under both names so tables line up with peers.
"""

from __future__ import annotations

import numpy as np
import torch

KS: tuple[int, ...] = (5, 10, 20)


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target among its row's candidates.

    scores: (B, N) float, with excluded candidates already set to -inf.
    targets: (B,) long, column index of the target.
    Returns (B,) long: number of *other* candidates scoring >= the target.
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    return (scores >= target_scores).sum(dim=1) - 1


def ranking_metrics(ranks: np.ndarray, *, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K, NDCG@K, MRR@K and Recall@K averaged over users, from 0-based ranks (one target each)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG", "MRR", "Recall")}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())
        out[f"Recall@{k}"] = out[f"HR@{k}"]
    return out


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue (n_items real items) that appears in at least one user's top-K list."""
    if n_items <= 0:
        return 0.0
    seen = np.unique(top_items[top_items > 0])
    return float(seen.size / n_items)
