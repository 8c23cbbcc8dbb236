"""Ranking metrics from the rank of each user's target item.

Everything here works on ``ranks``: the 0-based position of the target in the user's ranked list, where
ties count *against* us (pessimistic: an item scored equal to the target is ranked above it). With one
target per user, Recall@K equals HR@K; it is reported under both names so tables line up with peers.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

KS: tuple[int, ...] = (5, 10, 20)
MISS_RANK = 2**40  # the rank of a target that cannot be recommended: a miss at any k


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target among its row's candidates.

    scores: (B, N) float, with excluded candidates already set to -inf.
    targets: (B,) long, column index of the target.
    Returns (B,) long: number of *other* candidates scoring >= the target. A NaN score counts against the
    model: a NaN candidate ranks above the target. A target scoring NaN or -inf (an excluded, e.g. seen,
    item) is a miss: MISS_RANK, beyond every k, however small the catalogue.
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    # Summing the comparison as floats is ~2× faster than a bool sum on CPUs, and exact: float32 holds
    # every count up to 2^24 candidates (float64 beyond).
    dtype = torch.float32 if scores.shape[1] <= 2**24 else torch.float64
    above = (scores >= target_scores) | torch.isnan(scores)  # the target itself counts once either way
    ranks = above.to(dtype).sum(dim=1).long() - 1
    t = target_scores[:, 0]
    return ranks.masked_fill(torch.isnan(t) | (t == float("-inf")), MISS_RANK)


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


# ---- probability metrics (behaviour prediction) ---------------------------------------------------------

ECE_BINS = 15


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties sharing their average rank (as in the Mann–Whitney U statistic)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 … end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties count half.

    NaN when only one class is present.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Per-user AUC averaged with weights = the user's number of candidates (users with one class skipped).

    ``groups`` must be sorted (candidates of a user contiguous), as in a CandidateSet.
    """
    groups = np.asarray(groups)
    if len(groups) == 0:
        return float("nan")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(groups)) + 1, [len(groups)]])
    total, weight = 0.0, 0
    for a, b in itertools.pairwise(bounds):
        value = auc(scores[a:b], labels[a:b])
        if not np.isnan(value):
            total += value * (b - a)
            weight += b - a
    return total / weight if weight else float("nan")


AUC_BOOTSTRAP_DRAWS = 200


def auc_bootstrap_sd(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    draws: int = AUC_BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> float:
    """Standard deviation of :func:`auc` when the groups (users) are resampled with replacement.

    A user's candidates are not independent draws, so the user is the unit of resampling. Each draw weights
    every candidate by how often its group was drawn; the weighted AUC comes from one presorted pass (ties
    count half), so a draw costs O(n). NaN when a class is missing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    groups = np.asarray(groups, dtype=np.int64)
    if len(scores) == 0 or labels.all() or not labels.any():
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s, y, g = scores[order], labels[order], groups[order]
    block = np.cumsum(np.concatenate([[True], s[1:] != s[:-1]])) - 1  # tie block of each candidate
    n_groups = int(g.max()) + 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        w = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[g].astype(np.float64)
        w_pos, w_neg = w * y, w * ~y
        neg_in_block = np.bincount(block, w_neg)
        neg_below = np.cumsum(neg_in_block) - neg_in_block
        denom = w_pos.sum() * w_neg.sum()
        if denom > 0:
            values.append(float((w_pos * (neg_below[block] + 0.5 * neg_in_block[block])).sum() / denom))
    return float(np.std(values)) if values else float("nan")


def log_loss(probs: np.ndarray, labels: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean negative log-likelihood of binary labels."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(p) else float("nan")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Σ_bins (n_bin / n) · |mean predicted − observed rate| over ``bins`` equal-width probability bins."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    return float(np.abs(sum_p - sum_y).sum() / len(p))


def best_f1_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The probability threshold (predict positive when p >= threshold) that maximises F1."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return 1.0
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(p) + 1)
    # only cut between distinct probabilities: a threshold cannot split tied scores
    last_of_tie = np.concatenate([p[order][1:] != p[order][:-1], [True]])
    f1 = np.where(last_of_tie, 2 * tp / (k + y.sum()), -1.0)
    return float(p[order][int(np.argmax(f1))])


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of the decision ``p >= threshold``."""
    pred = np.asarray(probs) >= threshold
    y = np.asarray(labels, dtype=bool)
    tp = float((pred & y).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "precision": precision,
        "recall": recall,
        "F1": f1,
    }


# ---- paired bootstrap over users (rolling windows, differences between scorers) -------------------------

CI_LEVEL = 0.95


def bootstrap_weights(units: np.ndarray, *, draws: int = AUC_BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """(draws, n_units) float64 multiplicities of resampling the units (users) with replacement.

    ``units``: (T,) int unit of every row, compact ids 0 … n_units − 1. Every scorer measured on the same
    rows reuses one matrix, so a difference between two scorers is a *paired* bootstrap: each draw takes
    the same users, with their same candidates, for both.
    """
    n_units = int(np.max(units)) + 1 if len(units) else 0
    rng = np.random.default_rng(seed)
    return np.stack(
        [np.bincount(rng.integers(0, n_units, n_units), minlength=n_units) for _ in range(draws)]
    ).astype(np.float64)


def bootstrap_auc(
    scores: np.ndarray, labels: np.ndarray, units: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(draws,) AUC of each bootstrap draw (ties count half); NaN where a draw lacks a class.

    One presort; each draw is a weighted Mann–Whitney pass over tie blocks, O(T).
    """
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, y, g = s[order], np.asarray(labels, dtype=bool)[order], np.asarray(units)[order]
    block = np.cumsum(np.concatenate([[True], s[1:] != s[:-1]])) - 1 if len(s) else np.zeros(0, np.int64)
    out = np.full(len(weights), np.nan)
    for d, w_unit in enumerate(weights):
        w = w_unit[g]
        w_pos, w_neg = w * y, w * ~y
        neg_in_block = np.bincount(block, w_neg)
        neg_below = np.cumsum(neg_in_block) - neg_in_block
        denom = w_pos.sum() * w_neg.sum()
        if denom > 0:
            out[d] = (w_pos * (neg_below[block] + 0.5 * neg_in_block[block])).sum() / denom
    return out


def group_aucs(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (rows of a group contiguous): its AUC (NaN with one class) and its number of rows —
    the terms of :func:`gauc`."""
    groups = np.asarray(groups)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(groups)) + 1, [len(groups)]]) if len(groups) else [0]
    values = np.array([auc(scores[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)])
    sizes = np.diff(np.asarray(bounds)).astype(np.float64)
    return values, sizes


def bootstrap_mean(
    values: np.ndarray, sizes: np.ndarray, units: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(draws,) mean of ``values`` weighted by ``sizes`` × the draw's multiplicity of each value's unit,
    NaN values skipped: GAUC from :func:`group_aucs` (sizes = candidates), or a per-user ranking metric
    (sizes = 1)."""
    ok = ~np.isnan(values)
    v, s, u = values[ok], sizes[ok], np.asarray(units)[ok]
    w = weights[:, u] * s[None, :]  # (draws, G)
    total = w.sum(axis=1)
    return np.where(total > 0, (w * v[None, :]).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def interval(draws: np.ndarray, *, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap draws (NaN draws ignored)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail))


def compact_ids(values: np.ndarray) -> np.ndarray:
    """Dense 0 … n − 1 ids of arbitrary integer keys (e.g. user_idx → bootstrap unit)."""
    return np.unique(np.asarray(values), return_inverse=True)[1].astype(np.int64)


# ---- several relevant items per user (next order) --------------------------------------------------------


def multi_target_metrics(
    offsets: np.ndarray, ranks: np.ndarray, *, ks: tuple[int, ...] = (10,)
) -> dict[str, np.ndarray]:
    """Per-user HR@K, NDCG@K and MRR@K when user u has the relevant items ``ranks[offsets[u]:offsets[u+1]]``
    (0-based positions in the user's ranked list; every relevant item counts as a hit).

    HR@K: any relevant item in the top K. NDCG@K: Σ_{rank < K} 1/log2(rank + 2) over the relevant items,
    divided by the ideal DCG of min(n_relevant, K) items at the top. MRR@K: 1/(best rank + 1).
    Returns arrays of shape (U,) per metric name.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    ranks = np.asarray(ranks, dtype=np.float64)
    n_rel = np.diff(offsets)
    user = np.repeat(np.arange(len(n_rel)), n_rel)
    best = np.full(len(n_rel), np.inf)
    np.minimum.at(best, user, ranks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        gain = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
        dcg = np.bincount(user, gain, minlength=len(n_rel))
        ideal_gains = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
        idcg = ideal_gains[np.clip(np.minimum(n_rel, k) - 1, 0, k - 1)]
        out[f"HR@{k}"] = (best < k).astype(np.float64)
        out[f"NDCG@{k}"] = np.where(n_rel > 0, dcg / idcg, 0.0)
        out[f"MRR@{k}"] = np.where(best < k, 1.0 / (best + 1.0), 0.0)
    return out


# ---- paired AUC difference (propensity: model against the better baseline) -------------------------------


def paired_auc_difference(
    p_a: np.ndarray,
    p_b: np.ndarray,
    y: np.ndarray,
    users: np.ndarray,
    *,
    draws: int = AUC_BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, float]:
    """``{"diff": AUC(p_a) − AUC(p_b), "lo", "hi"}``: the difference of two scorers on the same rows and
    its percentile interval (:data:`CI_LEVEL`) over a paired bootstrap of ``users`` (T,) — each draw
    resamples the same users, with all their rows, for both scorers (:func:`bootstrap_weights`)."""
    units = compact_ids(users)
    weights = bootstrap_weights(units, draws=draws, seed=seed)
    d = bootstrap_auc(p_a, y, units, weights) - bootstrap_auc(p_b, y, units, weights)
    lo, hi = interval(d)
    return {"diff": auc(p_a, y) - auc(p_b, y), "lo": lo, "hi": hi}
