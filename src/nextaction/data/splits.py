"""Train/valid/test splits of a prepared event log: pure functions on the sorted index frame.

The frame is sorted by (user_idx, timestamp, original row order). Each function returns one split code per
event (``TRAIN``/``VALID``/``TEST`` from the schema, Int8) and leaves the frame alone.

Leave-one-out: a user's *target* in split S is the user's first event coded S; later events coded S are
context that happened after the target (never history for it). Without a target behaviour the test target
is the last event and the valid target the one before. With a target behaviour ``b`` the test target is the
user's last ``b`` event and the valid target the previous ``b`` event; events after the test target are
TEST and events between the two targets are VALID. A target needs at least one earlier event (its
history), so a user with one event is all TRAIN and a user with two events gets only a test target.

Temporal: one global cutoff. Events at or after the test cutoff are TEST, events in the validation window
``[valid_cutoff, test_cutoff)`` are VALID, all earlier ones TRAIN. Cutoffs are given as times or derived
from fractions of events.

Users (k-fold by user, the knowledge-tracing protocol): users are dealt into ``folds`` folds; every event of
a user of fold ``fold`` is TEST, every event of a user of the next fold (``fold % folds + 1``) VALID, the
rest TRAIN. The folds come from a file (``user_folds``: user id → fold, as a published split gives them) or
from a seeded shuffle of the users. Test users are never seen in training: their whole history is predicted
event by event.

Logs without a clock (``--map order=…``, sequences files) order each user's events but cannot be compared
across users, so ``auto`` splits them by position (leave-one-out) and a temporal split is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import polars as pl

from nextaction.config import known_options
from nextaction.data.dataset import Sequences
from nextaction.data.schema import (
    BEHAVIOR_IDX,
    CLOCK_POSITIONS,
    CLOCK_TIMESTAMPS,
    SPLIT,
    SPLIT_NAMES,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_IDX,
    VALID,
)
from nextaction.data.vocab import normalize_behavior
from nextaction.errors import InputError

SplitKind = Literal["auto", "leave_one_out", "temporal", "users", "none"]
SPLIT_KINDS: Final = ("auto", "leave_one_out", "temporal", "users", "none")


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """How to split. ``auto``: leave-one-out when a target behaviour is given or the log has a single
    behaviour type, else temporal with the fractions below. ``none``: everything TRAIN.

    Cutoffs (temporal only) are ISO times (``2017-12-01`` or ``2017-12-01T12:00:00+00:00``; naive means
    UTC) or integer milliseconds since the epoch; a given cutoff wins over its fraction. The validation
    window holds ``valid_fraction`` of all events just before the test cutoff unless ``valid_cutoff`` is set.
    """

    kind: SplitKind = "auto"
    target_behavior: str | None = None
    test_cutoff: str | int | None = None
    valid_cutoff: str | int | None = None
    test_fraction: float = 0.1
    valid_fraction: float = 0.1
    # kind "users": k folds by user; this run tests fold ``fold`` and validates on the next one
    folds: int = 5
    fold: int = 1
    user_folds: str | None = None  # CSV/TSV with a user id and a fold (1 … folds) per user; None = shuffle
    fold_seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise InputError(f"split kind {self.kind!r} is unknown; use one of {', '.join(SPLIT_KINDS)}")
        for name in ("test_fraction", "valid_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise InputError(f"split {name} must be a number in [0, 1), got {value!r}")
        if self.test_fraction + self.valid_fraction >= 1:
            raise InputError("split test_fraction + valid_fraction must be below 1")
        test_ms, valid_ms = parse_time(self.test_cutoff), parse_time(self.valid_cutoff)
        if test_ms is not None and valid_ms is not None and valid_ms > test_ms:
            raise InputError("split valid_cutoff must not be after test_cutoff")
        if self.kind in ("leave_one_out", "users") and (test_ms is not None or valid_ms is not None):
            raise InputError("split cutoffs apply to the temporal split only; drop them or use kind temporal")
        for name, low in (("folds", 3), ("fold", 1), ("fold_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"split {name} must be a whole number ≥ {low}, got {value!r}")
        if self.fold > self.folds:
            raise InputError(
                f"split fold {self.fold} is beyond folds = {self.folds}; choose 1 … {self.folds}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitConfig:
        return cls(**known_options(cls, data, "split"))


def parse_time(value: str | int | None) -> int | None:
    """ISO time or epoch milliseconds → epoch milliseconds (naive times are UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"bad time {value!r}: give an ISO time like 2017-12-01 or epoch milliseconds")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"bad time {value!r}: give an ISO time like 2017-12-01 or epoch milliseconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def iso_time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def leave_one_out(events: pl.DataFrame, *, target_behavior_idx: int | None = None) -> pl.Series:
    """Split codes for a leave-one-out split (see module docstring); ``events`` sorted by user then time.

    Plain numpy on the user runs: the frame is sorted, so each user is one contiguous run (and Polars 2.1's
    default streaming engine gave misaligned ``over()`` results for this chain of window expressions).
    """
    users = events[USER_IDX].to_numpy()
    n = len(users)
    if n == 0:
        return pl.Series(SPLIT, [], dtype=pl.Int8)
    starts = np.concatenate([[0], np.flatnonzero(users[1:] != users[:-1]) + 1])
    run = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
    pos = np.arange(n) - starts[run]  # position within the user's sequence
    if target_behavior_idx is None:
        is_target = np.ones(n, dtype=bool)
    else:
        is_target = events[BEHAVIOR_IDX].to_numpy() == target_behavior_idx
    # -1 = no such target; a target at position 0 has no history and is not used either.
    test_pos = np.maximum.reduceat(np.where(is_target, pos, -1), starts)[run]
    valid_pos = np.maximum.reduceat(np.where(is_target & (pos < test_pos), pos, -1), starts)[run]
    codes = np.full(n, TRAIN, dtype=np.int8)
    codes[(valid_pos >= 1) & (pos >= valid_pos)] = VALID
    codes[(test_pos >= 1) & (pos >= test_pos)] = TEST
    return pl.Series(SPLIT, codes, dtype=pl.Int8)


def temporal(events: pl.DataFrame, *, test_cutoff_ms: int | None, valid_cutoff_ms: int | None) -> pl.Series:
    """Split codes for a global temporal split; ``None`` cutoffs mean no test / no validation window."""
    ts = pl.col(TIMESTAMP)
    is_test = pl.lit(False) if test_cutoff_ms is None else ts >= test_cutoff_ms
    is_valid = pl.lit(False) if valid_cutoff_ms is None else ts >= valid_cutoff_ms
    code = (
        pl.when(is_test)
        .then(pl.lit(TEST, pl.Int8))
        .when(is_valid)
        .then(pl.lit(VALID, pl.Int8))
        .otherwise(pl.lit(TRAIN, pl.Int8))
    )
    # with_columns broadcasts a literal (no cutoffs) to the frame's height; select would not.
    return events.select(TIMESTAMP).with_columns(code.alias(SPLIT)).get_column(SPLIT)


def fraction_cutoffs(
    timestamps: np.ndarray, *, test_fraction: float, valid_fraction: float, test_cutoff_ms: int | None = None
) -> tuple[int | None, int | None]:
    """Cutoff times such that about ``test_fraction`` of events are at or after the test cutoff and
    ``valid_fraction`` of events fall in the window before it (more when timestamps tie at a cutoff).

    With ``test_cutoff_ms`` given, only the validation cutoff is derived.
    """
    n = len(timestamps)
    if n == 0:
        return test_cutoff_ms, None
    if test_cutoff_ms is None:
        k_test = n - round(n * test_fraction)
        test_cutoff_ms = None if k_test >= n else _kth(timestamps, k_test)
    else:
        k_test = int(np.count_nonzero(timestamps < test_cutoff_ms))
    n_valid = round(n * valid_fraction)
    if n_valid == 0:
        return test_cutoff_ms, None
    return test_cutoff_ms, _kth(timestamps, max(k_test - n_valid, 0))


def _kth(values: np.ndarray, k: int) -> int:
    # np.partition is O(n); a full sort of 10M timestamps is not needed for one order statistic.
    return int(np.partition(values, k)[k])


def user_folds(user_ids: pl.Series, config: SplitConfig, *, read_folds: Any = None) -> tuple[np.ndarray, str]:
    """(n_users,) fold (1 … folds) of each user (row i = user_idx i + 1), and where the folds came from.

    ``read_folds(path) -> {user_id: fold}`` reads ``config.user_folds`` (given by the caller, which owns
    file reading); users absent from it are an error, as a silent default fold would leak them into train.
    """
    n = len(user_ids)
    if config.user_folds is None:
        # a seeded shuffle of the users in id order: the same folds for the same users on every machine
        order = np.argsort(np.asarray(user_ids.to_list(), dtype=object), kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[np.random.default_rng(config.fold_seed).permutation(order)] = np.arange(n)
        return (rank % config.folds + 1).astype(np.int64), f"shuffle (seed {config.fold_seed})"
    if read_folds is None:
        raise ValueError("split user_folds needs read_folds")
    given: Mapping[str, int] = read_folds(config.user_folds)
    folds = np.array([given.get(u, 0) for u in user_ids.to_list()], dtype=np.int64)
    missing = int((folds == 0).sum())
    if missing:
        example = user_ids.to_list()[int(np.flatnonzero(folds == 0)[0])]
        raise InputError(
            f"split user_folds has no fold for {missing} users of the log (e.g. {example!r}); give every "
            "user a fold",
            path=config.user_folds,
        )
    bad = (folds < 1) | (folds > config.folds)
    if bad.any():
        raise InputError(
            f"split user_folds gives fold {int(folds[bad][0])}; folds must be 1 … {config.folds}",
            path=config.user_folds,
        )
    return folds, f"file {config.user_folds}"


def by_user(events: pl.DataFrame, folds: np.ndarray, *, fold: int, n_folds: int) -> pl.Series:
    """Split codes for a k-fold user split: fold ``fold`` is TEST, the next fold VALID, the others TRAIN."""
    of_event = folds[events[USER_IDX].to_numpy() - 1]
    codes = np.full(events.height, TRAIN, dtype=np.int8)
    codes[of_event == fold % n_folds + 1] = VALID
    codes[of_event == fold] = TEST
    return pl.Series(SPLIT, codes, dtype=pl.Int8)


def split_events(
    events: pl.DataFrame,
    config: SplitConfig,
    behaviors: Sequence[str],
    *,
    clock: str = CLOCK_TIMESTAMPS,
    user_ids: pl.Series | None = None,
    read_folds: Any = None,
) -> tuple[pl.Series, dict[str, Any]]:
    """Apply ``config`` to the sorted index frame. Returns the split codes and what was done (for the report).

    ``behaviors`` is the behaviour vocabulary (``behaviors[0] == "<pad>"``); ``clock`` what the timestamps
    are (CLOCK_POSITIONS: only an order per user); ``user_ids`` (row i = user_idx i + 1) and ``read_folds``
    serve the ``users`` kind (see :func:`user_folds`).
    """
    target_idx = None
    target = None
    if config.target_behavior is not None:
        target = normalize_behavior(config.target_behavior)
        if target not in behaviors[1:]:
            raise InputError(
                f"split target behaviour {config.target_behavior!r} is not in the data; "
                f"the behaviours are: {', '.join(behaviors[1:])}"
            )
        target_idx = behaviors.index(target)

    kind = config.kind
    reason = "configured"
    positions = clock == CLOCK_POSITIONS
    if kind == "temporal" and positions:
        raise InputError(
            "the log has no clock (its events are only numbered per user), so a temporal split has no common "
            "time to cut at; use split kind leave_one_out or users"
        )
    if kind == "auto":
        if positions:
            kind, reason = "leave_one_out", "auto: the log has no clock (order only): split by position"
        elif target is not None:
            kind, reason = "leave_one_out", "auto: a target behaviour was given"
        elif len(behaviors) - 1 <= 1:
            kind, reason = "leave_one_out", "auto: the log has one behaviour type"
        else:
            kind, reason = "temporal", f"auto: the log has {len(behaviors) - 1} behaviour types"

    test_ms = valid_ms = None
    if kind == "leave_one_out":
        codes = leave_one_out(events, target_behavior_idx=target_idx)
    elif kind == "temporal":
        test_ms, valid_ms = parse_time(config.test_cutoff), parse_time(config.valid_cutoff)
        if test_ms is None or valid_ms is None:
            test_ms, derived_valid = fraction_cutoffs(
                events[TIMESTAMP].to_numpy(),
                test_fraction=config.test_fraction,
                valid_fraction=config.valid_fraction,
                test_cutoff_ms=test_ms,
            )
            valid_ms = derived_valid if valid_ms is None else valid_ms
        if valid_ms is not None and test_ms is not None and valid_ms > test_ms:
            raise InputError(
                f"split valid_cutoff {iso_time(valid_ms)} is after the test cutoff {iso_time(test_ms)}; "
                "choose an earlier valid_cutoff or a smaller test_fraction"
            )
        codes = temporal(events, test_cutoff_ms=test_ms, valid_cutoff_ms=valid_ms)
    elif kind == "users":
        if user_ids is None:
            raise ValueError("split kind users needs the user ids")
        folds, source = user_folds(user_ids, config, read_folds=read_folds)
        codes = by_user(events, folds, fold=config.fold, n_folds=config.folds)
    else:
        codes = pl.Series(SPLIT, np.full(events.height, TRAIN, dtype=np.int8))

    info: dict[str, Any] = {
        "kind": kind,
        "chosen": reason,
        "target_behavior": target,
        "test_cutoff": iso_time(test_ms),
        "valid_cutoff": iso_time(valid_ms),
    }
    if kind == "temporal":
        info["test_fraction"] = config.test_fraction if config.test_cutoff is None else None
        info["valid_fraction"] = config.valid_fraction if config.valid_cutoff is None else None
        if target is not None:
            info["note"] = "temporal split: the target behaviour does not change the split codes"
    if kind == "users":
        info.update(folds=config.folds, fold=config.fold, valid_fold=config.fold % config.folds + 1)
        info["fold_source"] = source
    info.update(split_counts(events[USER_IDX], codes))
    return codes, info


def split_counts(users: pl.Series, codes: pl.Series) -> dict[str, dict[str, int]]:
    """Events and distinct users per split, keyed by split name."""
    stats = (
        pl.DataFrame({USER_IDX: users, SPLIT: codes})
        .group_by(SPLIT)
        .agg(events=pl.len(), users=pl.col(USER_IDX).n_unique())
    )
    by_code = {row[SPLIT]: row for row in stats.iter_rows(named=True)}
    return {
        key: {name: int(by_code.get(code, {}).get(key, 0)) for code, name in enumerate(SPLIT_NAMES)}
        for key in ("events", "users")
    }


def split_summary(info: Mapping[str, Any]) -> str:
    """One line for logs: ``leave_one_out: train 90 / valid 5 / test 5 events``."""
    counts = info.get("events", {})
    parts = " / ".join(f"{name} {counts.get(name, 0)}" for name in SPLIT_NAMES)
    extra = f" (cutoff {info['test_cutoff']})" if info.get("test_cutoff") else ""
    return f"{info.get('kind')}: {parts} events{extra}"


def repeated_targets(seqs: Sequences, split: int) -> dict[str, float | int]:
    """How many of ``split``'s targets (each user's first event in it) repeat an item of that user's history.

    A dataset property that decides how much excluding seen items matters: with exclusion such a target can
    never be recommended (a miss), without it the repeat is the easiest hit.
    """
    codes = np.asarray(seqs.split)
    offsets = np.asarray(seqs.offsets)
    items = np.asarray(seqs.items).astype(np.int64)
    pos = np.flatnonzero(codes == split)
    users = np.searchsorted(offsets, pos, side="right") - 1
    first = np.concatenate([[True], users[1:] != users[:-1]]) if len(users) else np.zeros(0, bool)
    pos, users = pos[first], users[first]
    starts = offsets[users]
    lengths = pos - starts
    row = np.repeat(np.arange(len(pos)), lengths)
    hist = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[row]
    width = int(items.max(initial=0)) + 1
    repeats = int(np.isin(np.arange(len(pos)) * width + items[pos], row * width + items[hist]).sum())
    return {
        "targets": len(pos),
        "repeats": repeats,
        "share": round(repeats / len(pos), 4) if len(pos) else 0.0,
    }
