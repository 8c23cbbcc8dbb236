"""Training batches: windows cover every target once, only train events, deterministic length batches."""

import numpy as np

from factories import cyclic_dataset
from nextaction.batches import length_batches, training_sequences, training_windows


def test_windows_cover_every_target_once():
    data = cyclic_dataset(n_users=5, n_items=30, length=23)
    seqs = training_sequences(data.seqs)
    starts, lengths = training_windows(seqs, max_len=5)
    targets = []
    for s, n in zip(starts, lengths, strict=True):
        assert 2 <= n <= 6
        targets += list(range(s + 1, s + n))
    # every training event except each user's first is a target exactly once
    expected = [p for u in range(1, 6) for p in range(seqs.offsets[u] + 1, seqs.offsets[u + 1])]
    assert sorted(targets) == expected


def test_training_sequences_hold_only_train_events():
    data = cyclic_dataset(n_users=4, n_items=10, length=6)
    seqs = training_sequences(data.seqs)
    assert len(seqs.items) == 4 * 4
    assert (np.asarray(seqs.split) == 0).all()


def test_length_batches_partition_and_are_deterministic():
    lengths = np.array([3, 9, 4, 3, 8, 2, 2, 7])
    a = length_batches(lengths, 3, np.random.default_rng(1))
    b = length_batches(lengths, 3, np.random.default_rng(1))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert sorted(np.concatenate(a).tolist()) == list(range(8))
