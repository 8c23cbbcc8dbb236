"""Why the model predicts what it does: which past events drove a prediction, and which items are alike.

Two attributions of one prediction — an item's next-item score, or its calibrated probability of a
behaviour — to the events of the history it was made from:

- **occlusion** (the default): ``value_i = score(history) − score(history without event i)``. Faithful by
  construction: it *is* what the model does when the event is gone (later events shift one position and the
  time gap of the next event changes, exactly as in a history without it). The full history and its L
  one-event-shorter variants go through the model as one batch of L + 1 rows, and only the explained item
  is scored (one dot product per row, not the catalogue), so explaining over 50 events costs about one
  forward pass of 51 rows. Its blind spot is redundancy: events that back each other up (a view, a cart
  and a buy of one item) each look unimportant, since removing one alone changes little — so each item
  with several events also gets a row without all of them (``item_contributions``, in the same batch), and
  the sentence names items by those values.
- **rollout** (Abnar & Zuidema, 2020): the product over layers of the head-averaged attention map mixed
  half-and-half with the identity (the residual stream), read at the last position. One row through the
  model, so cheaper, but it describes how the user *state* was built, the same whichever item is explained,
  and attention is not influence: a second view, not the default. The attention includes the model's
  relative-position bias (``model.rel_pos_bias``), so the maps are the ones the model really used.

Conventions (each tested in tests/test_explain.py):

- **sign**: a positive value means the event pushed the prediction up (removing it lowers the score).
- **order**: contributions are sorted by value, largest first (ties: the later event first), so the head
  names what drove the prediction and the tail, when every event is kept, what held it back.
- **shares**: ``value / Σ|value|`` over all events of the history (before ``top`` cuts the list), so the
  absolute shares of all events sum to 1. Occlusion is not additive: the values need not sum to
  ``score(history) − score(empty history)``, because events interact (removing two events is not the sum of
  removing each). Rollout values are non-negative and sum to 1 over the events the model sees, so they are
  their own shares.
- **units**: next-item values are differences of the raw score (the logit of the softmax over the
  catalogue, what ``Predictor.score`` returns); behaviour values are differences of the calibrated
  probability (what ``Predictor.predict`` returns), the number a user is shown.
- events older than the model's window (the last ``max_len``) cannot change the prediction: value 0.

The item-side view, :func:`similar_items`, ranks items by the cosine similarity of the model's item vectors
(``all_item_vectors``: ID embedding, projected text, or both): "similar to X you liked".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nextaction.batches import Batch
from nextaction.behavior.candidates import ItemStats
from nextaction.behavior.ranker import BehaviorRanker, candidate_signals, user_states
from nextaction.data.dataset import Sequences
from nextaction.model import PAD, NextActionModel

METHODS = ("occlusion", "rollout")
NEXT_ITEM = "next item"

ScoreFn = Callable[[Batch], np.ndarray]  # (B, L) batch -> (B,) float64 scores of the explained item

# Past-tense phrases per behaviour name ({} = the item); unknown names fall back to a neutral phrase.
_PHRASES = {
    "view": "viewed {}",
    "pv": "viewed {}",
    "click": "clicked {}",
    "cart": "added {} to your cart",
    "addtocart": "added {} to your cart",
    "fav": "saved {}",
    "favorite": "saved {}",
    "buy": "bought {}",
    "purchase": "bought {}",
    "transaction": "bought {}",
    "order": "ordered {}",
    "like": "liked {}",
    "watch": "watched {}",
    "rate": "rated {}",
    "review": "reviewed {}",
    "interact": "interacted with {}",
}


@dataclass(frozen=True)
class Explanation:
    """Why one item got its score for one history.

    ``contributions``: ``(position, item_id, behavior, value)`` per event, ``position`` = the event's index
    in the history as given (unknown items, which the model skips, keep their place in the numbering),
    sorted by value, largest first; see the module docstring for sign, units and the share convention.
    ``shares`` is aligned with ``contributions``. ``score``: the full-history score (next item: raw score;
    behaviour: calibrated probability). ``item_contributions``: ``(item_id, value)`` per distinct history
    item, largest first (ties: the more recent item first), the ``top`` first kept: occlusion removes every
    event on the item at once (so events that back each other up count together), rollout sums the item's
    shares; the sentence names these items. ``similar_history_items``: ``(item_id, cosine)`` of the distinct
    history items most similar to the explained item by the model's item vectors, most similar first.
    ``titles``: display titles of the items mentioned, where the catalogue has them.
    """

    item_id: str
    target: str  # "next item" or a behaviour name
    score: float
    method: str
    contributions: list[tuple[int, str, str, float]]
    shares: list[float]
    sentence: str
    item_contributions: list[tuple[str, float]] = field(default_factory=list)
    similar_history_items: list[tuple[str, float]] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)
    unknown_items: list[str] = field(default_factory=list)  # history items the model does not know

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        return {
            "item_id": self.item_id,
            "title": self.titles.get(self.item_id),
            "target": self.target,
            "score": self.score,
            "method": self.method,
            "sentence": self.sentence,
            "contributions": [
                {
                    "position": pos,
                    "item_id": item,
                    "title": self.titles.get(item),
                    "behavior": beh,
                    "value": value,
                    "share": share,
                }
                for (pos, item, beh, value), share in zip(self.contributions, self.shares, strict=True)
            ],
            "item_contributions": [
                {"item_id": item, "title": self.titles.get(item), "value": value}
                for item, value in self.item_contributions
            ],
            "similar_history_items": [
                {"item_id": item, "title": self.titles.get(item), "similarity": sim}
                for item, sim in self.similar_history_items
            ],
            "unknown_items": list(self.unknown_items),
        }


# ---- scoring one item for many histories -------------------------------------------------------------


def _pad_rows(rows: list[np.ndarray], items: np.ndarray, behaviors: np.ndarray, times: np.ndarray) -> Batch:
    """Right-padded (B, L) batch of the events ``rows[b]`` (indices into the history arrays)."""
    L = max(1, max(len(r) for r in rows))
    idx = np.full((len(rows), L), -1, dtype=np.int64)
    for b, r in enumerate(rows):
        idx[b, : len(r)] = r
    valid = idx >= 0
    safe = np.where(valid, idx, 0)

    def take(a: np.ndarray) -> torch.Tensor:
        if len(a) == 0:  # an empty history: every row is padding
            return torch.zeros(idx.shape, dtype=torch.long)
        return torch.from_numpy(np.where(valid, np.asarray(a, dtype=np.int64)[safe], 0))

    return Batch(items=take(items), behaviors=take(behaviors), timestamps=take(times))


def occlusion_batch(
    items: np.ndarray,
    behaviors: np.ndarray,
    times: np.ndarray,
    max_len: int,
    *,
    groups: Sequence[np.ndarray] = (),
) -> tuple[Batch, np.ndarray]:
    """The full history and every one-event-shorter history, as the model would see them.

    items, behaviors, times: (n,) encoded history, oldest first. Returns a batch of W + 1 + len(groups)
    rows, W = min(n, max_len): row 0 is the full history cut to its last ``max_len`` events (as
    ``Predictor.scores`` cuts it); row 1 + j is the history without window event ``window[j]``, cut the same
    way — so when the history is longer than the window the event before it slides in, as it would in the
    edited history; then one row per group, the history without that group's events (indices). Also
    returns ``window`` (W,), the indices into the history of the events the model sees.
    """
    n = len(items)
    start = max(0, n - max_len)
    window = np.arange(start, n)
    first = max(0, start - 1)  # the event that slides into the window when one is removed
    ext = np.arange(first, n)
    keep = np.arange(len(ext) - 1)[None, :]  # (1, len(ext) - 1)
    dropped = (window - first)[:, None]  # (W, 1) position of the removed event within ext
    variants = ext[keep + (keep >= dropped)]  # (W, len(ext) - 1): ext without the dropped event
    without = [np.setdiff1d(np.arange(n), g)[-max_len:] for g in groups]
    rows = [window, *(v[-max_len:] for v in variants), *without]
    return _pad_rows(rows, items, behaviors, times), window


def _last_state(model: NextActionModel, batch: Batch) -> torch.Tensor:
    """(B, D) state after each row's last event; zero for an empty row, as train.score_histories does."""
    states = model.last_state(batch.items, batch.behaviors, batch.timestamps)
    return states.masked_fill(~batch.mask.any(dim=1)[:, None], 0.0)


@torch.no_grad()
def target_vector(model: NextActionModel, item_idx: int) -> torch.Tensor:
    """The item's row of ``model.output_embeddings()`` (D, or D + 1 with a score bias), computed alone.

    Scoring one item needs one vector, not the catalogue: with item text, the full table would project
    every item's text first.
    """
    idx = torch.tensor([item_idx])
    vec = model.out_emb(idx)[0] if model.out_emb is not None else model.item_vectors(idx)[0]
    bias = model.score_bias()
    if bias is not None:
        vec = torch.cat([vec, bias[item_idx : item_idx + 1]])
    return vec


def next_item_scorer(model: NextActionModel, item_idx: int) -> ScoreFn:
    """Batch -> (B,) the item's next-item score after each row (``Predictor.score``'s number)."""
    vec = target_vector(model, item_idx)

    @torch.no_grad()
    def score(batch: Batch) -> np.ndarray:
        return (model.output_states(_last_state(model, batch)) @ vec).double().numpy()

    return score


def behavior_scorer(
    model: NextActionModel,
    item_idx: int,
    behavior_col: int,
    stats: ItemStats,
    ranker: BehaviorRanker | None,
    to_probability: Callable[[np.ndarray], np.ndarray],
) -> ScoreFn:
    """Batch -> (B,) calibrated P(behaviour on the item) after each row (``Predictor.predict``'s number).

    behavior_col: the behaviour's column among the NB outputs (behaviour index − 1); stats: the item
    statistics as of now; ranker: the model's second stage (None = the head's logits); to_probability:
    (B, NB) raw logits -> (B, NB) probabilities. The ranker's history counts read the batch's events, i.e.
    the last ``max_len`` events (the whole history for shorter ones, as ``predict`` reads it).
    """

    @torch.no_grad()
    def score(batch: Batch) -> np.ndarray:
        mask = batch.mask.numpy()  # rows are left-aligned: a row's events are its unmasked prefix
        lengths = mask.sum(axis=1)
        seqs = Sequences.from_arrays(
            batch.items.numpy()[mask], batch.behaviors.numpy()[mask], batch.timestamps.numpy()[mask], lengths
        )
        B = len(lengths)
        starts, ends = seqs.offsets[:-1], seqs.offsets[1:]
        states = user_states(model, seqs, starts, ends)
        cand = np.full((B, 1), item_idx, dtype=np.int64)
        head, x = candidate_signals(model, seqs, starts, ends, states, cand, np.full(B, np.inf), stats)
        logits = head[:, 0] if ranker is None else ranker(x[:, 0])
        return np.asarray(to_probability(logits.astype(np.float64)), dtype=np.float64)[:, behavior_col]

    return score


def occlusion(
    score: ScoreFn, items: np.ndarray, behaviors: np.ndarray, times: np.ndarray, max_len: int
) -> tuple[float, np.ndarray, dict[int, float]]:
    """Full-history score, per-event values (n,) and per-item values {item_idx: value}.

    value_i = score(history) − score(history without event i); events outside the model's window get 0.
    An item's value = score(history) − score(history without every event on it): events that back each
    other up (a view, a cart and a buy of one item) each look small alone but not together. Items with one
    event reuse its value; those with several add one row each to the same batched call of ``score`` (n + 1
    rows otherwise, at most max_len + 1). An empty history gives its score and no values.
    """
    window_items = items[max(0, len(items) - max_len) :]
    distinct, counts = np.unique(window_items, return_counts=True)
    repeated = distinct[counts > 1]
    groups = [np.flatnonzero(items == item) for item in repeated]
    batch, window = occlusion_batch(items, behaviors, times, max_len, groups=groups)
    s = score(batch)  # (W + 1 + len(groups),)
    W = len(window)
    values = np.zeros(len(items), dtype=np.float64)
    values[window] = s[0] - s[1 : W + 1]
    by_item = {int(it): 0.0 for it in items}  # items seen only before the window: 0
    by_item.update({int(it): float(values[window][window_items == it][0]) for it in distinct})
    by_item.update({int(it): float(s[0] - s[W + 1 + k]) for k, it in enumerate(repeated)})
    return float(s[0]), values, by_item


# ---- attention rollout -------------------------------------------------------------------------------


@torch.no_grad()
def attention_maps(model: NextActionModel, batch: Batch) -> list[torch.Tensor]:
    """Per layer, the (B, H, L, L) attention probabilities the model used for ``batch``.

    The fused SDPA path returns no weights, so forward hooks catch each attention module's inputs (the
    normalised residual stream and the additive bias) and recompute softmax(q kᵀ / √d + bias) from the
    module's own projection: the same maps, the fast path left as it is.
    """
    maps: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        x = args[0]
        bias = args[1] if len(args) > 1 else None
        B, L, D = x.shape
        H = module.n_heads
        q, k, _ = module.qkv(x).split(D, dim=2)
        q, k = (t.view(B, L, H, D // H).transpose(1, 2) for t in (q, k))
        att = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, L, L)
        if bias is None:  # the plain causal mask
            causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf"))
        else:  # the relative-position bias, -inf above the diagonal
            att = att + bias
        maps.append(att.softmax(dim=-1))

    handles = [block.attn.register_forward_hook(hook) for block in model.blocks]
    try:
        model(batch.items, batch.behaviors, batch.timestamps)
    finally:
        for handle in handles:
            handle.remove()
    return maps


def window_batch(items: np.ndarray, behaviors: np.ndarray, times: np.ndarray, max_len: int) -> Batch:
    """(1, W) batch of the history as the model sees it: its last ``max_len`` events (W ≥ 1, padded)."""
    return _pad_rows([np.arange(max(0, len(items) - max_len), len(items))], items, behaviors, times)


def rollout(
    model: NextActionModel, items: np.ndarray, behaviors: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """(n,) attention-rollout shares of the last position over the history: ≥ 0, summing to 1.

    R = Π_layers (½·mean_heads(A) + ½·I), last layer leftmost; the shares are R's last row. Rows of every
    factor sum to 1, so R's rows do too. Events outside the model's window get 0.
    """
    n = len(items)
    values = np.zeros(n, dtype=np.float64)
    if n == 0:
        return values
    window = np.arange(max(0, n - model.cfg.max_len), n)
    batch = window_batch(items, behaviors, times, model.cfg.max_len)
    L = len(window)
    eye = torch.eye(L, dtype=torch.float64)
    R = eye
    for att in attention_maps(model, batch):
        R = (0.5 * att[0].double().mean(dim=0) + 0.5 * eye) @ R
    values[window] = R[-1].numpy()
    return values


# ---- similar items -----------------------------------------------------------------------------------


@torch.no_grad()
def cosine_to(model: NextActionModel, item_idx: int, others: np.ndarray) -> np.ndarray:
    """(len(others),) cosine similarity of the item's vector to each of ``others`` (item indices)."""
    if len(others) == 0:
        return np.zeros(0, dtype=np.float64)
    idx = torch.from_numpy(np.concatenate([[item_idx], np.asarray(others, dtype=np.int64)]))
    v = F.normalize(model.item_vectors(idx).double(), dim=1)
    return (v[1:] @ v[0]).numpy()


@torch.no_grad()
def similar_items(model: NextActionModel, item_idx: int, k: int) -> list[tuple[int, float]]:
    """The ``k`` items whose vectors are most similar to the item's: (item_idx, cosine), best first.

    Neither the item itself nor padding is returned; ties go to the lower index.
    """
    v = F.normalize(model.all_item_vectors().double(), dim=1)  # padding's zero row stays zero
    sims = v @ v[item_idx]
    sims[PAD] = float("-inf")
    sims[item_idx] = float("-inf")
    k = min(k, int(torch.isfinite(sims).sum()))
    # a stable sort, not topk, so equal similarities come back in index order every time
    order = torch.sort(sims, descending=True, stable=True).indices[:k]
    return [(int(i), float(sims[i])) for i in order]


# ---- assembling an explanation -----------------------------------------------------------------------


def rank_events(values: np.ndarray) -> np.ndarray:
    """Event indices by value, largest first; ties put the later event first."""
    n = len(values)
    return np.lexsort((-np.arange(n), -np.asarray(values)))


def _name(item: str, target: str, titles: Mapping[str, str]) -> str:
    return "it" if item == target else titles.get(item) or f"item {item}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def sentence(
    target: str,
    item_id: str,
    score: float,
    reasons: Sequence[tuple[str, str, float]],
    titles: Mapping[str, str],
    *,
    max_items: int = 3,
) -> str:
    """One plain sentence: "Recommended because you viewed X and Y and bought Z."

    reasons: ``(item_id, behaviour, value)`` per history item, largest value first (the behaviour of the
    item's latest event). Names the strongest item and the next ones whose value is at least a quarter of
    its value, at most ``max_items``, so weak contributors are not presented as reasons; items are grouped
    by behaviour, in the order of their strongest.
    """
    lead = "Recommended" if target == NEXT_ITEM else f"P({target}) = {score:.2f}"
    if not reasons:
        why = "because it is popular overall" if target == NEXT_ITEM else "from what is usual for this item"
        return f"{lead} {why}: there is no known history to explain it by."
    best = reasons[0][2]
    if best <= 0:
        return f"{lead}, but no single past item explains it: removing any one alone would not lower it."
    groups: dict[str, list[str]] = {}  # behaviour -> item names, insertion-ordered
    for item, behavior, value in reasons[:max_items]:
        if value < 0.25 * best:
            break
        groups.setdefault(behavior, []).append(_name(item, item_id, titles))
    phrases = [
        _PHRASES.get(b.lower(), f"did '{b}' on {{}}").format(_join(names)) for b, names in groups.items()
    ]
    return f"{lead} because you {_join(phrases)}."


def assemble(
    *,
    item_id: str,
    target: str,
    method: str,
    score: float,
    values: np.ndarray,
    positions: np.ndarray,
    event_items: Sequence[str],
    event_behaviors: Sequence[str],
    top: int | None,
    titles: Mapping[str, str],
    similar_history_items: list[tuple[str, float]],
    unknown_items: list[str],
    item_values: Mapping[str, float] | None = None,
) -> Explanation:
    """Sort, normalise and phrase per-event ``values`` (n,) into an :class:`Explanation`.

    positions: (n,) each event's index in the history as given; event_items / event_behaviors: (n,) ids and
    behaviour names; top: keep the first ``top`` contributions (None = all); item_values: each distinct
    item's value (occlusion of all its events), None = the sum of its events' values (rollout shares).
    """
    order = rank_events(values)
    total = float(np.abs(values).sum())
    ranked = [
        (int(positions[i]), str(event_items[i]), str(event_behaviors[i]), float(values[i])) for i in order
    ]
    shares = [float(values[i]) / total if total > 0 else 0.0 for i in order]
    latest = {item: i for i, item in enumerate(event_items)}  # each item's most recent event
    if item_values is None:
        summed: dict[str, float] = {}
        for item, value in zip(event_items, values.tolist(), strict=True):
            summed[item] = summed.get(item, 0.0) + value
        item_values = summed
    by_item = sorted(latest, key=lambda item: (-item_values[item], -latest[item]))
    reasons = [(item, str(event_behaviors[latest[item]]), float(item_values[item])) for item in by_item]
    if top is not None:
        ranked, shares, by_item = ranked[:top], shares[:top], by_item[:top]
    mentioned = {item_id, *(c[1] for c in ranked), *by_item, *(s[0] for s in similar_history_items)}
    return Explanation(
        item_id=item_id,
        target=target,
        score=float(score),
        method=method,
        contributions=ranked,
        shares=shares,
        sentence=sentence(target, item_id, score, reasons, titles),
        item_contributions=[(item, float(item_values[item])) for item in by_item],
        similar_history_items=similar_history_items,
        titles={i: titles[i] for i in sorted(mentioned) if titles.get(i)},
        unknown_items=unknown_items,
    )
