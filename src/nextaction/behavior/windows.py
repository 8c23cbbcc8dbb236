"""Rolling-origin evaluation: K consecutive test windows measured after one training run.

A service trains once and then answers for weeks. This measures that: the temporal split's test period is
cut into K consecutive windows of about equal numbers of events (boundaries fall between distinct
timestamps, so one moment never straddles two windows). For window j with start s_j and end e_j:

- history = every event before s_j, the earlier windows' events included (as a live service has them);
- candidates and labels = window_candidates over the events in [s_j, e_j) (the usual construction);
- item statistics = every event before s_j (``BehaviorScorer.as_of``): counts, conversion rates, recency;
- nothing at or after e_j exists in window j's view at all.

Every scorer is fitted and Platt-calibrated once, on the validation window (as in behavior/evaluation.py),
exactly as the model is trained once. Results: each window, and the pooled figure over all windows, with a
paired bootstrap over users (a user's candidates of every window are resampled together) for every AUC,
GAUC and next-order metric and for the difference of the model against every baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from nextaction.behavior.calibration import calibrate, probabilities
from nextaction.behavior.candidates import BehaviorScorer, window_candidates, window_popularity
from nextaction.behavior.evaluation import BehaviorEvalSetup, next_order_values
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import SPLIT, TEST, VALID
from nextaction.errors import InputError
from nextaction.evaluation.metrics import (
    AUC_BOOTSTRAP_DRAWS,
    CI_LEVEL,
    auc,
    bootstrap_auc,
    bootstrap_mean,
    bootstrap_weights,
    compact_ids,
    group_aucs,
    interval,
)

NEXT_ORDER_KEYS = ("HR@10", "NDCG@10")


@dataclass(frozen=True)
class Window:
    """[start, end) in the log's clock (milliseconds, or positions for order-only logs)."""

    start: int
    end: int

    def label(self, clock: str) -> str:
        """``[start, end)`` as ISO times (milliseconds shown where a bound is not a whole second: the last
        window ends 1 ms after the last event), or as positions for order-only logs."""
        if clock == "positions":
            return f"[{self.start}, {self.end})"
        iso = [
            datetime.fromtimestamp(t / 1000, tz=UTC).isoformat(
                timespec="milliseconds" if t % 1000 else "seconds"
            )
            for t in (self.start, self.end)
        ]
        return f"[{iso[0]}, {iso[1]})"


def rolling_windows(seqs: Sequences, k: int) -> list[Window]:
    """K consecutive windows over the TEST split's events, of about equal event counts.

    Boundary j sits at the event quantile j/K, moved up to the next distinct timestamp when needed, so each
    window starts at a new moment and every window holds at least one. Raises InputError when the test
    split has fewer than K distinct timestamps.
    """
    if k < 1:
        raise InputError(f"--windows must be at least 1, got {k}")
    t = np.sort(np.asarray(seqs.timestamps)[np.asarray(seqs.split) == TEST])
    if len(t) == 0:
        raise InputError(
            "there are no test events to cut into windows: prepare the log with a temporal split"
        )
    distinct = np.unique(t)
    if len(distinct) < k:
        raise InputError(
            f"the test window has {len(distinct)} distinct timestamps; --windows {k} needs at least {k} "
            "(use fewer windows, or an earlier prepare.split.test_cutoff)"
        )
    starts = [int(distinct[0])]
    for j in range(1, k):
        want = int(t[min(len(t) - 1, round(j * len(t) / k))])
        # the earliest admissible start: after the previous one, leaving a moment for every later window
        lo = int(distinct[np.searchsorted(distinct, starts[-1], side="right")])
        hi = int(distinct[len(distinct) - (k - j)])
        starts.append(min(max(want, lo), hi))
    ends = [*starts[1:], int(t[-1]) + 1]
    return [Window(a, b) for a, b in zip(starts, ends, strict=True)]


def window_view(data: PreparedDataset, window: Window) -> PreparedDataset:
    """``data`` as it stood at the end of ``window``: events at or after its end removed, its own events
    marked TEST and every earlier test event marked VALID (history, seen after training)."""
    seqs = data.seqs
    times = np.asarray(seqs.timestamps)
    keep = times < window.end
    split = np.asarray(seqs.split).copy()
    split[(split == TEST) & (times < window.start)] = VALID
    split[times >= window.start] = TEST
    split = split[keep]
    events = data.events.filter(pl.Series(keep)).with_columns(pl.Series(SPLIT, split))
    user_of = np.repeat(np.arange(seqs.n_users), np.diff(np.asarray(seqs.offsets)))[keep]
    counts = np.bincount(user_of, minlength=seqs.n_users)
    view = Sequences(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=np.asarray(seqs.items)[keep],
        behaviors=np.asarray(seqs.behaviors)[keep],
        timestamps=times[keep],
        split=split.astype(np.int8),
    )
    return replace(data, events=events, sequences=view)


@dataclass
class _Scored:
    """One scorer's pooled test outputs over the windows (rows in window order)."""

    probs: list[np.ndarray]
    order_values: list[dict[str, np.ndarray]]


def evaluate_windows(
    scorers: dict[str, BehaviorScorer],
    data: PreparedDataset,
    setup: BehaviorEvalSetup,
    *,
    k: int,
    fit_data: dict[str, PreparedDataset] | None = None,
    reference: str = "nextaction",
    draws: int = AUC_BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit and calibrate every scorer on ``setup.valid``, then measure it on K rolling windows.

    ``fit_data[name]``: what scorer ``name`` fits its statistics on (default ``data``). Returns per window
    and pooled metrics, and the paired differences of ``reference`` against every other scorer.
    """
    behaviors = data.behaviors
    nb = len(behaviors) - 1
    target = setup.target_behavior
    calibrations = {}
    for name, scorer in scorers.items():
        scorer.fit((fit_data or {}).get(name, data), train=setup.valid)
        calibrations[name] = calibrate(
            scorer.behavior_scores(data.seqs, setup.valid), setup.valid.labels, behaviors
        )

    windows = rolling_windows(data.seqs, k)
    scored = {name: _Scored([], []) for name in scorers}
    labels, groups, users, order_users, per_window = [], [], [], [], []
    for j, window in enumerate(windows):
        view = window_view(data, window)
        cands = window_candidates(
            view.seqs,
            split=TEST,
            n_behaviors=nb,
            popularity=window_popularity(view, TEST),
            ratio=setup.ratio,
            seed=setup.seed,
        )
        cand_users = cands.user_idx[cands.user_of_candidate()]
        entry: dict[str, Any] = {
            "window": window.label(data.clock),
            "users": len(cands),
            "candidates": len(cands.items),
            "positives": {b: int(cands.labels[:, i].sum()) for i, b in enumerate(behaviors[1:])},
            "scores": {},
        }
        orders_users = np.zeros(0, dtype=np.int64)
        for name, scorer in scorers.items():
            scorer.as_of(view.seqs)
            probs = probabilities(scorer.behavior_scores(view.seqs, cands), calibrations[name], behaviors)
            scored[name].probs.append(probs)
            m: dict[str, Any] = {
                b: {"AUC": auc(probs[:, i], cands.labels[:, i])} for i, b in enumerate(behaviors[1:])
            }
            if target is not None:
                orders, values = next_order_values(scorer, view.seqs, target)
                scored[name].order_values.append(values)
                orders_users = orders.user_idx
                m[f"next_{behaviors[target]}"] = {key: float(np.mean(values[key])) for key in NEXT_ORDER_KEYS}
            entry["scores"][name] = m
        entry["next_order_users"] = len(orders_users)
        per_window.append(entry)
        labels.append(cands.labels)
        groups.append(j * data.seqs.n_users + cand_users)
        users.append(cand_users)
        order_users.append(orders_users)

    y = np.concatenate(labels)
    group = np.concatenate(groups)
    unit_keys = np.concatenate([*users, *order_users])
    unit = compact_ids(unit_keys)  # one bootstrap unit per user, shared by candidates and orders
    cand_unit, order_unit = unit[: len(y)], unit[len(y) :]
    weights = bootstrap_weights(unit, draws=draws, seed=seed)

    pooled: dict[str, dict[str, Any]] = {}
    draws_of: dict[str, dict[str, np.ndarray]] = {}
    for name in scorers:
        p = np.concatenate(scored[name].probs)
        out: dict[str, Any] = {}
        d: dict[str, np.ndarray] = {}
        for i, b in enumerate(behaviors[1:]):
            if y[:, i].all() or not y[:, i].any():
                continue
            values, sizes = group_aucs(p[:, i], y[:, i], group)
            d[f"{b}.AUC"] = bootstrap_auc(p[:, i], y[:, i], cand_unit, weights)
            group_unit = cand_unit[np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1])]
            d[f"{b}.GAUC"] = bootstrap_mean(values, sizes, group_unit, weights)
            ok = ~np.isnan(values)
            out[b] = {
                "AUC": auc(p[:, i], y[:, i]),
                "GAUC": float((values[ok] * sizes[ok]).sum() / sizes[ok].sum()) if ok.any() else float("nan"),
            }
            for metric in ("AUC", "GAUC"):
                lo, hi = interval(d[f"{b}.{metric}"])
                out[b][f"{metric}_ci"] = [lo, hi]
        if target is not None:
            key = f"next_{behaviors[target]}"
            out[key] = {}
            for metric in NEXT_ORDER_KEYS:
                v = np.concatenate([ov[metric] for ov in scored[name].order_values])
                d[f"{key}.{metric}"] = bootstrap_mean(v, np.ones(len(v)), order_unit, weights)
                out[key][metric] = float(v.mean()) if len(v) else float("nan")
                out[key][f"{metric}_ci"] = list(interval(d[f"{key}.{metric}"]))
            out[key]["users"] = int(sum(len(ov[NEXT_ORDER_KEYS[0]]) for ov in scored[name].order_values))
        pooled[name] = out
        draws_of[name] = d

    differences: dict[str, dict[str, Any]] = {}
    if reference in scorers:
        for name in scorers:
            if name == reference:
                continue
            diff: dict[str, Any] = {}
            for key, ref_draws in draws_of[reference].items():
                if key not in draws_of[name]:
                    continue
                section, metric = key.split(".", 1)
                point = pooled[reference][section][metric] - pooled[name][section][metric]
                lo, hi = interval(ref_draws - draws_of[name][key])
                diff.setdefault(section, {})[metric] = {
                    "diff": point,
                    "ci": [lo, hi],
                    "above_0": bool(lo > 0),
                }
            differences[name] = diff
    return {
        "k": k,
        "windows": per_window,
        "pooled": pooled,
        "differences": differences,
        "protocol": windows_protocol(data, windows, setup, draws=draws, seed=seed),
    }


def windows_protocol(
    data: PreparedDataset, windows: list[Window], setup: BehaviorEvalSetup, *, draws: int, seed: int
) -> dict[str, Any]:
    return {
        "windows": [w.label(data.clock) for w in windows],
        "cut": "the test split's events in K consecutive windows of about equal event counts, boundaries between "
        "distinct timestamps",
        "training": "one run, on events before the first window",
        "history": "every event before the window's start, earlier windows included",
        "item_statistics": "every event before the window's start",
        "candidates": f"the window's items per user + {setup.ratio} popularity negatives per positive "
        f"(seed {setup.seed}), as in the single test window",
        "fit_and_calibration": "once, on the validation window",
        "pooled": "candidates of all windows together (GAUC groups = user × window)",
        "bootstrap": f"{draws} resamples of users (seed {seed}); a user's candidates and orders of every "
        f"window go together; {int(CI_LEVEL * 100)}% percentile intervals; differences are paired (same "
        "users, same candidates, same draws)",
    }
