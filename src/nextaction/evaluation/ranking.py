"""Full-ranking evaluation: every user's target is ranked against the whole catalogue.

Protocol (recorded in every result):
- one target per user: the user's first event of the evaluated split (leave-one-out: the held-out last or
  second-last event; temporal: the first event in the window), optionally of one behaviour only;
- history = all of the user's events before the target, in time order (the model reads the last max_len);
- candidates = every catalogue item; with ``exclude_seen`` every item in the history is removed, the
  target too when it repeats a history item (a miss: the service never shows a seen item, so such a hit
  would never reach a user); without it every item stays a candidate and repeats count (re-buying);
- ties are ranked pessimistically (an item scoring equal to the target counts as above it);
- scores are computed in chunks of users, so memory stays ~ chunk x catalogue floats, and the result does
  not depend on the chunk size.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import SPLIT_NAMES, TEST
from nextaction.evaluation.metrics import KS, coverage, pessimistic_ranks, ranking_metrics


class Scorer(Protocol):
    """Anything that scores the catalogue for a batch of histories (models and baselines alike)."""

    name: str

    def score(self, histories: list[np.ndarray], *, behaviors: list[np.ndarray] | None = None) -> np.ndarray:
        """(B, n_items + 1) float32 or float64 scores; column 0 (padding) is ignored."""
        ...


@dataclass(frozen=True)
class EvalExamples:
    """One row per evaluated user: the target and where their history sits in the CSR arrays."""

    user_idx: np.ndarray  # (U,) int64
    hist_start: np.ndarray  # (U,) int64 offsets into Sequences arrays
    hist_end: np.ndarray  # (U,) int64, exclusive: the target's position
    target: np.ndarray  # (U,) int64 item_idx

    def __len__(self) -> int:
        return len(self.user_idx)

    def of_users(self, users: np.ndarray | None) -> EvalExamples:
        """Only the examples of ``users`` (user positions); all of them for None."""
        if users is None:
            return self
        keep = np.isin(self.user_idx, np.asarray(users))
        return EvalExamples(
            self.user_idx[keep], self.hist_start[keep], self.hist_end[keep], self.target[keep]
        )

    def sample(self, n: int, *, seed: int = 0) -> EvalExamples:
        """A fixed random subset of ``n`` users, in user order (all of them when n is 0 or ≥ the count):
        how a log of millions of users is evaluated on a budget, reproducibly."""
        if not n or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return EvalExamples(
            self.user_idx[keep], self.hist_start[keep], self.hist_end[keep], self.target[keep]
        )


def eval_examples(
    seqs: Sequences, *, split: int = TEST, target_behavior: int | None = None, min_history: int = 1
) -> EvalExamples:
    """Each user's first event in ``split`` (of ``target_behavior`` if given) as the target."""
    is_target = np.asarray(seqs.split) == split
    if target_behavior is not None:
        is_target &= np.asarray(seqs.behaviors) == target_behavior
    pos = np.flatnonzero(is_target)
    users = np.searchsorted(seqs.offsets, pos, side="right") - 1
    first = np.concatenate([[True], users[1:] != users[:-1]]) if len(users) else np.zeros(0, bool)
    pos, users = pos[first], users[first]
    start = np.asarray(seqs.offsets)[users]
    keep = pos - start >= min_history
    return EvalExamples(
        user_idx=users[keep].astype(np.int64),
        hist_start=start[keep].astype(np.int64),
        hist_end=pos[keep].astype(np.int64),
        target=np.asarray(seqs.items)[pos[keep]].astype(np.int64),
    )


def histories_of(seqs: Sequences, ex: EvalExamples, idx: np.ndarray) -> tuple[list, list]:
    """Item and behaviour arrays of the selected examples' histories."""
    items = [np.asarray(seqs.items[ex.hist_start[i] : ex.hist_end[i]]) for i in idx]
    behaviors = [np.asarray(seqs.behaviors[ex.hist_start[i] : ex.hist_end[i]]) for i in idx]
    return items, behaviors


SEEN_EXCLUDED = "every history item removed from the candidates, a repeated target too (a miss), as served"
SEEN_KEPT = "every catalogue item a candidate, history items included (repeats count)"

EVAL_SCORE_BUDGET = 2**26  # float32 scores held at once (256 MB): bounds memory for big catalogues


def catalogue_chunk(chunk: int, n_items: int) -> int:
    """Users scored together: at most ``chunk``, and few enough that users × catalogue fits the budget
    (a 1M-item catalogue is scored 64 users at a time)."""
    return max(1, min(chunk, EVAL_SCORE_BUDGET // (n_items + 1)))


def chunks(n: int, chunk: int) -> list[np.ndarray]:
    """Contiguous groups of example indices."""
    return [np.arange(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def rank_targets(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    seqs: Sequences,
    ex: EvalExamples,
    *,
    exclude_seen: bool,
    groups: list[np.ndarray],
    k_top: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic 0-based rank of every target and each user's top-``k_top`` items.

    ``groups`` partitions the example indices into chunks scored together; score_fn(rows) returns
    (len(rows), n_items + 1) scores for examples ``rows``. Memory is one chunk x catalogue.
    """
    ranks = np.empty(len(ex), dtype=np.int64)
    tops = np.zeros((len(ex), k_top), dtype=np.int64)
    for rows in groups:
        scores = score_fn(rows)  # (C, N)
        if scores.dtype != torch.float64:  # baselines score in float64 (exact tie-breaks); models in fp32
            scores = scores.float()
        scores[:, 0] = float("-inf")
        targets = torch.from_numpy(ex.target[rows])
        if exclude_seen:
            lengths = ex.hist_end[rows] - ex.hist_start[rows]
            flat = np.concatenate(
                [
                    np.asarray(seqs.items[a:b])
                    for a, b in zip(ex.hist_start[rows], ex.hist_end[rows], strict=True)
                ]
            ).astype(np.int64)
            row_ids = np.repeat(np.arange(len(rows)), lengths)
            # Every seen item goes, a repeated target too: that is what serving shows (it is a miss here).
            scores[torch.from_numpy(row_ids), torch.from_numpy(flat)] = float("-inf")
        ranks[rows] = pessimistic_ranks(scores, targets).numpy()
        k = min(k_top, scores.shape[1] - 1)
        if k > 0:  # top lists only feed coverage; validation during training skips them
            tops[rows, :k] = torch.topk(scores, k, dim=1).indices.numpy()
    return ranks, tops


def fingerprint(data: PreparedDataset) -> str:
    """Short content hash of the prepared events, so results name exactly the data they came from."""
    h = hashlib.sha256()
    seqs = data.seqs
    for arr in (seqs.offsets, seqs.items, seqs.behaviors, seqs.split):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def evaluate_scorer(
    scorer: Scorer,
    data: PreparedDataset,
    *,
    split: int = TEST,
    exclude_seen: bool = True,
    target_behavior: int | None = None,
    chunk: int = 1024,
    ks: tuple[int, ...] = KS,
    seed: int | None = None,
    max_users: int = 0,
    users: np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluate any :class:`Scorer` with the full-ranking protocol; returns metrics and protocol.
    ``max_users`` > 0: the same fixed user sample as the model's evaluation (``EvalExamples.sample``);
    ``users``: only these user positions (e.g. the held-out validation users)."""
    seqs = data.seqs
    ex = eval_examples(seqs, split=split, target_behavior=target_behavior).of_users(users).sample(max_users)

    def score_rows(rows: np.ndarray) -> torch.Tensor:
        items, behaviors = histories_of(seqs, ex, rows)
        return torch.as_tensor(scorer.score(items, behaviors=behaviors))

    t0 = time.perf_counter()
    groups = chunks(len(ex), catalogue_chunk(chunk, data.n_items))
    ranks, tops = rank_targets(score_rows, seqs, ex, exclude_seen=exclude_seen, groups=groups, k_top=max(ks))
    seconds = time.perf_counter() - t0
    metrics = ranking_metrics(ranks, ks=ks)
    metrics["coverage@10"] = coverage(tops[:, :10], data.n_items)
    return {
        "metrics": metrics,
        "protocol": protocol(
            data,
            split=split,
            exclude_seen=exclude_seen,
            target_behavior=target_behavior,
            n_users=len(ex),
            seed=seed,
        ),
        "seconds": round(seconds, 3),
        "scorer": scorer.name,
    }


def protocol(
    data: PreparedDataset,
    *,
    split: int,
    exclude_seen: bool,
    target_behavior: int | None,
    n_users: int,
    seed: int | None,
    sampled_from: int | None = None,
) -> dict[str, Any]:
    split_info = data.report.get("split", {})
    sample = {"users_sampled_from": sampled_from, "sample_seed": 0} if sampled_from else {}
    return {
        "split": SPLIT_NAMES[split],
        "split_kind": split_info.get("kind", "unknown") if isinstance(split_info, dict) else str(split_info),
        "target": "first event of the split per user"
        + (f" with behavior '{data.behaviors[target_behavior]}'" if target_behavior is not None else ""),
        "candidates": f"full catalogue ({data.n_items} items)",
        "exclude_seen": exclude_seen,
        "seen_items": SEEN_EXCLUDED if exclude_seen else SEEN_KEPT,
        "ties": "pessimistic",
        "nan_scores": "count against the scorer (a NaN candidate ranks above the target; a NaN target misses)",
        "users_evaluated": n_users,
        **sample,
        "seed": seed,
        "dataset_fingerprint": fingerprint(data),
    }
