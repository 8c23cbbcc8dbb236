"""Outcome prediction: which behaviour the next event will be, given the item it is on.

    P(behaviour of event t+1 = b | events 0 … t, item of event t+1)

This is the knowledge-tracing question — the student will attempt this exercise next: will the answer be
``correct`` or ``incorrect``? — and, in a shop, "she is opening this product: will she cart it or only view
it?". The behaviour head (model.BehaviorHead) answers it with the actual next item as its only candidate,
normalised over the behaviours (a softmax: exactly one behaviour happens). Training adds that cross-entropy
at every position (``train.outcome_weight``; on by default for logs without a clock, whose behaviours are the
outcomes of attempts).

The evaluation scores every event of a split, each from the events before it (up to ``max_len - 1`` of them,
in windows that overlap by half so that every event keeps at least half a window of history), as the
knowledge-tracing literature does: AUC and accuracy over every next attempt of the test students.

Baselines use the same events: ``item-rate`` (the item's share of each behaviour in training) and
``counts-logreg``, a multinomial logistic regression on the user's counts of each behaviour so far (overall,
on this item, on this item's category), in the spirit of Performance Factors Analysis (PFA), plus the item's
training rates. Shapes: E evaluated events, NB behaviours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nextaction.behavior.candidates import ItemStats
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import SPLIT_NAMES, TEST, TRAIN
from nextaction.data.vocab import category_codes
from nextaction.evaluation.metrics import auc, bootstrap_auc, bootstrap_weights, compact_ids, interval
from nextaction.model import PAD, NextActionModel

WINDOWS_PER_BATCH = 64


@dataclass(frozen=True)
class OutcomeEvents:
    """The events to predict: flat indices into a :class:`Sequences` and each event's user position."""

    events: np.ndarray  # (E,) int64 index into seqs arrays
    users: np.ndarray  # (E,) int64 user position (row of seqs.offsets)
    labels: np.ndarray  # (E,) int64 behaviour index 1 … NB


def outcome_events(seqs: Sequences, split: int, *, users: np.ndarray | None = None) -> OutcomeEvents:
    """Every event of ``split`` (of ``users`` only, when given): each is predicted from the events before it.

    A user's first event has no history: it is predicted from the empty history (the head's null event and
    the item's statistics), as a knowledge-tracing model predicts a student's first attempt."""
    codes = np.asarray(seqs.split)
    idx = np.flatnonzero(codes == split).astype(np.int64)
    offsets = np.asarray(seqs.offsets)
    owner = np.searchsorted(offsets, idx, side="right") - 1
    if users is not None:
        keep = np.isin(owner, users)
        idx, owner = idx[keep], owner[keep]
    labels = np.asarray(seqs.behaviors)[idx].astype(np.int64)
    return OutcomeEvents(events=idx, users=owner.astype(np.int64), labels=labels)


def _windows(seqs: Sequences, ev: OutcomeEvents, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each target's window start (flat index), its query slot in the window and its window id.

    Target j (position p in its user's sequence) is read from the window of ``max_len`` events starting at
    position w = ceil((p - max_len) / S) · S (S = max_len // 2, w ≥ 0), which holds p - 1 at slot p - 1 - w
    ≤ max_len - 1: every target has at least S - 1 events of history once its user has that many."""
    stride = max(1, max_len // 2)
    starts = np.asarray(seqs.offsets)[ev.users]
    pos = ev.events - starts
    w = np.maximum(0, -(-(pos - max_len) // stride)) * stride
    w = np.minimum(w, np.maximum(pos - 1, 0))  # a first event (pos 0) reads an empty window at 0
    slot = pos - 1 - w  # -1 = empty history
    key = (starts + w).astype(np.int64)
    window_starts, window_id = np.unique(key, return_inverse=True)
    return window_starts, slot, window_id


@torch.no_grad()
def outcome_probabilities(
    model: NextActionModel,
    seqs: Sequences,
    ev: OutcomeEvents,
    *,
    stats: ItemStats,
    windows_per_batch: int = WINDOWS_PER_BATCH,
) -> np.ndarray:
    """(E, NB) float64 P(behaviour | history before the event, the event's item), rows summing to 1."""
    if model.behavior is None:
        raise ValueError("this model has no behaviour head (model.behavior_head = false)")
    model.eval()
    nb = model.cfg.n_behaviors - 1
    out = np.zeros((len(ev.events), nb), dtype=np.float64)
    if len(ev.events) == 0:
        return out
    L = model.cfg.max_len
    window_starts, slot, window_id = _windows(seqs, ev, L)
    offsets = np.asarray(seqs.offsets)
    ends = offsets[np.searchsorted(offsets, window_starts, side="right")]  # each window's user end
    items, behaviors, times = (np.asarray(a) for a in (seqs.items, seqs.behaviors, seqs.timestamps))
    cand_items = items[ev.events].astype(np.int64)
    cand_time = times[ev.events].astype(np.float64)
    order = np.argsort(window_id, kind="stable")
    bounds = np.searchsorted(window_id[order], np.arange(len(window_starts) + 1))
    device = model.item_emb.weight.device
    for lo in range(0, len(window_starts), windows_per_batch):
        hi = min(lo + windows_per_batch, len(window_starts))
        B = hi - lo
        lengths = np.minimum(ends[lo:hi] - window_starts[lo:hi], L)
        grid = window_starts[lo:hi, None] + np.arange(L)[None, :]
        real = np.arange(L)[None, :] < lengths[:, None]
        grid = np.where(real, grid, 0)
        x_items = np.where(real, items[grid], PAD).astype(np.int64)
        x_beh = np.where(real, behaviors[grid], PAD).astype(np.int64)
        x_time = np.where(real, times[grid], 0).astype(np.int64)
        per = bounds[lo + 1 : hi + 1] - bounds[lo:hi]
        T = int(per.max())
        rows = np.full((B, T), -1, dtype=np.int64)  # target row in ev, -1 = padding
        for b in range(B):
            rows[b, : per[b]] = order[bounds[lo + b] : bounds[lo + b + 1]]
        used = rows >= 0
        safe = np.where(used, rows, 0)
        upto = np.where(used, slot[safe], -1)
        cand = np.where(used, cand_items[safe], PAD)[..., None]  # (B, T, 1)
        feats = stats.features(cand, cand_time[safe][..., None])  # (B, T, 1, NB + 1)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        h = model(t(x_items), t(x_beh), t(x_time))
        logits = model.behavior_logits(h, t(x_items), t(x_beh), t(cand), t(upto), t(feats))[:, :, 0]
        p = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        out[rows[used]] = p[used]
    return out


@torch.no_grad()
def next_outcomes(
    model: NextActionModel,
    items: np.ndarray,
    behaviors: np.ndarray,
    timestamps: np.ndarray,
    candidates: np.ndarray,
    *,
    stats: ItemStats,
) -> np.ndarray:
    """(N, NB) P(behaviour | this history, the next event is on candidate n) for one user's history (its
    last ``max_len`` events are read; an empty history reads none)."""
    if model.behavior is None:
        raise ValueError("this model has no behaviour head (model.behavior_head = false)")
    model.eval()
    L = model.cfg.max_len
    items, behaviors, timestamps = (
        np.asarray(a)[-L:].astype(np.int64) for a in (items, behaviors, timestamps)
    )
    n = len(items)
    device = model.item_emb.weight.device
    pad = lambda a: torch.from_numpy(np.pad(a, (0, max(1, n) - n))[None, :]).to(device)  # noqa: E731
    x_items, x_beh, x_time = pad(items), pad(behaviors), pad(timestamps)
    cand = np.asarray(candidates, dtype=np.int64)[None, None, :]  # (1, 1, N)
    feats = torch.from_numpy(stats.features(cand, np.inf)).to(device)
    h = model(x_items, x_beh, x_time)
    upto = torch.tensor([[n - 1]], device=device)
    logits = model.behavior_logits(h, x_items, x_beh, torch.from_numpy(cand).to(device), upto, feats)[0, 0]
    return torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)


def outcome_metrics(
    probs: np.ndarray, labels: np.ndarray, behaviors: list[str], *, users: np.ndarray | None = None
) -> dict[str, Any]:
    """AUC of each behaviour (one against the others), accuracy of the most likely behaviour, log loss.

    ``behaviors``: names of behaviour indices 1 … NB. With ``users`` each AUC gets a 95% interval from a
    bootstrap over users (:func:`user_bootstrap`)."""
    boot = None if users is None else user_bootstrap(users)
    return _metrics(probs, labels, behaviors, boot=boot)[0]


def user_bootstrap(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(units, weights): 200 draws over users, seed 0; one pair serves every scorer (paired differences)."""
    units = compact_ids(users)
    return units, bootstrap_weights(units, draws=200, seed=0)


def _metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    behaviors: list[str],
    *,
    boot: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, Any], dict[str, tuple[float, np.ndarray]]]:
    """:func:`outcome_metrics` and, per behaviour with both classes, its exact AUC and bootstrap draws."""
    n = len(labels)
    out: dict[str, Any] = {"events": int(n)}
    draws: dict[str, tuple[float, np.ndarray]] = {}
    if n == 0:
        return out, draws
    picked = probs[np.arange(n), labels - 1]
    out["accuracy"] = round(float((probs.argmax(1) + 1 == labels).mean()), 4)
    out["log_loss"] = round(float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()), 4)
    aucs: dict[str, float | None] = {}
    for k, name in enumerate(behaviors):
        y = (labels == k + 1).astype(np.float64)
        value = auc(probs[:, k], y)
        aucs[name] = None if np.isnan(value) else round(float(value), 4)
        if boot is not None and aucs[name] is not None:
            draws[name] = (float(value), bootstrap_auc(probs[:, k], y, *boot))
    out["auc"] = aucs
    if draws:
        out["auc_ci95"] = {name: [round(v, 4) for v in interval(d)] for name, (_, d) in draws.items()}
    out["rate"] = {name: round(float((labels == k + 1).mean()), 4) for k, name in enumerate(behaviors)}
    return out, draws


# ---------------------------------------------------------------------------------------------- baselines


def _item_rates(seqs: Sequences, split: int, nb: int, n_items: int, *, prior: float = 5.0) -> np.ndarray:
    """(n_items + 1, NB) smoothed share of each behaviour on each item among the events of ``split``."""
    codes = np.asarray(seqs.split) == split
    items = np.asarray(seqs.items)[codes].astype(np.int64)
    beh = np.asarray(seqs.behaviors)[codes].astype(np.int64)
    counts = np.zeros((n_items + 1, nb), dtype=np.float64)
    np.add.at(counts, (items, beh - 1), 1.0)
    overall = (counts.sum(0) + 1.0) / (counts.sum() + nb)
    return (counts + prior * overall) / (counts.sum(1, keepdims=True) + prior)


def prior_counts(seqs: Sequences, ev: OutcomeEvents, nb: int, *, groups: np.ndarray | None) -> np.ndarray:
    """(E, 3 · NB) the user's counts of each behaviour before each event: overall, on the event's item, and
    on items of the event's group (``groups``: (n_items + 1,) category code, 0 = none; zeros without)."""
    items = np.asarray(seqs.items).astype(np.int64)
    beh = np.asarray(seqs.behaviors).astype(np.int64)
    offsets = np.asarray(seqs.offsets)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    onehot = np.zeros((len(items), nb), dtype=np.float64)
    onehot[np.arange(len(items)), beh - 1] = 1.0
    parts = [_running(onehot, owner), _running(onehot, owner * (int(items.max(initial=0)) + 1) + items)]
    if groups is None:
        parts.append(np.zeros_like(onehot))
    else:
        g = np.asarray(groups)[items].astype(np.int64)
        part = _running(onehot, owner * (int(g.max(initial=0)) + 1) + g)
        part[g == 0] = 0.0
        parts.append(part)
    return np.hstack([p[ev.events] for p in parts])


def _running(onehot: np.ndarray, key: np.ndarray) -> np.ndarray:
    """(E_all, NB) per event: the sum of ``onehot`` over the earlier events with the same ``key`` (events are
    in time order within a user, and a key never spans users)."""
    perm = np.argsort(key, kind="stable")  # stable: time order kept inside each key
    sorted_key = key[perm]
    inclusive = np.cumsum(onehot[perm], axis=0)
    exclusive = inclusive - onehot[perm]
    first = np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(key)), 0))
    out = np.empty_like(onehot)
    out[perm] = exclusive - exclusive[group_start]
    return out


class ItemRateOutcome:
    """P(behaviour | item) = the item's smoothed share of each behaviour among the training events."""

    name = "item-rate"

    def __init__(self, seqs: Sequences, *, nb: int, n_items: int, train_split: int) -> None:
        self.rates = _item_rates(seqs, train_split, nb, n_items)

    def predict(self, seqs: Sequences, ev: OutcomeEvents) -> np.ndarray:
        return self.rates[np.asarray(seqs.items)[ev.events].astype(np.int64)]


class CountsLogRegOutcome:
    """PFA-style multinomial logistic regression: log1p of the user's prior counts of each behaviour
    (overall, on the item, on the item's category) plus the log of the item's training rates.

    Fitted on the training events (every event of the training split, each from the events before it), a
    sample of at most ``max_fit`` of them (seed 0)."""

    name = "counts-logreg"

    def __init__(
        self,
        seqs: Sequences,
        *,
        nb: int,
        n_items: int,
        train_split: int,
        groups: np.ndarray | None = None,
        max_fit: int = 200_000,
    ) -> None:
        from sklearn.linear_model import LogisticRegression

        self.nb, self.groups = nb, groups
        self.rates = _item_rates(seqs, train_split, nb, n_items)
        ev = outcome_events(seqs, train_split)
        if len(ev.events) > max_fit:
            pick = np.sort(np.random.default_rng(0).choice(len(ev.events), max_fit, replace=False))
            ev = OutcomeEvents(ev.events[pick], ev.users[pick], ev.labels[pick])
        x = self._features(seqs, ev)
        self.model = LogisticRegression(max_iter=500).fit(x, ev.labels)

    def _features(self, seqs: Sequences, ev: OutcomeEvents) -> np.ndarray:
        counts = np.log1p(prior_counts(seqs, ev, self.nb, groups=self.groups))
        rates = np.log(self.rates[np.asarray(seqs.items)[ev.events].astype(np.int64)])
        return np.hstack([counts, rates])

    def predict(self, seqs: Sequences, ev: OutcomeEvents) -> np.ndarray:
        p = self.model.predict_proba(self._features(seqs, ev))
        out = np.zeros((len(ev.events), self.nb))
        out[:, self.model.classes_ - 1] = p
        return out


# ---------------------------------------------------------------------------------------------- protocol


def evaluate_outcomes(
    model: NextActionModel,
    data: PreparedDataset,
    *,
    fit_data: PreparedDataset,
    split: int = TEST,
    baselines: bool = False,
) -> dict[str, Any]:
    """Outcome metrics of the model on every event of ``split`` (and of the baselines, fitted on the TRAIN
    events of ``fit_data``: the model's own training events), with paired bootstrap intervals over users
    for each AUC difference against a baseline."""
    nb = len(data.behaviors) - 1
    names = list(data.behaviors[1:])
    ev = outcome_events(data.seqs, split)
    stats = ItemStats(data.seqs, nb)  # every event outside TEST, each counted only before its moment
    probs = outcome_probabilities(model, data.seqs, ev, stats=stats)
    boot = user_bootstrap(ev.users)
    mine, my_draws = _metrics(probs, ev.labels, names, boot=boot)
    result: dict[str, Any] = {
        "protocol": (
            f"every {SPLIT_NAMES[split]} event ({len(ev.events)} of {len(np.unique(ev.users))} users), each "
            f"predicted from the events before it (at most {model.cfg.max_len - 1}; windows overlap by half) "
            "and its item; a user's first event from the empty history; P normalised over the behaviours; "
            "AUC of each behaviour against the others, accuracy of the most likely behaviour; 95% intervals "
            "from 200 bootstrap draws over users (seed 0), the same draws for every scorer (paired differences)"
        ),
        "nextaction": mine,
    }
    if not baselines:
        return result
    groups = None
    if model.cfg.categorical:
        codes, _ = category_codes(data.items, (model.cfg.categorical[0],))
        groups = codes[:, 0]
    fitted = [
        ItemRateOutcome(fit_data.seqs, nb=nb, n_items=data.n_items, train_split=TRAIN),
        CountsLogRegOutcome(fit_data.seqs, nb=nb, n_items=data.n_items, train_split=TRAIN, groups=groups),
    ]
    result["baselines"] = {}
    result["difference"] = {}
    for b in fitted:
        theirs, their_draws = _metrics(b.predict(data.seqs, ev), ev.labels, names, boot=boot)
        result["baselines"][b.name] = theirs
        result["difference"][b.name] = {
            name: {
                "auc": round(my_draws[name][0] - their_draws[name][0], 4),
                "ci95": [round(v, 4) for v in interval(my_draws[name][1] - their_draws[name][1])],
            }
            for name in my_draws
            if name in their_draws
        }
    return result
