"""The full-ranking protocol: seen items are excluded as serving excludes them, the repeated target too."""

from __future__ import annotations

import numpy as np
import torch

from factories import cyclic_dataset
from nextaction.data.dataset import Sequences
from nextaction.data.schema import TEST, TRAIN
from nextaction.evaluation.metrics import MISS_RANK
from nextaction.evaluation.ranking import (
    SEEN_EXCLUDED,
    SEEN_KEPT,
    chunks,
    eval_examples,
    protocol,
    rank_targets,
)


def repeat_log() -> Sequences:
    """User 0: 1, 2, 3 then target 2 (a repeat); user 1: 4, 5 then target 6 (new)."""
    base = Sequences.from_arrays(
        np.array([1, 2, 3, 2, 4, 5, 6]), np.ones(7), np.arange(7) * 1000, np.array([4, 3])
    )
    split = np.array([TRAIN, TRAIN, TRAIN, TEST, TRAIN, TRAIN, TEST], dtype=np.int8)
    return Sequences(base.offsets, base.items, base.behaviors, base.timestamps, split)


def ranks_of(seqs: Sequences, scores: np.ndarray, *, exclude_seen: bool) -> list[int]:
    ex = eval_examples(seqs, split=TEST)
    ranks, _ = rank_targets(
        lambda rows: torch.from_numpy(scores[rows]),
        seqs,
        ex,
        exclude_seen=exclude_seen,
        groups=chunks(len(ex), 1),
        k_top=0,
    )
    return ranks.tolist()


def test_a_repeated_target_is_a_miss_when_seen_items_are_excluded():
    seqs = repeat_log()
    # both users' scorers put their target first
    scores = np.array(
        [[0, 0.1, 0.9, 0.2, 0.3, 0.1, 0.1], [0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.9]], dtype=np.float32
    )
    excluded = ranks_of(seqs, scores, exclude_seen=True)
    assert excluded[0] == MISS_RANK  # the service never shows item 2 again: no hit, at any k
    assert excluded[1] == 0  # a new item is unaffected
    assert ranks_of(seqs, scores, exclude_seen=False) == [0, 0]  # re-consumption counts when seen items stay


def test_seen_items_are_excluded_for_every_rival():
    seqs = repeat_log()
    # user 1's own history items 4 and 5 outscore its target but are excluded; item 1 is not seen by it
    scores = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 0.95, 0.1, 0.1, 0.99, 0.98, 0.9]], dtype=np.float32)
    assert ranks_of(seqs, scores, exclude_seen=True)[1] == 1
    assert ranks_of(seqs, scores, exclude_seen=False)[1] == 3


def test_the_protocol_says_how_seen_items_were_handled():
    data = cyclic_dataset(n_users=5, n_items=8, length=6)
    on = protocol(data, split=TEST, exclude_seen=True, target_behavior=None, n_users=5, seed=0)
    off = protocol(data, split=TEST, exclude_seen=False, target_behavior=None, n_users=5, seed=0)
    assert on["seen_items"] == SEEN_EXCLUDED and off["seen_items"] == SEEN_KEPT
    assert "repeated target" in SEEN_EXCLUDED
