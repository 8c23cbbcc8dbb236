"""Candidate sets for behaviour prediction: evaluation windows (deterministic sampler) and training labels."""

from __future__ import annotations

import numpy as np
import torch

from factories import funnel_dataset
from nextaction.behavior.candidates import (
    NEVER_EVENTS,
    pair_features,
    primary_behavior,
    training_candidates,
    window_candidates,
    window_popularity,
)
from nextaction.data.dataset import Sequences
from nextaction.data.schema import TEST, VALID


def _window(data, *, split=TEST, seed=0, ratio=5):
    return window_candidates(
        data.seqs,
        split=split,
        n_behaviors=len(data.behaviors) - 1,
        popularity=window_popularity(data, split),
        ratio=ratio,
        seed=seed,
    )


def test_sampler_is_deterministic_for_a_seed():
    data = funnel_dataset(n_users=80)
    a, b, c = _window(data, seed=3), _window(data, seed=3), _window(data, seed=4)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.items, c.items)


def test_positives_are_the_window_items_with_their_behaviours():
    data = funnel_dataset(n_users=60)
    cands = _window(data, ratio=4)
    seqs = data.seqs
    split = np.asarray(seqs.split)
    for r in range(len(cands)):
        u = cands.user_idx[r]
        sl = seqs.of(int(u))
        items = np.asarray(seqs.items[sl])
        behs = np.asarray(seqs.behaviors[sl])
        in_win = split[sl] == TEST
        truth = {(int(i), int(b)) for i, b in zip(items[in_win], behs[in_win], strict=True)}
        cand_items = cands.items[cands.offsets[r] : cands.offsets[r + 1]]
        cand_labels = cands.labels[cands.offsets[r] : cands.offsets[r + 1]]
        got = {
            (int(i), b + 1)
            for i, row in zip(cand_items, cand_labels, strict=True)
            for b in np.flatnonzero(row)
        }
        assert got == truth
        positives = cand_labels.any(axis=1)
        assert len(set(cand_items.tolist())) == len(cand_items)  # no duplicates
        # up to ratio negatives per positive, none of them a positive
        assert (~positives).sum() <= 4 * positives.sum()
        # the history ends where the window starts
        assert (
            split[cands.hist_end[r]] == TEST
            and (split[cands.hist_start[r] : cands.hist_end[r]] != TEST).all()
        )


def test_negatives_follow_popularity():
    data = funnel_dataset(n_users=150)
    cands = _window(data, ratio=20, split=VALID)
    pop = window_popularity(data, VALID)
    neg = cands.items[~cands.labels.any(axis=1)]
    sampled_pop = pop[neg].mean()
    assert sampled_pop > pop[1:].mean()  # popular items are drawn more often than uniform would


def test_padded_matches_flat():
    data = funnel_dataset(n_users=30)
    cands = _window(data)
    rows = np.array([2, 3, 4])
    items, valid = cands.padded(rows)
    np.testing.assert_array_equal(items[valid], cands.items[cands.offsets[2] : cands.offsets[5]])
    assert (items[~valid] == 0).all()


def test_primary_behavior():
    assert primary_behavior(["<pad>", "view", "cart", "buy"]) == 3
    assert primary_behavior(["<pad>", "watch", "like"]) == 2
    assert primary_behavior(["<pad>", "interact"]) is None


def test_training_labels_look_into_the_horizon_only():
    # one window: items 5 6 7 5 8 with behaviours view view view buy view
    items = torch.tensor([[5, 6, 7, 5, 8, 0]])
    behaviors = torch.tensor([[1, 1, 1, 3, 1, 0]])
    from nextaction.behavior.candidates import ContemporaryItems, ItemStats
    from nextaction.data.dataset import Sequences

    times = torch.arange(6)[None] * 1000
    flat = Sequences(
        offsets=np.array([0, 5]),
        items=items[0, :5].numpy(),
        behaviors=behaviors[0, :5].numpy(),
        timestamps=times[0, :5].numpy(),
        split=np.zeros(5, dtype=np.int8),
    )
    tc = training_candidates(
        items,
        behaviors,
        times,
        stats=ItemStats(flat, 3),
        negatives=ContemporaryItems(flat, window=2),
        n_behaviors=3,
        horizon=2,
        n_negatives=2,
        gen=torch.Generator().manual_seed(0),
    )
    assert tc.items.shape == (1, 5, 5) and tc.labels.shape == (1, 5, 5, 3)
    assert tc.mask.tolist() == [[True, True, True, True, False]]
    # position 0 (after item 5): the next item 6 is a viewed positive
    assert tc.items[0, 0, 0] == 6 and tc.labels[0, 0, 0].tolist() == [1, 0, 0]
    # position 1 (after item 6): future = 7 (view), 5 (buy); candidate "next" = 7
    assert tc.labels[0, 1, 0].tolist() == [1, 0, 0]
    # position 0: item 5's buy is 3 events ahead, beyond the horizon of 2, so any candidate 5 is not a buy
    is5 = tc.items[0, 0] == 5
    assert (tc.labels[0, 0][is5][:, 2] == 0).all()
    # at position 2 the next event is the buy of item 5
    assert tc.items[0, 2, 0] == 5 and tc.labels[0, 2, 0].tolist() == [0, 0, 1]
    # negatives are real items active right after the position: the 2 events following t+1
    assert (tc.items[..., 3:] >= 1).all()
    for t in range(4):
        allowed = set(items[0, min(t + 1, 3) : min(t + 1, 3) + 2].tolist())
        assert set(tc.items[0, t, 3:].tolist()) <= allowed, (t, tc.items[0, t, 3:], allowed)
    # item statistics as of the next event: at position 2 (next event at t=3000) item 5 was viewed once
    assert tc.stats.shape == (1, 5, 5, 4)
    assert torch.expm1(tc.stats[0, 2, 0, 0]).round() == 1 and tc.stats[0, 2, 0, 2] == 0


def test_item_stats_count_only_the_past():
    from nextaction.behavior.candidates import ItemStats
    from nextaction.data.dataset import Sequences

    # item 1: view at t=1000, buy at t=2000; item 2: view at t=1500 (TEST split: never counted)
    seqs = Sequences(
        offsets=np.array([0, 3]),
        items=np.array([1, 1, 2]),
        behaviors=np.array([1, 2, 1]),
        timestamps=np.array([1000, 2000, 1500]),
        split=np.array([0, 0, 2], dtype=np.int8),
    )
    stats = ItemStats(seqs, 2)
    f = np.expm1(stats.features(np.array([1, 1, 1, 2]), np.array([1000, 1001, np.inf, np.inf])))
    np.testing.assert_allclose(f[:, 0], [0, 1, 1, 0])  # views strictly before t
    np.testing.assert_allclose(f[:, 1], [0, 0, 1, 0])  # buys
    np.testing.assert_allclose(f[:, 2], [0, 1, 2, 0])  # any behaviour within the last week
    everything = ItemStats(seqs, 2, exclude_split=None)
    assert np.expm1(everything.features(np.array([2]), np.inf))[0, 0] == 1


def test_pair_features_count_the_history_and_handle_empty_ones():
    # one user: view 7, view 3, cart 7 (at 0, 1, 2 s); a second user with no events
    seqs = Sequences(
        offsets=np.array([0, 3, 3]),
        items=np.array([7, 3, 7], dtype=np.int32),
        behaviors=np.array([1, 1, 2], dtype=np.int8),
        timestamps=np.array([0, 1000, 2000]),
        split=np.zeros(3, dtype=np.int8),
    )
    counts = np.array([[10.0, 2.0], [0.0, 0.0], [4.0, 0.0]])  # item counts of view, cart per candidate
    x = pair_features(
        seqs,
        np.array([0, 3]),
        np.array([3, 3]),
        np.array([0, 0, 1]),
        np.array([7, 5, 7]),
        counts,
        np.array([0.1]),
    )
    nb = 2
    assert x.shape == (3, 5 * nb + 2)
    np.testing.assert_allclose(x[0, :nb], np.log1p([1, 1]))  # item 7: one view, one cart
    assert x[0, nb] == 0.0 and x[0, nb + 1] == 0.0  # last touched 0 events / 0 s before the history's end
    np.testing.assert_array_equal(x[0, nb + 2 : nb + 4], [0, 1])  # last behaviour on it: cart
    np.testing.assert_allclose(x[0, nb + 4 : nb + 6], np.log1p([10, 2]))
    np.testing.assert_allclose(x[0, nb + 6], (2 + 5 * 0.1) / (10 + 5), rtol=1e-6)  # smoothed cart rate
    np.testing.assert_allclose(x[0, -3:], np.log1p([3, 2, 1]))  # history length, views, carts
    for row in (1, 2):  # never touched (item 5), or no history at all (user 2)
        assert np.all(x[row, :nb] == 0) and x[row, nb] == np.float32(NEVER_EVENTS)
        assert np.all(x[row, nb + 2 : nb + 4] == 0)
    np.testing.assert_allclose(x[2, -3:], 0.0)
