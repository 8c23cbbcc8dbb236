"""The prepared dataset: what ``nextaction prepare`` writes and every later stage reads.

On disk (``DATA_DIR``)::

    events.parquet     user_idx, item_idx, behavior_idx, timestamp (int64 ms), value (float, nullable), split
    users.parquet      user_idx, user_id            (user_id may be an HMAC pseudonym)
    items.parquet      item_idx, item_id, [item feature columns …]
    behaviors.json     ["<pad>", "view", "cart", …]   (position = behavior_idx)
    seq_*.npy          the same events as compact CSR arrays (memory-mappable):
                       seq_offsets (U+1,) int64; seq_items int32; seq_behaviors int8; seq_timestamps int64;
                       seq_split int8  (0 train, 1 valid, 2 test)
    report.json        what was read, rejected, removed and kept, and how the split was made
    rejects.csv        every row we could not use, with its line number and reason

Events are sorted by (user_idx, timestamp, original row order). Index 0 is padding for users, items and
behaviours, so user ``u``'s events are ``seq_*[seq_offsets[u]:seq_offsets[u + 1]]`` and user 0 is empty.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextaction.data.schema import (
    BEHAVIOR_IDX,
    CLOCK_TIMESTAMPS,
    ITEM_ID,
    ITEM_IDX,
    SPLIT,
    TIMESTAMP,
    USER_ID,
    USER_IDX,
)
from nextaction.errors import InputError

FORMAT_VERSION = 1
_ARRAYS = ("offsets", "items", "behaviors", "timestamps", "split")


@dataclass(frozen=True)
class Sequences:
    """All users' event sequences as CSR arrays (see module docstring). Index with :meth:`of`."""

    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (E,) int32
    behaviors: np.ndarray  # (E,) int8
    timestamps: np.ndarray  # (E,) int64 ms
    split: np.ndarray  # (E,) int8

    @property
    def n_users(self) -> int:
        """Number of user slots including the padding user 0."""
        return len(self.offsets) - 1

    def of(self, user_idx: int) -> slice:
        return slice(int(self.offsets[user_idx]), int(self.offsets[user_idx + 1]))

    @classmethod
    def from_events(cls, events: pl.DataFrame, n_users: int) -> Sequences:
        """Build from an events frame already sorted by (user_idx, timestamp, row order).

        ``n_users`` counts real users; user indices run 1..n_users (0 is padding).
        """
        counts = np.bincount(events[USER_IDX].to_numpy(), minlength=n_users + 1)
        return cls(
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            items=events[ITEM_IDX].to_numpy().astype(np.int32, copy=False),
            behaviors=events[BEHAVIOR_IDX].to_numpy().astype(np.int8, copy=False),
            timestamps=events[TIMESTAMP].to_numpy().astype(np.int64, copy=False),
            split=events[SPLIT].to_numpy().astype(np.int8, copy=False),
        )

    @classmethod
    def from_arrays(
        cls, items: np.ndarray, behaviors: np.ndarray, timestamps: np.ndarray, lengths: np.ndarray
    ) -> Sequences:
        """Live histories (not part of a dataset) laid end to end: row r has the next ``lengths[r]`` events.
        Their split is TRAIN (0): they are all history."""
        return cls(
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            items=np.asarray(items).astype(np.int32),
            behaviors=np.asarray(behaviors).astype(np.int8),
            timestamps=np.asarray(timestamps).astype(np.int64),
            split=np.zeros(len(items), dtype=np.int8),
        )


@dataclass
class PreparedDataset:
    """A clean, indexed, split event log. Build it with ``nextaction.data.prepare.prepare`` or :meth:`load`."""

    events: pl.DataFrame  # USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, VALUE, SPLIT — sorted
    users: pl.DataFrame  # USER_IDX, USER_ID  (row i has user_idx i+1)
    items: pl.DataFrame  # ITEM_IDX, ITEM_ID, feature columns (row i has item_idx i+1)
    behaviors: list[str]  # behaviors[0] == "<pad>"
    report: dict[str, Any] = field(default_factory=dict)
    sequences: Sequences | None = None

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height

    @property
    def seqs(self) -> Sequences:
        if self.sequences is None:
            self.sequences = Sequences.from_events(self.events, self.n_users)
        return self.sequences

    @property
    def clock(self) -> str:
        """``report["clock"]``: CLOCK_POSITIONS when the log only orders events (its timestamps are positions
        × 1000 ms), else CLOCK_TIMESTAMPS (also for datasets prepared before the report recorded it)."""
        return str(self.report.get("clock", CLOCK_TIMESTAMPS))

    def user_index(self) -> dict[str, int]:
        return dict(zip(self.users[USER_ID].to_list(), self.users[USER_IDX].to_list(), strict=True))

    def item_index(self) -> dict[str, int]:
        return dict(zip(self.items[ITEM_ID].to_list(), self.items[ITEM_IDX].to_list(), strict=True))

    def save(self, out_dir: str | Path, *, rejects: pl.DataFrame | None = None) -> Path:
        """Write atomically: everything goes to a temporary sibling folder that is then renamed."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError("exists and is not a directory; choose another --out", path=out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            self.events.write_parquet(tmp / "events.parquet")
            self.users.write_parquet(tmp / "users.parquet")
            self.items.write_parquet(tmp / "items.parquet")
            (tmp / "behaviors.json").write_text(json.dumps(self.behaviors))
            seqs = self.seqs
            for name in _ARRAYS:
                np.save(tmp / f"seq_{name}.npy", getattr(seqs, name))
            report = dict(self.report, format_version=FORMAT_VERSION)
            (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
            if rejects is not None:
                rejects.write_csv(tmp / "rejects.csv")
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def load(cls, data_dir: str | Path, *, mmap: bool = True) -> PreparedDataset:
        d = Path(data_dir)
        if not (d / "events.parquet").is_file():
            raise InputError(
                "is not a prepared dataset (no events.parquet); run `nextaction prepare` first", path=d
            )
        seqs = Sequences(
            **{name: np.load(d / f"seq_{name}.npy", mmap_mode="r" if mmap else None) for name in _ARRAYS}
        )
        return cls(
            events=pl.read_parquet(d / "events.parquet"),
            users=pl.read_parquet(d / "users.parquet"),
            items=pl.read_parquet(d / "items.parquet"),
            behaviors=json.loads((d / "behaviors.json").read_text()),
            report=json.loads((d / "report.json").read_text()),
            sequences=seqs,
        )
