"""Next-buy by order: every item of the user's first order is relevant; history stops before the order."""

from __future__ import annotations

import numpy as np
import pytest

from nextaction.behavior.evaluation import first_orders, next_behavior_metrics
from nextaction.data.dataset import Sequences
from nextaction.data.schema import PAD_IDX, TEST, TRAIN

VIEW, CART, BUY = 1, 2, 3


def hand_made() -> Sequences:
    """User 1: views 1, 2; carts 2; then buys 2 and 3 at the same moment (TEST), then buys 4 later.
    User 2: views 5; buys 6 (TEST, a one-item order). User 3: a TEST buy with no history (skipped)."""
    rows = [
        # (items, behaviours, times, splits) per user
        ([1, 2, 2, 2, 3, 4], [VIEW, VIEW, CART, BUY, BUY, BUY], [1, 2, 3, 10, 10, 20], [0, 0, 0, 1, 1, 1]),
        ([5, 6], [VIEW, BUY], [1, 10], [0, 1]),
        ([7], [BUY], [10], [1]),
    ]
    items = np.concatenate([[*r[0]] for r in rows])
    lengths = np.array([0, *[len(r[0]) for r in rows]])
    seqs = Sequences.from_arrays(
        items,
        np.concatenate([r[1] for r in rows]),
        np.concatenate([r[2] for r in rows]) * 1000,
        lengths,
    )
    split = np.concatenate([r[3] for r in rows]).astype(np.int8)
    split = np.where(split == 1, TEST, TRAIN).astype(np.int8)
    return Sequences(seqs.offsets, seqs.items, seqs.behaviors, seqs.timestamps, split)


def test_first_orders_hold_every_item_bought_at_the_first_moment():
    seqs = hand_made()
    orders = first_orders(seqs, split=TEST, behavior=BUY)
    assert orders.user_idx.tolist() == [1, 2]  # user 3 has no history
    assert orders.offsets.tolist() == [0, 2, 3]
    assert orders.targets.tolist() == [2, 3, 6]  # item 4 was bought later: not the first order
    # history = the events before the order: views and the cart, not the order's other item
    assert (orders.hist_end - orders.hist_start).tolist() == [3, 1]


class FixedScorer:
    """Scores every history with the same catalogue ranking: item i scores ``order[i]``."""

    name = "fixed"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def rank_scores(self, seqs, hist_start, hist_end, *, behavior):
        out = np.tile(self.scores, (len(hist_start), 1))
        out[:, PAD_IDX] = -np.inf
        return out


def test_next_order_metrics_count_any_item_of_the_order():
    seqs = hand_made()
    # catalogue ranking: 3 first, then 1, 4, 5, 7 ..., 2 at rank 5, 6 last (rank 6)
    scores = np.array([0, 8, 3, 9, 7, 6, 1, 5], dtype=np.float64)
    m = next_behavior_metrics(FixedScorer(scores), seqs, BUY)
    # user 1: items 3 (rank 0) and 2 (rank 5) -> DCG = 1 + 1/log2(7), IDCG = 1 + 1/log2(3)
    ndcg1 = (1 + 1 / np.log2(7)) / (1 + 1 / np.log2(3))
    ndcg2 = 1 / np.log2(8)  # item 6 at rank 6
    assert m["users"] == 2 and m["items_per_order"] == 1.5
    assert m["HR@10"] == 1.0
    assert m["NDCG@10"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert m["MRR@10"] == pytest.approx((1.0 + 1 / 7) / 2)


def test_ties_with_an_order_item_count_against_it():
    seqs = hand_made()
    scores = np.ones(8)  # everything tied: every target ranks last among the 7 items
    m = next_behavior_metrics(FixedScorer(scores), seqs, BUY)
    assert m["MRR@10"] == pytest.approx(1 / 7)
