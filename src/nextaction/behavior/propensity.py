"""User propensity: will user U do behaviour b at all within the coming horizon?

    P(U does b in [t0, t0 + horizon) | U's events before t0)

the question behind campaign targeting and churn. It is asked of a user, not of a (user, item) pair, so it
has its own examples, features, second stage and evaluation:

- examples (:func:`propensity_examples`): for a window start ``t0``, every user with at least one event
  before ``t0``; label b = the user does b in ``[t0, t0 + horizon)``. The user's events at or after ``t0``
  never enter the features.
- features: recency / frequency / monetary-style counts (:func:`rfm_features`, what the baselines read) and
  the transformer's view of the history at ``t0`` (:func:`model_signals`: the behaviour head's max and
  log-sum-exp logit over the user's likely next items, the next-item log-partition, the user state).
- the stage (:class:`PropensityStage`): a logistic regression per behaviour over the RFM features plus the
  transformer signals that win on the validation window (cross-fitted AUC, folds by user), then Platt
  scaling of its cross-fitted logits. It is fitted on the validation window (starts inside it whose label
  windows end before the test cutoff), as the behaviour ranker is; one stage per horizon of a small ladder
  (1d, 7d, 30d) that the validation window can label (:func:`fit_propensity`).
- evaluation (:func:`evaluate_propensity`): window start = the test cutoff; the model against logistic
  regression and gradient boosting on the same RFM features, fitted and calibrated the same way on the
  same examples; AUC with its bootstrap SD over users, log-loss, ECE, and the paired difference to the
  better baseline with a 95% bootstrap interval.

Horizons (:func:`parse_horizon`): "30m", "24h", "7d", "2w", "500ms", or an int of milliseconds; on logs that
only order events (clock "positions") a number of events: "10e", "10" or 10.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nextaction.behavior.calibration import Platt
from nextaction.behavior.candidates import ItemStats, expand_spans, primary_behavior
from nextaction.behavior.ranker import SCORE_BUDGET, user_states
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import CLOCK_POSITIONS, CLOCK_TIMESTAMPS, TEST, VALID
from nextaction.data.splits import iso_time, parse_time
from nextaction.errors import InputError
from nextaction.evaluation.metrics import (
    AUC_BOOTSTRAP_DRAWS,
    ECE_BINS,
    auc,
    auc_bootstrap_sd,
    expected_calibration_error,
    log_loss,
    paired_auc_difference,
)
from nextaction.evaluation.ranking import chunks
from nextaction.model import NextActionModel

MS_PER_EVENT = 1000  # a "positions" log stores position p as p × 1000 ms
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_NAME_UNITS = (("d", _UNITS_MS["d"]), ("h", _UNITS_MS["h"]), ("m", _UNITS_MS["m"]), ("s", _UNITS_MS["s"]))
_HORIZON = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w|e)?\s*$")
# the horizons a stage is fitted for, when the validation window can label them; the last one that the test
# window can label (7d preferred) is the one evaluated and served by default
HORIZONS: dict[str, tuple[str, ...]] = {CLOCK_TIMESTAMPS: ("1d", "7d", "30d"), CLOCK_POSITIONS: ("1e", "10e")}
PREFERRED = {CLOCK_TIMESTAMPS: "7d", CLOCK_POSITIONS: "10e"}
MAX_STARTS = 3  # window starts in the validation window: more examples per user, each a transformer pass
SHORTLIST = 64  # next-item candidates (history items first) whose behaviour logits summarise a user
NEVER_DAYS = float(np.log1p(10 * 365))  # "days since" for a behaviour never done: beyond any real value
STAGE_C = 0.1  # inverse L2 strength of the stage's logistic regressions (as the behaviour ranker's)
FOLDS = 3  # cross-fitting folds, by user: feature choice and Platt read out-of-fold scores only
SELECT_MARGIN = 0.001  # a richer feature set must beat a simpler one's cross-fitted AUC by this much
MIN_POSITIVES = 10  # fewer positives (or negatives) than this: the behaviour's base rate, no regression
OPTIONS: tuple[tuple[str, ...], ...] = (("rfm",), ("rfm", "head"), ("rfm", "head", "state"))
BASELINES = ("logreg", "gbm")
# users fitted on at most (a fixed sample beyond): every example is a full next-item scoring of a history
FIT_USERS = 50_000
_MS_PER_DAY = _UNITS_MS["d"]


# ---- horizons ---------------------------------------------------------------------------------------


def parse_horizon(horizon: str | int, *, clock: str = CLOCK_TIMESTAMPS) -> int:
    """A horizon -> milliseconds on the log's clock (a number of events × 1000 on "positions" logs).

    "7d", "24h", "30m", "90s", "500ms", "2w" or an int (milliseconds); "10e", "10" or 10 (events) where the
    log only orders events. Raises InputError for anything else.
    """
    positions = clock == CLOCK_POSITIONS
    if isinstance(horizon, bool) or not isinstance(horizon, int | str):
        raise InputError(f"horizon must be like 7d, 24h or 30m (or milliseconds), got {horizon!r}")
    m = _HORIZON.match(str(horizon).lower())
    if m is None:
        raise InputError(
            f"bad horizon {horizon!r}: give a number of events like 10e (this log has no timestamps)"
            if positions
            else f"bad horizon {horizon!r}: give it like 7d, 24h, 30m or as milliseconds"
        )
    n, unit = int(m.group(1)), m.group(2)
    if n <= 0:
        raise InputError(f"horizon must be positive, got {horizon!r}")
    if positions:
        if unit not in (None, "e"):
            raise InputError(
                f"horizon {horizon!r} is a duration, but this log only orders events (no timestamps): "
                "give the horizon as a number of events, e.g. 10e"
            )
        return n * MS_PER_EVENT
    if unit == "e":
        raise InputError(
            f"horizon {horizon!r} counts events; this log has timestamps: give a duration like 7d or 24h"
        )
    return n * _UNITS_MS[unit or "ms"]


def horizon_name(ms: int, *, clock: str = CLOCK_TIMESTAMPS) -> str:
    """Milliseconds -> the name :func:`parse_horizon` reads back, in the largest whole unit up to days
    (604800000 -> "7d", 5400000 -> "90m"); a number of events ("10e") on positions logs."""
    if clock == CLOCK_POSITIONS:
        return f"{ms // MS_PER_EVENT}e"
    for unit, size in _NAME_UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def resolution(timestamps: np.ndarray) -> int:
    """The log's time grain in ms: the largest of 1d, 1h, 1m, 1s that divides every gap between
    timestamps (1 ms otherwise). A day-granular log covers the whole day of its last timestamp."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if len(ts) == 0:
        return 1
    gaps = ts - ts.min()
    for size in (_UNITS_MS["d"], _UNITS_MS["h"], _UNITS_MS["m"], _UNITS_MS["s"]):
        if not np.any(gaps % size):
            return size
    return 1


def split_cutoffs(data: PreparedDataset) -> tuple[int | None, int | None]:
    """(validation cutoff, test cutoff) in ms of a temporal split: the report's, else the first VALID / TEST
    event's time (datasets built without a recorded cutoff); None where the split has no such window."""
    info = data.report.get("split", {})
    seqs = data.seqs
    split, ts = np.asarray(seqs.split), np.asarray(seqs.timestamps)
    out: list[int | None] = []
    for key, code in (("valid_cutoff", VALID), ("test_cutoff", TEST)):
        value = parse_time(info.get(key))
        if value is None and np.any(split == code):
            value = int(ts[split == code].min())
        out.append(value)
    return out[0], out[1]


# ---- examples and features --------------------------------------------------------------------------


@dataclass(frozen=True)
class PropensityExamples:
    """One example per (user, window start): the history span before ``t0`` and the labels after it."""

    user_idx: np.ndarray  # (n,) int64 user positions in Sequences
    t0: np.ndarray  # (n,) int64 ms, the window start
    hist_start: np.ndarray  # (n,) int64 offsets into the Sequences arrays
    hist_end: np.ndarray  # (n,) int64 exclusive: the user's first event at or after t0
    labels: np.ndarray  # (n, NB) bool: the user does behaviour k + 1 in [t0, t0 + horizon)

    def __len__(self) -> int:
        return len(self.user_idx)


def propensity_examples(
    seqs: Sequences,
    *,
    starts: Sequence[int],
    horizon_ms: int,
    n_behaviors: int,
    users: np.ndarray | None = None,
) -> PropensityExamples:
    """Examples for every window start in ``starts`` (ms): each user (of ``users``, user positions, when
    given) with at least one event before the start; stacked start by start, users in order."""
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    ts = np.asarray(seqs.timestamps)
    beh = np.asarray(seqs.behaviors).astype(np.int64).clip(1, n_behaviors) - 1
    n_users = len(offsets) - 1
    user_of = np.repeat(np.arange(n_users), np.diff(offsets))
    allowed = np.ones(n_users, dtype=bool)
    if users is not None:
        allowed[:] = False
        allowed[np.asarray(users, dtype=np.int64)] = True
    parts: list[tuple[np.ndarray, ...]] = []
    for t0 in starts:
        # a user's events are sorted by time: those before t0 are a prefix of the user's span
        before = np.bincount(user_of[ts < t0], minlength=n_users)
        keep = np.flatnonzero((before > 0) & allowed)
        in_window = (ts >= t0) & (ts < t0 + horizon_ms)
        labels = np.zeros((n_users, n_behaviors), dtype=bool)
        labels[user_of[in_window], beh[in_window]] = True
        parts.append(
            (
                keep,
                np.full(len(keep), t0, np.int64),
                offsets[keep],
                offsets[keep] + before[keep],
                labels[keep],
            )
        )
    if not parts:
        empty = np.zeros(0, np.int64)
        return PropensityExamples(empty, empty, empty, empty, np.zeros((0, n_behaviors), bool))
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return PropensityExamples(
        user_idx=cols[0].astype(np.int64),
        t0=cols[1],
        hist_start=cols[2].astype(np.int64),
        hist_end=cols[3].astype(np.int64),
        labels=cols[4],
    )


def rfm_names(behaviors: Sequence[str]) -> list[str]:
    """Names of the :func:`rfm_features` columns for behaviour names ``behaviors`` (without "<pad>")."""
    per = ("count", "has", "days_since_last", "distinct_items", "count_last_horizon")
    return [f"{b}_{f}" for b in behaviors for f in per] + [
        "events",
        "distinct_items",
        "days_since_first",
        "days_since_last",
        "events_last_horizon",
    ]


def n_rfm_features(n_behaviors: int) -> int:
    return 5 * n_behaviors + 5


def rfm_features(
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    t0: np.ndarray,
    *,
    horizon_ms: int,
    n_behaviors: int,
) -> np.ndarray:
    """(n, 5 NB + 5) float32 recency / frequency / monetary-style counts of histories ``[hist_start,
    hist_end)`` (time-sorted) as of ``t0`` (n,) ms. Per behaviour: log1p count, done at all, log1p days
    since the last one (a large constant if never), log1p distinct items (the monetary stand-in), log1p
    count in the horizon-long period before t0; then log1p events, distinct items, days since the first
    and the last event, events in that period. Events at or after t0 must not be in the spans."""
    nb = n_behaviors
    hist_start = np.asarray(hist_start, dtype=np.int64)
    hist_end = np.asarray(hist_end, dtype=np.int64)
    t0 = np.asarray(t0, dtype=np.float64)
    n = len(hist_start)
    row, pos = expand_spans(hist_start, hist_end)
    ts = np.asarray(seqs.timestamps)[pos].astype(np.float64)
    items = np.asarray(seqs.items)[pos].astype(np.int64)
    key = row * nb + np.asarray(seqs.behaviors)[pos].astype(np.int64).clip(1, nb) - 1
    n_cols = int(items.max(initial=0)) + 1
    counts = np.bincount(key, minlength=n * nb).astype(np.float64)
    last = np.full(n * nb, -np.inf)
    np.maximum.at(last, key, ts)
    distinct = np.bincount(np.unique(key * n_cols + items) // n_cols, minlength=n * nb).astype(np.float64)
    recent_ev = ts >= t0[row] - horizon_ms
    recent = np.bincount(key[recent_ev], minlength=n * nb).astype(np.float64)
    days_last_b = np.where(
        counts > 0, np.log1p(np.maximum(np.repeat(t0, nb) - last, 0.0) / _MS_PER_DAY), NEVER_DAYS
    )
    per = np.stack(
        [
            np.log1p(counts),
            (counts > 0).astype(np.float64),
            days_last_b,
            np.log1p(distinct),
            np.log1p(recent),
        ],
        axis=-1,
    ).reshape(n, nb * 5)
    length = (hist_end - hist_start).astype(np.float64)
    all_ts = np.append(np.asarray(seqs.timestamps), 0).astype(np.float64)  # + a slot for empty histories
    has = length > 0
    first_t = all_ts[np.where(has, hist_start, -1)]
    last_t = all_ts[np.where(has, hist_end - 1, -1)]

    def since(t: np.ndarray) -> np.ndarray:
        return np.where(has, np.log1p(np.maximum(t0 - t, 0.0) / _MS_PER_DAY), NEVER_DAYS)

    overall = np.column_stack(
        [
            np.log1p(length),
            np.log1p(np.bincount(np.unique(row * n_cols + items) // n_cols, minlength=n)),
            since(first_t),
            since(last_t),
            np.log1p(np.bincount(row[recent_ev], minlength=n)),
        ]
    )
    return np.concatenate([per, overall], axis=1).astype(np.float32)


def n_head_signals(n_behaviors: int) -> int:
    """Width of the "head" block of :func:`model_signals`: max and log-sum-exp per behaviour + 2."""
    return 2 * n_behaviors + 2


@torch.no_grad()
def model_signals(
    model: NextActionModel,
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    t0: np.ndarray,
    *,
    stats: ItemStats | None,
    shortlist: int = SHORTLIST,
    chunk: int = 128,
) -> np.ndarray:
    """(n, 2 NB + 2 + D) float32: what the transformer says about each history at ``t0`` (n,) ms.

    Columns: per behaviour, the max and the log-sum-exp of the behaviour head's logit over the user's
    ``shortlist`` candidates (history items first, then the top next-item scores; item counts from
    ``stats`` as of t0) — how likely the user is to do b on *something*; the next-item log-partition and
    the top item's log-probability (how sure the model is of what comes next); the user state (D).
    Models without a behaviour head (or ``stats`` None) give zeros in the head columns.
    """
    model.eval()
    nb = model.cfg.n_behaviors - 1
    n = len(hist_start)
    head_w = n_head_signals(nb)
    out = np.zeros((n, head_w + model.cfg.dim), dtype=np.float32)
    rows_per_chunk = max(1, min(chunk, SCORE_BUDGET // (model.cfg.n_items + 1)))
    t0 = np.asarray(t0, dtype=np.float64)
    for rows in chunks(n, rows_per_chunk):
        hs, he = np.asarray(hist_start)[rows], np.asarray(hist_end)[rows]
        states = user_states(model, seqs, hs, he)
        dev = states.h.device
        upto = states.upto[:, 0]
        last = states.h[torch.arange(len(rows), device=dev), upto.clamp(min=0)].float()
        last = last.masked_fill((upto < 0)[:, None], 0.0)
        scores = states.scores
        top = scores.amax(dim=1, keepdim=True)
        out[rows, 2 * nb] = states.log_norm[:, 0].cpu().numpy()
        out[rows, 2 * nb + 1] = (top - states.log_norm)[:, 0].cpu().numpy()
        out[rows, head_w:] = last.cpu().numpy()
        if model.behavior is None or stats is None:
            continue
        # the history's items first (a large bonus), then the likeliest next items; padding never
        s = scores.clone().scatter_(1, states.batch.items, 1e9)
        s[:, 0] = float("-inf")
        k = min(shortlist, model.cfg.n_items)
        cand = torch.topk(s, k, dim=1).indices  # (C, K)
        cand_np = cand.cpu().numpy()
        feats = np.log1p(stats.counts(cand_np, t0[rows][:, None])).astype(np.float32)
        b = states.batch
        head = model.behavior_logits(
            states.h,
            b.items,
            b.behaviors,
            cand[:, None, :],
            states.upto,
            torch.from_numpy(feats)[:, None].to(dev),
        )[:, 0].float()  # (C, K, NB)
        out[rows, :nb] = head.amax(dim=1).cpu().numpy()
        out[rows, nb : 2 * nb] = torch.logsumexp(head, dim=1).cpu().numpy()
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=-1e3)


def blocks(n_behaviors: int, dim: int) -> dict[str, slice]:
    """Column ranges of the stage's input ``[rfm | head | state]``."""
    r = n_rfm_features(n_behaviors)
    h = r + n_head_signals(n_behaviors)
    return {"rfm": slice(0, r), "head": slice(r, h), "state": slice(h, h + dim)}


def stage_inputs(
    seqs: Sequences,
    hist_start: np.ndarray,
    hist_end: np.ndarray,
    t0: np.ndarray,
    *,
    horizon_ms: int,
    n_behaviors: int,
    signals: np.ndarray,
) -> np.ndarray:
    """(n, F) the stage's input ``[rfm | head | state]``: RFM features beside the transformer ``signals``
    (:func:`model_signals` of the same histories)."""
    rfm = rfm_features(seqs, hist_start, hist_end, t0, horizon_ms=horizon_ms, n_behaviors=n_behaviors)
    return np.concatenate([rfm, signals], axis=1)


# ---- the second stage -----------------------------------------------------------------------------------


def _folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(n,) fold of each example; all examples of a group (user) share one."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return (perm % k)[inverse]


def _cross_fit(make: Callable[[], Any], x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """(n,) out-of-fold decision scores: each fold scored by a model fitted on the others."""
    oof = np.zeros(len(y), dtype=np.float64)
    for k in np.unique(folds):
        test = folds == k
        train_y = y[~test]
        if train_y.min() == train_y.max():
            continue  # one class left: no ranking signal from this fold (0 = the neutral score)
        oof[test] = make().fit(x[~test], train_y).decision_function(x[test])
    return oof


def _logreg(c: float) -> Callable[[], Any]:
    from sklearn.linear_model import LogisticRegression

    return lambda: LogisticRegression(C=c, max_iter=2000)


@dataclass(frozen=True)
class PropensityStage:
    """p_b = Platt_b(w_b · (x - mean) / scale + c_b): one logistic regression per behaviour, for one horizon.

    ``features[b]`` names the input blocks behaviour b uses ("rfm", "rfm+head", "rfm+head+state"); the
    other columns have zero weight. ``starts`` are the window starts (ms) of the examples it was fitted on,
    so the baselines are fitted on exactly those.
    """

    horizon: str
    horizon_ms: int
    behaviors: tuple[str, ...]  # (NB,) output order
    mean: tuple[float, ...]  # (F,)
    scale: tuple[float, ...]  # (F,)
    coef: tuple[tuple[float, ...], ...]  # (NB, F)
    intercept: tuple[float, ...]  # (NB,)
    platt: tuple[tuple[float, float], ...]  # (NB, 2): a, c
    features: tuple[str, ...]  # (NB,)
    starts: tuple[int, ...]
    examples: int = 0
    positives: tuple[int, ...] = ()
    cv_auc: tuple[float, ...] = ()  # (NB,) cross-fitted AUC of the chosen features on the fit examples

    @property
    def uses_model(self) -> bool:
        """Whether any behaviour reads the transformer's signals (else serving skips the forward pass)."""
        return any(f != "rfm" for f in self.features)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, NB) raw logits."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef).T + np.asarray(self.intercept)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, NB) calibrated probabilities."""
        z = self.logits(x)
        return np.stack([Platt(a, c)(z[:, k]) for k, (a, c) in enumerate(self.platt)], axis=1)

    def predict(
        self,
        model: NextActionModel,
        seqs: Sequences,
        hist_start: np.ndarray,
        hist_end: np.ndarray,
        t0: np.ndarray,
        *,
        stats: ItemStats | None,
    ) -> np.ndarray:
        """(n, NB) calibrated probabilities of histories ``[hist_start, hist_end)`` (time-sorted, all
        before ``t0`` (n,) ms). The transformer runs only when some behaviour reads its signals."""
        n_rfm = n_rfm_features(len(self.behaviors))
        if self.uses_model:
            signals = model_signals(model, seqs, hist_start, hist_end, t0, stats=stats)
        else:
            signals = np.zeros((len(hist_start), len(self.mean) - n_rfm), dtype=np.float32)
        x = stage_inputs(
            seqs,
            hist_start,
            hist_end,
            t0,
            horizon_ms=self.horizon_ms,
            n_behaviors=len(self.behaviors),
            signals=signals,
        )
        return self.probabilities(x)

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        *,
        columns: Mapping[str, slice],
        horizon_ms: int,
        horizon: str,
        behaviors: Sequence[str],
        starts: Sequence[int] = (),
        options: Sequence[tuple[str, ...]] = OPTIONS,
        c: float = STAGE_C,
    ) -> PropensityStage:
        """Fit on (n, F) inputs, (n, NB) labels and (n,) groups (users: folds keep a user's examples
        together). Per behaviour, the option of ``options`` (blocks of ``columns``) with the best cross-fitted
        AUC wins (a richer one must win by SELECT_MARGIN); Platt reads the winner's out-of-fold logits."""
        x = np.asarray(x, dtype=np.float64)
        n, width = x.shape
        mean = x.mean(axis=0) if n else np.zeros(width)
        std = x.std(axis=0) if n else np.ones(width)
        scale = np.where(std > 1e-9, std, 1.0)
        z = (x - mean) / scale
        folds = _folds(groups, FOLDS)
        usable = [o for o in options if all(columns[b].stop > columns[b].start for b in o)]
        coef, intercept, platt, chosen, cv = [], [], [], [], []
        for k in range(labels.shape[1]):
            y = np.asarray(labels[:, k], dtype=np.int64)
            pos = int(y.sum())
            if min(pos, n - pos) < MIN_POSITIVES:
                rate = float(np.clip(y.mean() if n else 0.5, 1e-4, 1 - 1e-4))
                coef.append((0.0,) * width)
                intercept.append(0.0)
                platt.append((0.0, math.log(rate / (1 - rate))))
                chosen.append("base rate")
                cv.append(float("nan"))
                continue
            best: tuple[float, tuple[str, ...], np.ndarray, np.ndarray] | None = None
            for option in usable:
                cols = np.concatenate([np.arange(width)[columns[b]] for b in option])
                oof = _cross_fit(_logreg(c), z[:, cols], y, folds)
                score = auc(oof, y)
                if best is None or score > best[0] + SELECT_MARGIN:
                    best = (score, option, cols, oof)
            assert best is not None
            score, option, cols, oof = best
            lr = _logreg(c)().fit(z[:, cols], y)
            w = np.zeros(width)
            w[cols] = lr.coef_[0]
            coef.append(tuple(float(v) for v in w))
            intercept.append(float(lr.intercept_[0]))
            p = Platt.fit(oof, y)
            platt.append((p.a, p.c))
            chosen.append("+".join(option))
            cv.append(float(score))
        return cls(
            horizon=horizon,
            horizon_ms=int(horizon_ms),
            behaviors=tuple(behaviors),
            mean=tuple(float(v) for v in mean),
            scale=tuple(float(v) for v in scale),
            coef=tuple(coef),
            intercept=tuple(intercept),
            platt=tuple(platt),
            features=tuple(chosen),
            starts=tuple(int(s) for s in starts),
            examples=n,
            positives=tuple(int(v) for v in np.asarray(labels).sum(axis=0)),
            cv_auc=tuple(cv),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "horizon_ms": self.horizon_ms,
            "behaviors": list(self.behaviors),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": [list(r) for r in self.coef],
            "intercept": list(self.intercept),
            "platt": [list(p) for p in self.platt],
            "features": list(self.features),
            "starts": list(self.starts),
            "examples": self.examples,
            "positives": list(self.positives),
            "cv_auc": [None if math.isnan(v) else v for v in self.cv_auc],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PropensityStage:
        return cls(
            horizon=str(d["horizon"]),
            horizon_ms=int(d["horizon_ms"]),
            behaviors=tuple(d["behaviors"]),
            mean=tuple(d["mean"]),
            scale=tuple(d["scale"]),
            coef=tuple(tuple(r) for r in d["coef"]),
            intercept=tuple(d["intercept"]),
            platt=tuple((float(a), float(c)) for a, c in d["platt"]),
            features=tuple(d["features"]),
            starts=tuple(int(s) for s in d.get("starts", ())),
            examples=int(d.get("examples", 0)),
            positives=tuple(d.get("positives", ())),
            cv_auc=tuple(float("nan") if v is None else float(v) for v in d.get("cv_auc", ())),
        )


@dataclass(frozen=True)
class PropensityModel:
    """The fitted stages, one per horizon, and the horizon answered when none is asked (``default``)."""

    stages: tuple[PropensityStage, ...]
    default: str
    clock: str = CLOCK_TIMESTAMPS

    @property
    def horizons(self) -> list[str]:
        return [s.horizon for s in self.stages]

    def stage(self, horizon: str | int | None = None) -> PropensityStage:
        """The stage for ``horizon`` (None = ``default``); InputError naming the fitted ones otherwise."""
        ms = parse_horizon(self.default if horizon is None else horizon, clock=self.clock)
        for s in self.stages:
            if s.horizon_ms == ms:
                return s
        raise InputError(
            f"no propensity stage for horizon {horizon!r}: this model was fitted for "
            f"{', '.join(self.horizons)} (the horizons its validation window could label)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "clock": self.clock, "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PropensityModel | None:
        if not d or not d.get("stages"):
            return None
        return cls(
            stages=tuple(PropensityStage.from_dict(s) for s in d["stages"]),
            default=str(d["default"]),
            clock=str(d.get("clock", CLOCK_TIMESTAMPS)),
        )


# ---- fitting after training -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Where a temporal split's validation and test windows lie, and which horizons fit them."""

    valid_cutoff: int
    test_cutoff: int
    test_end: int  # exclusive end of what the log covers: last event + its time grain
    resolution: int
    clock: str

    @property
    def valid_ms(self) -> int:
        return self.test_cutoff - self.valid_cutoff

    @property
    def test_ms(self) -> int:
        return self.test_end - self.test_cutoff

    def fit_horizons(self, ladder: Sequence[str] | None = None) -> list[int]:
        """Horizons (ms) of the ladder the validation window can label, not finer than the log's grain;
        with none of them, the validation window's whole length (floored to the grain)."""
        names = HORIZONS[self.clock] if ladder is None else ladder
        ms = [parse_horizon(h, clock=self.clock) for h in names]
        fitted = [h for h in ms if self.resolution <= h <= self.valid_ms]
        if not fitted and self.valid_ms >= self.resolution:
            fitted = [self.valid_ms // self.resolution * self.resolution]
        return fitted

    def starts(self, horizon_ms: int) -> list[int]:
        """Up to MAX_STARTS window starts, evenly spread over the validation window on the log's grain,
        whose label windows end by the test cutoff (test events never label a fit example)."""
        step = max(self.resolution, self.valid_ms // MAX_STARTS // self.resolution * self.resolution)
        grid = [self.valid_cutoff + k * step for k in range(MAX_STARTS)]
        return [s for s in grid if s + horizon_ms <= self.test_cutoff]

    def default(self, fitted: Sequence[int]) -> int:
        """The horizon evaluated and served by default: the preferred one (7d) if the test window can label
        it, else the longest fitted one it can, else the shortest fitted one."""
        preferred = parse_horizon(PREFERRED[self.clock], clock=self.clock)
        fits = [h for h in fitted if h <= self.test_ms]
        if preferred in fits:
            return preferred
        return max(fits) if fits else min(fitted)


def sample_users(
    seqs: Sequences, users: np.ndarray | None, n: int, *, seed: int = 0
) -> tuple[np.ndarray | None, int]:
    """At most ``n`` of ``users`` (user positions; None = every user with events), a fixed sample (sorted)
    when there are more; ``n`` = 0: all. Returns (users or None for all, how many there were)."""
    pool = np.flatnonzero(np.diff(np.asarray(seqs.offsets)) > 0) if users is None else np.asarray(users)
    if not n or len(pool) <= n:
        return users, len(pool)
    return np.sort(np.random.default_rng(seed).choice(pool, n, replace=False)), len(pool)


def split_windows(data: PreparedDataset) -> Windows | None:
    """The temporal split's :class:`Windows`; None for other splits or without both windows."""
    if data.report.get("split", {}).get("kind") != "temporal":
        return None
    valid_cut, test_cut = split_cutoffs(data)
    ts = np.asarray(data.seqs.timestamps)
    if valid_cut is None or test_cut is None or test_cut <= valid_cut or len(ts) == 0:
        return None
    res = MS_PER_EVENT if data.clock == CLOCK_POSITIONS else resolution(ts)
    return Windows(valid_cut, test_cut, int(ts.max()) + res, res, data.clock)


def fit_propensity(
    model: NextActionModel,
    data: PreparedDataset,
    *,
    users: np.ndarray | None = None,
    horizons: Sequence[str] | None = None,
) -> PropensityModel | None:
    """Fit a stage per horizon on the validation window (after training; ``workflow.calibrate_model``).

    users: the users whose validation window the model did not learn (``training.loop.
    held_out_validation_users``; None = every user), a fixed sample of :data:`FIT_USERS` of them on big
    logs. Horizons: ``horizons`` (default :data:`HORIZONS`) that the validation window can label. None for
    splits other than temporal or without a validation window.
    """
    win = split_windows(data)
    if win is None:
        return None
    fitted = win.fit_horizons(horizons)
    if not fitted:
        return None
    users, _ = sample_users(data.seqs, users, FIT_USERS)
    nb = len(data.behaviors) - 1
    stats = ItemStats(data.seqs, nb) if model.behavior is not None else None  # TEST events never
    cols = blocks(nb, model.cfg.dim)
    signals_at: dict[int, np.ndarray] = {}  # window start -> signals of its examples (horizons share starts)
    stages = []
    for h in fitted:
        starts = win.starts(h)
        ex = propensity_examples(data.seqs, starts=starts, horizon_ms=h, n_behaviors=nb, users=users)
        if len(ex) == 0:
            continue
        for s in starts:
            if s not in signals_at:
                one = propensity_examples(data.seqs, starts=[s], horizon_ms=h, n_behaviors=nb, users=users)
                signals_at[s] = model_signals(
                    model, data.seqs, one.hist_start, one.hist_end, one.t0, stats=stats
                )
        x = stage_inputs(
            data.seqs,
            ex.hist_start,
            ex.hist_end,
            ex.t0,
            horizon_ms=h,
            n_behaviors=nb,
            signals=np.concatenate([signals_at[s] for s in starts]),
        )
        stages.append(
            PropensityStage.fit(
                x,
                ex.labels,
                ex.user_idx,
                columns=cols,
                horizon_ms=h,
                horizon=horizon_name(h, clock=win.clock),
                behaviors=data.behaviors[1:],
                starts=starts,
            )
        )
    if not stages:
        return None
    default = win.default([s.horizon_ms for s in stages])
    return PropensityModel(
        stages=tuple(stages), default=horizon_name(default, clock=win.clock), clock=win.clock
    )


# ---- evaluation -------------------------------------------------------------------------------------


def fit_baseline(
    name: str, x: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """A baseline on RFM features, fitted per behaviour and calibrated as the stage is (Platt on
    cross-fitted scores, folds by user): returns ``(n, F_rfm) -> (n, NB)`` probabilities.

    "logreg": scikit-learn LogisticRegression (default C) on standardized features; "gbm":
    HistGradientBoostingClassifier (defaults, seed 0)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    makers: dict[str, Callable[[], Any]] = {
        "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gbm": lambda: HistGradientBoostingClassifier(random_state=0),
    }
    if name not in makers:
        raise InputError(f"unknown propensity baseline {name!r}; known: {', '.join(makers)}")
    make = makers[name]
    folds = _folds(groups, FOLDS)
    fitted: list[tuple[Any, Platt]] = []
    for k in range(labels.shape[1]):
        y = np.asarray(labels[:, k], dtype=np.int64)
        pos = int(y.sum())
        if min(pos, len(y) - pos) < MIN_POSITIVES:
            fitted.append((None, Platt.fit(np.zeros(len(y)), y)))  # the base rate
            continue
        platt = Platt.fit(_cross_fit(make, x, y, folds), y)
        fitted.append((make().fit(x, y), platt))

    def predict(xs: np.ndarray) -> np.ndarray:
        return np.stack(
            [p(np.zeros(len(xs)) if est is None else est.decision_function(xs)) for est, p in fitted], axis=1
        )

    return predict


def propensity_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC (+ bootstrap SD over users: one example per user), log-loss, ECE, positives, users, and the
    mean prediction beside the observed rate."""
    y = np.asarray(labels, dtype=bool)
    users = np.arange(len(y))
    return {
        "AUC": auc(probs, y),
        "AUC_sd": auc_bootstrap_sd(probs, y, users),
        "logloss": log_loss(probs, y),
        "ECE": expected_calibration_error(probs, y),
        "mean_probability": float(np.mean(probs)) if len(y) else float("nan"),
        "rate": float(y.mean()) if len(y) else float("nan"),
        "positives": int(y.sum()),
        "users": len(y),
    }


def evaluate_propensity(
    model: NextActionModel,
    data: PreparedDataset,
    prop: PropensityModel,
    *,
    horizon: str | int | None = None,
    users: np.ndarray | None = None,
    baselines: Sequence[str] = BASELINES,
    max_users: int = 0,
) -> dict[str, Any]:
    """The propensity protocol on the test window (start = the test cutoff) for one horizon (default: the
    model's): the saved stage against RFM baselines fitted and calibrated the same way on the stage's own
    fit examples. ``users``: as at fitting (held-out validation users; None = all; the same fixed sample
    of :data:`FIT_USERS`). ``max_users`` > 0: a fixed sample of that many test users (``evaluate --users``).

    Returns ``{"horizon", "model": {b: metrics}, "baselines": {name: {b: metrics}}, "difference": {b:
    {"against", "diff", "lo", "hi"}}, "protocol"}``, or ``{"horizon", "note"}`` when the test window is
    shorter than the horizon (its labels would be cut short).
    """
    win = split_windows(data)
    if win is None:
        raise InputError("propensity is evaluated on temporal splits only (a test window after a cutoff)")
    stage = prop.stage(horizon)
    h = stage.horizon_ms
    if h > win.test_ms:
        return {
            "horizon": stage.horizon,
            "note": (
                f"not measured: the test window covers {horizon_name(win.test_ms, clock=win.clock)}, "
                f"shorter than the horizon {stage.horizon}"
            ),
        }
    nb = len(data.behaviors) - 1
    stats = ItemStats(data.seqs, nb) if model.behavior is not None else None
    seqs = data.seqs
    fit_users, _ = sample_users(seqs, users, FIT_USERS)  # the stage's own fit examples
    fit_ex = propensity_examples(seqs, starts=stage.starts, horizon_ms=h, n_behaviors=nb, users=fit_users)
    test_users, pool = sample_users(seqs, None, max_users)
    test_ex = propensity_examples(
        seqs, starts=[win.test_cutoff], horizon_ms=h, n_behaviors=nb, users=test_users
    )
    probs: dict[str, np.ndarray] = {
        "nextaction": stage.predict(
            model, seqs, test_ex.hist_start, test_ex.hist_end, test_ex.t0, stats=stats
        )
    }
    x_fit = rfm_features(seqs, fit_ex.hist_start, fit_ex.hist_end, fit_ex.t0, horizon_ms=h, n_behaviors=nb)
    x_test = rfm_features(
        seqs, test_ex.hist_start, test_ex.hist_end, test_ex.t0, horizon_ms=h, n_behaviors=nb
    )
    for name in baselines:
        probs[name] = fit_baseline(name, x_fit, fit_ex.labels, fit_ex.user_idx)(x_test)
    y = test_ex.labels
    names = data.behaviors[1:]
    per = {
        s: {b: propensity_metrics(p[:, k], y[:, k]) for k, b in enumerate(names)} for s, p in probs.items()
    }
    difference: dict[str, dict[str, Any]] = {}
    for k, b in enumerate(names):
        ranked = [s for s in baselines if not math.isnan(per[s][b]["AUC"])]
        if not ranked or math.isnan(per["nextaction"][b]["AUC"]):
            continue
        best = max(ranked, key=lambda s: per[s][b]["AUC"])
        d = paired_auc_difference(probs["nextaction"][:, k], probs[best][:, k], y[:, k], test_ex.user_idx)
        difference[b] = {"against": best, **d}
    return {
        "horizon": stage.horizon,
        "model": per["nextaction"],
        "baselines": {s: per[s] for s in baselines},
        "difference": difference,
        "protocol": propensity_protocol(
            data, prop, stage, win, fit_ex, test_ex, sampled_from=None if test_users is None else pool
        ),
    }


def propensity_protocol(
    data: PreparedDataset,
    prop: PropensityModel,
    stage: PropensityStage,
    win: Windows,
    fit_ex: PropensityExamples,
    test_ex: PropensityExamples,
    *,
    sampled_from: int | None = None,
) -> dict[str, Any]:
    def when(ms: int) -> str | int | None:
        return iso_time(ms) if win.clock == CLOCK_TIMESTAMPS else ms // MS_PER_EVENT

    target = primary_behavior(data.behaviors)
    return {
        "question": "P(the user does the behaviour at least once in [t0, t0 + horizon)), per behaviour",
        "horizon": stage.horizon,
        "horizon_choice": (
            f"the model's default ({prop.default}): {PREFERRED[win.clock]} when the test window can label it, "
            f"else the longest fitted horizon it can; fitted: {', '.join(prop.horizons)}"
        ),
        "test_window": {
            "t0": when(win.test_cutoff),
            "covers": horizon_name(win.test_ms, clock=win.clock),
            "users": len(test_ex),
            "sampled_from": sampled_from,  # users with events, when a fixed sample of them was evaluated
        },
        "examples": (
            "every user with at least one event before t0; features read only the events before t0, labels "
            "only the events in [t0, t0 + horizon)"
        ),
        "fit": {
            "window_starts": [when(s) for s in stage.starts],
            "examples": len(fit_ex),
            "users": len(np.unique(fit_ex.user_idx)),
            "where": "the validation window; every label window ends by the test cutoff",
        },
        "model": (
            "a logistic regression per behaviour over the RFM features plus the transformer's signals "
            "(behaviour-head logits over the user's likely items, next-item log-partition, user state) "
            "where they win on the fit examples (cross-fitted AUC, folds by user)"
        ),
        "model_features": dict(zip(stage.behaviors, stage.features, strict=True)),
        "rfm_features": rfm_names(data.behaviors[1:]),
        "baselines": (
            "logreg: LogisticRegression on standardized RFM features; gbm: HistGradientBoostingClassifier "
            "on them; fitted on the same examples as the model's stage"
        ),
        "calibration": (
            f"Platt scaling per behaviour on {FOLDS}-fold cross-fitted scores of the fit examples (folds by "
            "user), the same for the model and the baselines"
        ),
        "AUC_sd": f"bootstrap over the test users ({AUC_BOOTSTRAP_DRAWS} draws, seed 0)",
        "difference": (
            "model AUC − the baseline with the higher test AUC, paired bootstrap over users "
            f"({AUC_BOOTSTRAP_DRAWS} draws, seed 0), 95% percentile interval"
        ),
        "ece_bins": ECE_BINS,
        "target_behavior": None if target is None else data.behaviors[target],
    }
