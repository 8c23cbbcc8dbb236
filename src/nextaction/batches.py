"""Turning CSR event arrays into padded tensors: training windows and evaluation histories.

Padding is on the right (see model.py for why). Sequences longer than the model's ``max_len`` keep their
most recent events. Training windows are grouped by length so that a batch pads to nearly nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nextaction.data.dataset import Sequences
from nextaction.data.schema import TRAIN


@dataclass(frozen=True)
class Batch:
    items: torch.Tensor  # (B, L) long, 0 = padding
    behaviors: torch.Tensor  # (B, L) long
    timestamps: torch.Tensor  # (B, L) int64 ms

    @property
    def mask(self) -> torch.Tensor:
        return self.items != 0


def gather_padded(
    seqs: Sequences, starts: np.ndarray, lengths: np.ndarray, *, pad_to: int | None = None
) -> Batch:
    """Rows ``seqs[starts[b] : starts[b] + lengths[b]]``, right-padded to the longest row (or ``pad_to``)."""
    L = pad_to or max(1, int(lengths.max()) if len(lengths) else 1)
    idx = starts[:, None] + np.arange(L)[None, :]  # (B, L)
    valid = np.arange(L)[None, :] < lengths[:, None]
    idx = np.where(valid, idx, 0)

    def take(a: np.ndarray) -> np.ndarray:  # no events at all (an empty live history): all padding
        return np.where(valid, np.asarray(a)[idx], 0) if len(a) else np.zeros(idx.shape, dtype=np.int64)

    items, behaviors, times = take(seqs.items), take(seqs.behaviors), take(seqs.timestamps)
    return Batch(
        items=torch.from_numpy(items.astype(np.int64)),
        behaviors=torch.from_numpy(behaviors.astype(np.int64)),
        timestamps=torch.from_numpy(times.astype(np.int64)),
    )


def history_batch(
    seqs: Sequences, starts: np.ndarray, ends: np.ndarray, max_len: int, *, pad_to: int | None = None
) -> Batch:
    """The last ``max_len`` events of each history ``[starts, ends)``; empty histories give all-padding rows."""
    starts = np.maximum(starts, ends - max_len)
    return gather_padded(seqs, starts, ends - starts, pad_to=pad_to)


def from_lists(
    items: list[np.ndarray], behaviors: list[np.ndarray], timestamps: list[np.ndarray], max_len: int
) -> Batch:
    """Pad explicit per-row arrays (e.g. a live user's history) into a batch, keeping the last max_len."""
    items = [np.asarray(a)[-max_len:] for a in items]
    behaviors = [np.asarray(a)[-max_len:] for a in behaviors]
    timestamps = [np.asarray(a)[-max_len:] for a in timestamps]
    L = max(1, max((len(a) for a in items), default=1))
    out = [np.zeros((len(items), L), dtype=np.int64) for _ in range(3)]
    for r, (i, b, t) in enumerate(zip(items, behaviors, timestamps, strict=True)):
        out[0][r, : len(i)] = i
        out[1][r, : len(b)] = b
        out[2][r, : len(t)] = t
    return Batch(*(torch.from_numpy(a) for a in out))


def training_sequences(
    seqs: Sequences, *, also: np.ndarray | None = None, only: np.ndarray | None = None
) -> Sequences:
    """Only the TRAIN events of every user, as a compact CSR (what the model may learn from).

    also: optional (n_events,) bool mask of further events to learn from (validation events of users who
    are not validated, see train.validation_users). only: the (n_events,) mask of events to keep instead.
    """
    keep = np.asarray(seqs.split) == TRAIN if only is None else only
    if also is not None:
        keep = keep | also
    return _select_events(seqs, keep)


def select_users(seqs: Sequences, users: np.ndarray) -> Sequences:
    """The sequences of ``users`` (sorted user positions), renumbered 0 … len(users) - 1."""
    offsets = np.asarray(seqs.offsets)
    keep = np.zeros(len(offsets) - 1, dtype=bool)
    keep[np.asarray(users, dtype=np.int64)] = True
    return _select_events(seqs, np.repeat(keep, np.diff(offsets)), users=np.flatnonzero(keep))


def _select_events(seqs: Sequences, keep: np.ndarray, *, users: np.ndarray | None = None) -> Sequences:
    """The events where ``keep`` holds, as a CSR over every user (or over ``users`` only)."""
    lengths = np.diff(np.asarray(seqs.offsets))
    user = np.repeat(np.arange(len(lengths)), lengths)
    counts = np.bincount(user[keep], minlength=len(lengths))
    if users is not None:
        counts = counts[users]
    return Sequences(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=np.asarray(seqs.items)[keep],
        behaviors=np.asarray(seqs.behaviors)[keep],
        timestamps=np.asarray(seqs.timestamps)[keep],
        split=np.asarray(seqs.split)[keep],
    )


def training_windows(seqs: Sequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut every user's sequence, from its end, into windows of up to max_len + 1 events.

    A window of n events yields n - 1 (input, next-event) pairs. Consecutive windows overlap by one event
    so every event after a user's first is a target exactly once. Windows of a single event are dropped.
    Returns (starts, lengths) into ``seqs``.
    """
    offsets = np.asarray(seqs.offsets)
    lengths = np.diff(offsets)
    span = max_len  # targets per window
    n_windows = np.where(lengths >= 2, (lengths - 1 + span - 1) // span, 0)
    user = np.repeat(np.arange(len(lengths)), n_windows)
    # k-th window from the end of each user
    first_window = np.concatenate([[0], np.cumsum(n_windows)])[:-1]
    k = np.arange(len(user)) - np.repeat(first_window, n_windows)
    end = offsets[user + 1] - k * span  # exclusive
    start = np.maximum(end - span - 1, offsets[user])
    return start.astype(np.int64), (end - start).astype(np.int64)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Group window indices of similar length into batches, in random order.

    Sorting by (length, random key) keeps padding near zero; shuffling the batch order keeps the gradient
    unbiased across lengths.
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches
