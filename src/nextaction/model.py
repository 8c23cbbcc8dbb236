"""The next-action transformer: a causal decoder over a user's event sequence.

One position per event. Its input vector is the sum of four embeddings:

    item (what) + behaviour (how: view/cart/buy …) + time gap (when, relative to the previous event)
    + position (where in the sequence, counted from the oldest event kept)

and the output at position t is a user state ``h_t`` that scores every catalogue item as the event at t+1
by a dot product with the (tied) item embeddings. There are no per-user parameters: a user *is* their
history, so unseen users are served without retraining and forgetting a user means deleting their events.

Shapes use fixed letters: B batch, L sequence length, D model dim, H heads, N candidate items.

Design choices, each kept because it measured better or cheaper (see BENCHMARKS.md):
- Right padding plus a causal mask: real positions never see padding (it lies in their future), so no key
  padding mask is needed and SDPA takes its fused ``is_causal`` path.
- Positions count from the start, not from the end as in SASRec: counting from the end would let a new
  event change the position ids — and so the outputs — of all earlier events, breaking causality.
- Pre-LayerNorm blocks with a final LayerNorm: stable without warm-up tricks at small batch sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nextaction.losses import REPEAT_MASK

PAD = 0  # padding index for items, behaviours and time buckets (same value as data.schema.PAD_IDX)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    n_items: int  # real catalogue items; embedding rows = n_items + 1 (row 0 is padding)
    n_behaviors: int  # behaviour vocabulary size including padding
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 4
    dropout: float = 0.5  # sparse catalogues (most items seen a handful of times) need strong dropout
    attn_dropout: float = 0.0
    max_len: int = 50
    time_buckets: int = 32  # log2-second gap buckets; 0 = padding, 1 = no previous event
    # Off for logs without a clock (``--map order=…``): their "gaps" are position steps and carry nothing.
    time_gaps: bool = True
    tie_weights: bool = True
    emb_init_std: float = (
        0.1  # item embedding init: 0.1 learned ~2x faster than 0.02 on Beauty, 0.3 far slower
    )
    item_bias: bool = False  # a learned per-item score offset (popularity prior)
    ffn: Literal["gelu", "swiglu"] = "gelu"  # swiglu: the gated FFN of LLaMA / eSASRec
    gated_residual: bool = False  # LiGR-style: a sigmoid gate scales each sub-layer's residual update
    rel_pos_bias: bool = False  # HSTU-style learned attention bias per head and distance (t - s)
    text_dim: int = 0  # width of the item text embeddings (0 = no text); see the text/ package
    fusion: Literal["id", "text", "id+text"] = "id"  # item = ID embedding, projected text, or their sum
    # id+text: share of items whose ID embedding is hidden in each training step, so that the model learns
    # to rank items by their text alone — the only thing a new (cold) item has (DropoutNet's idea). Off by
    # default: on Beauty 0.3 lifted cold-item HR@10 3.6x but cost 7.5% NDCG@10 on warm items.
    id_dropout: float = 0.0
    behavior_head: bool = (
        False  # P(behaviour | history, candidate) head; on by default for multi-behaviour logs
    )
    head_dropout: float = 0.1
    # Repeat-aware next-item scores: a copy score over the history's own items mixed with the catalogue's
    # (RepeatNet's repeat/explore mixture). On by default where repeats are served (multi-behaviour logs).
    repeat_score: bool = False
    # Categorical item columns (e.g. an exercise's skill, a film's genre): one embedding table per column,
    # added to the item's vector, so items that share a category share what is learned about it (a new
    # exercise of a known skill starts from the skill). Names, and each column's vocabulary size with
    # row 0 = unknown; the (n_items + 1, F) table of codes is the buffer ``item_categories``.
    categorical: tuple[str, ...] = ()
    category_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.categorical) != len(self.category_sizes):
            raise ValueError("model.categorical and model.category_sizes must have one entry per column")


def time_gap_buckets(timestamps_ms: torch.Tensor, mask: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket the gap to the previous event: 1 for the first event, then 2 + floor(log2(1 + gap seconds)).

    timestamps_ms: (B, L) int64; mask: (B, L) bool, True on real events. Returns (B, L) long, 0 on padding.
    """
    gaps = (timestamps_ms[:, 1:] - timestamps_ms[:, :-1]).clamp(min=0).double() / 1000.0
    buckets = 2 + torch.floor(torch.log2(1.0 + gaps)).long()
    buckets = buckets.clamp(max=n_buckets - 1)
    first = torch.ones_like(timestamps_ms[:, :1])
    return torch.cat([first, buckets], dim=1) * mask


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.attn_dropout = cfg.attn_dropout
        self.drop = nn.Dropout(cfg.dropout)
        # The attention written out instead of the fused kernel: torch.func's vmap has no batching rule for
        # the fused CPU kernel and would loop over the batch (per-user gradients, privacy/dp.py, set this).
        self.explicit = False

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); bias: optional (H, L, L) additive attention bias, -inf above the diagonal."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        # (B, L, D) -> (B, H, L, D/H)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if self.explicit:
            att = q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads)  # (B, H, L, L)
            if bias is None:
                causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
                att = att.masked_fill(~causal, float("-inf"))
            else:
                att = att + bias
            att = F.dropout(torch.softmax(att, dim=-1), self.attn_dropout, self.training)
            y = (att @ v).transpose(1, 2).reshape(B, L, D)
            return self.drop(self.proj(y))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            is_causal=bias is None,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.drop(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.dim
        self.swiglu = cfg.ffn == "swiglu"
        # SwiGLU splits its up-projection into a value half and a gate half.
        self.up = nn.Linear(cfg.dim, 2 * hidden if self.swiglu else hidden)
        self.down = nn.Linear(hidden, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            value, gate = self.up(x).chunk(2, dim=-1)
            return self.drop(self.down(value * F.silu(gate)))
        return self.drop(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = FeedForward(cfg)
        # LiGR gates: per-position, per-channel sigmoid(W LN(x)) on each residual update.
        self.gates = (
            nn.ModuleList([nn.Linear(cfg.dim, cfg.dim) for _ in range(2)]) if cfg.gated_residual else None
        )

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        update = self.attn(h, bias)
        x = x + (update if self.gates is None else torch.sigmoid(self.gates[0](h)) * update)
        h = self.ln2(x)
        update = self.ffn(h)
        return x + (update if self.gates is None else torch.sigmoid(self.gates[1](h)) * update)


class BehaviorHead(nn.Module):
    """P(behaviour b on candidate c within the next events | history): one logit per real behaviour.

    Target-aware, as in DIN/BST: the candidate attends to the visible history events (a learned "null"
    event is always visible, so an empty history is well defined). Beside that soft match, exact-match
    features say how often and how recently the user already did each behaviour on the candidate — the
    strongest signal in shops (people buy what they carted) — and the next-item logit ``h·e_c`` says how
    likely the candidate is next. A wide linear path on those features learns such rules fast; the MLP
    (deep path) combines them with the user state and the candidate's embedding.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D, NB = cfg.dim, cfg.n_behaviors - 1
        self.n_behaviors = NB
        self.q = nn.Linear(D, D)
        self.k = nn.Linear(D, D)
        self.v = nn.Linear(D, D)
        self.null = nn.Parameter(torch.zeros(2, D))  # key and value of the always-visible null event
        n_feat = 2 * NB + 3 + (NB + 1)  # + ItemStats features (popularity per behaviour, recent)
        self.wide = nn.Linear(n_feat, NB)
        self.deep = nn.Sequential(
            nn.Linear(4 * D + n_feat, 2 * D), nn.GELU(), nn.Dropout(cfg.head_dropout), nn.Linear(2 * D, NB)
        )

    def forward(
        self,
        events: torch.Tensor,
        hist_items: torch.Tensor,
        hist_behaviors: torch.Tensor,
        states: torch.Tensor,
        cand_emb: torch.Tensor,
        cand: torch.Tensor,
        upto: torch.Tensor,
        cand_stats: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (B, T, M, NB) for M candidates at each of T query points.

        events: (B, L, D) history event embeddings (keys/values); hist_items, hist_behaviors: (B, L);
        states: (B, T, D) user state at each query point; cand_emb: (B, T, M, D); cand: (B, T, M) item_idx;
        upto: (B, T) index of the last history event a query may see (-1 = none); cand_stats: (B, T, M, NB + 1)
        the candidates' popularity per behaviour and recent popularity as of the query (see ItemStats).
        """
        L, D = events.shape[1], events.shape[2]
        NB = self.n_behaviors
        s = torch.arange(L, device=events.device)
        visible = (s[None, None, :] <= upto[..., None]) & (hist_items != PAD)[:, None, :]  # (B, T, L)

        # soft match: candidate -> visible history events (single head), plus the null event
        q = self.q(cand_emb)  # (B, T, M, D)
        k, v = self.k(events), self.v(events)  # (B, L, D)
        att = torch.einsum("btmd,bld->btml", q, k) / math.sqrt(D)
        att = att.masked_fill(~visible[:, :, None, :], float("-inf"))
        att_null = (q @ self.null[0]) / math.sqrt(D)  # (B, T, M)
        w = torch.softmax(torch.cat([att, att_null[..., None]], dim=-1), dim=-1)
        ctx = torch.einsum("btml,bld->btmd", w[..., :L], v) + w[..., L:] * self.null[1]

        # exact match: how often and how recently the user did each behaviour on this very item
        match = (cand[..., None] == hist_items[:, None, None, :]) & visible[:, :, None, :]  # (B, T, M, L)
        counts = torch.stack(
            [(match & (hist_behaviors == b + 1)[:, None, None, :]).sum(-1) for b in range(NB)], dim=-1
        ).float()  # (B, T, M, NB)
        last_b = torch.stack(
            [
                (match & (hist_behaviors == b + 1)[:, None, None, :]).float().mul(s + 1).amax(-1)
                for b in range(NB)
            ],
            dim=-1,
        )  # (B, T, M, NB) 1 + position of the last such event, 0 if none
        age = (upto[..., None, None] + 1 - last_b).float()  # events since, per behaviour
        recency = torch.where(last_b > 0, 1.0 / age.clamp(min=1.0), torch.zeros_like(age))
        dot = (states[:, :, None, :] * cand_emb).sum(-1, keepdim=True)  # (B, T, M, 1) next-item logit
        any_seen = (counts.sum(-1, keepdim=True) > 0).float()
        n_hist = torch.log1p(visible.sum(-1).float())[:, :, None, None].expand_as(dot)
        feats = torch.cat([torch.log1p(counts), recency, any_seen, dot * 0.1, n_hist, cand_stats], dim=-1)
        u = states[:, :, None, :].expand_as(cand_emb)
        deep_in = torch.cat([u, cand_emb, ctx, u * cand_emb, feats], dim=-1)
        return self.wide(feats) + self.deep(deep_in)


REPEAT_AGE_BUCKETS = 8  # events since a history event: 0, 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+
REPEAT_TABLE_SCALE = 10.0  # RepeatScore's table learns this many times faster than its stored parameter


class RepeatScore(nn.Module):
    """Copy scores of the history's events: the "repeat" half of a repeat/explore mixture.

        P(next = i) ∝ exp(h·e_i) + Σ_{s visible, item_s = i} exp(r_s)

    One dot product with the user state cannot say "she will do it again": an item's score is the same
    whether she carted it an hour ago or never saw it. The copy score r_s of history event s gives the
    items she touched their own mass, from what was done (behaviour), how long ago (events since, log
    buckets), how repeat-prone the user is right now (a gate on the state) and which items come back
    (attention of the state on the event: consumables return, a fridge does not). Training learns how much
    mass repeats deserve against the catalogue; scoring adds it to the history's items (:meth:`mix`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D = cfg.dim
        # log(n_items) puts one history event's mass at the whole catalogue's at start (h·e ≈ 0 there); the
        # table starts a few nats below, decaying with age like repeat-recent's 0.9 per event, so repeats
        # begin plausible, recent ones first. The table is stored divided by REPEAT_TABLE_SCALE: Adam moves
        # a parameter by ~lr a step whatever its gradient, and a copy score must travel several nats in a
        # few hundred steps to keep up with the catalogue's logits.
        self.log_n = math.log(cfg.n_items + 1)
        mid_age = torch.tensor([0.0, 1.0, 2.5, 5.5, 11.5, 23.5, 47.5, 95.5])[:REPEAT_AGE_BUCKETS]
        prior = -3.0 + mid_age * math.log(0.9)
        self.table = nn.Parameter(prior.expand(cfg.n_behaviors, -1).clone() / REPEAT_TABLE_SCALE)
        self.gate = nn.Linear(D, 1)
        self.q = nn.Linear(D, D, bias=False)

    def forward(
        self, states: torch.Tensor, events: torch.Tensor, hist_behaviors: torch.Tensor, upto: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, L) copy score of history slot s for query t; losses.REPEAT_MASK where s is not visible.

        states: (B, T, D) user state at each query; events: (B, L, D) event embeddings; hist_behaviors:
        (B, L), PAD on padding; upto: (B, T) index of the last visible slot (-1 = none).
        """
        L, D = events.shape[1], events.shape[2]
        age = upto[..., None] - torch.arange(L, device=events.device)  # (B, T, L) events since
        visible = (age >= 0) & (hist_behaviors != PAD)[:, None, :]
        bucket = torch.where(age > 0, torch.log2(age.clamp(min=1).float()).floor().long() + 1, 0)
        bucket = bucket.clamp(max=REPEAT_AGE_BUCKETS - 1)
        table = self.table * REPEAT_TABLE_SCALE
        r = table[hist_behaviors[:, None, :].expand_as(bucket), bucket]  # (B, T, L)
        r = r + self.gate(states) + self.log_n
        r = r + torch.einsum("btd,bld->btl", self.q(states), events) / math.sqrt(D)
        return r.masked_fill(~visible, REPEAT_MASK)

    @staticmethod
    def mix(scores: torch.Tensor, copy: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, N) catalogue scores with the copy mass of each history slot added to its item:
        log(exp(score_i) + Σ_{s: item_s = i} exp(copy_s)). copy, items: (B, L)."""
        top = copy.amax(dim=1, keepdim=True)
        mass = torch.zeros_like(scores).scatter_add_(1, items, torch.exp(copy - top).to(scores.dtype))
        return torch.logaddexp(scores, torch.log(mass) + top)


class NextActionModel(nn.Module):
    """Causal transformer that maps an event sequence to one user state per position."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=PAD)
        self.behavior_emb = nn.Embedding(cfg.n_behaviors, cfg.dim, padding_idx=PAD)
        self.time_emb = nn.Embedding(cfg.time_buckets, cfg.dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        # Relative positions give recency ("3 events ago") without breaking causality, which positions
        # counted from the end would: bias[h, d] for distance d = t - s, shared by all layers.
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_heads, cfg.max_len)) if cfg.rel_pos_bias else None
        self.ln_f = nn.LayerNorm(cfg.dim)
        # Untied output embeddings are an option; tying halves the parameters and generalises better on
        # sparse catalogues, where most items are seen only a handful of times.
        self.out_emb = None if cfg.tie_weights else nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=PAD)
        self.out_bias = nn.Parameter(torch.zeros(cfg.n_items + 1)) if cfg.item_bias else None
        self.category_emb = nn.ModuleList(
            nn.Embedding(size, cfg.dim, padding_idx=PAD) for size in cfg.category_sizes
        )
        if cfg.categorical:
            self.register_buffer(
                "item_categories", torch.zeros(cfg.n_items + 1, len(cfg.categorical), dtype=torch.long)
            )
        self.behavior = BehaviorHead(cfg) if cfg.behavior_head else None
        self.repeat = RepeatScore(cfg) if cfg.repeat_score else None
        # Item text (fixed sentence embeddings, a buffer) enters through a learned projection. ``has_id``
        # marks items that had training events: an item without them has an ID embedding that never learned
        # anything, so it is represented by its text alone — which makes new items recommendable at once.
        if cfg.fusion != "id" and cfg.text_dim <= 0:
            raise ValueError(f"fusion '{cfg.fusion}' needs item text (text_dim > 0)")
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim) if cfg.text_dim > 0 else None
        if cfg.text_dim > 0:
            self.register_buffer("text_emb", torch.zeros(cfg.n_items + 1, cfg.text_dim))
            self.register_buffer("has_id", torch.ones(cfg.n_items + 1))
            # Items registered as new (``items add``; the held-out items of the cold-start protocol): the
            # only ones the new-item offset lifts. Not "every item without training events": in a catalogue
            # built from a log those are the items that appear in validation or test, so lifting them would
            # reward an item for having a future.
            self.register_buffer("is_new", torch.zeros(cfg.n_items + 1))
            # Score offset of new items, fitted after training on validation (text.cold.fit_new_item_offset):
            # a text-only vector lacks the ID part that carries an item's popularity, so new items score
            # systematically low against trained ones. 0 during training.
            self.register_buffer("new_item_offset", torch.zeros(()))
        self._id_mask: torch.Tensor | None = None  # this training step's has_id with dropped IDs
        self.apply(self._init_weights)
        with torch.no_grad():
            self.item_emb.weight.normal_(0.0, cfg.emb_init_std)
            self.item_emb.weight[PAD].zero_()
        # GPT-2's scaled init for residual projections keeps the residual stream's variance flat in depth.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "ffn.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if self.text_proj is not None:
            # Item text models start from the text: the projected (unit-norm) text at the scale ID embeddings
            # start at, and, with id+text, ID rows at zero. An ID then learns only what its text misses, and
            # a rarely seen item is its text plus a small learned correction instead of text buried under
            # random ID noise. With random ID rows and a small projection, Beauty's id+text model ended no
            # better than ID alone (test NDCG@10 0.0605 vs 0.0599); starting from the text gives 0.061-0.063
            # (three runs) and learns about twice as fast (BENCHMARKS.md, "Item text").
            with torch.no_grad():
                self.text_proj.weight.normal_(0.0, cfg.emb_init_std)
                if cfg.fusion == "id+text":
                    self.item_emb.weight.zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def output_embeddings(self, *, text_only: bool = False) -> torch.Tensor:
        """(n_items + 1, D) item vectors used for scoring; row 0 is padding.

        With a score bias (:meth:`score_bias`: the learned item bias, the new-item offset) the bias rides
        along as an extra column (D + 1), matched by a constant 1 appended to every state
        (:meth:`output_states`), so losses and scoring stay one plain dot product. ``text_only``: every item
        as if it were new (text alone, with the new-item offset) — how the offset is fitted.
        """
        if text_only:
            w = self.all_item_vectors(text_only=True)
        else:
            w = self.out_emb.weight if self.out_emb is not None else self.all_item_vectors()
        bias = self.score_bias(text_only=text_only)
        return w if bias is None else torch.cat([w, bias[:, None]], dim=1)

    def score_bias(self, *, text_only: bool = False) -> torch.Tensor | None:
        """(n_items + 1,) additive score per item, or None: the learned item bias plus the new-item offset
        on items registered as new (``is_new``; every item when ``text_only``)."""
        bias = self.out_bias
        if self.has_new_item_offset():
            new = torch.ones_like(self.is_new) if text_only else self.is_new
            offset = self.new_item_offset * new
            bias = offset if bias is None else bias + offset
        return bias

    def has_new_item_offset(self) -> bool:
        return self.text_proj is not None and self.cfg.fusion == "id+text" and bool(self.new_item_offset != 0)

    def output_states(self, h: torch.Tensor) -> torch.Tensor:
        """States in the space of :meth:`output_embeddings` (appends the bias column's constant 1)."""
        if self.out_bias is None and not self.has_new_item_offset():
            return h
        return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)

    def forward(
        self,
        items: torch.Tensor,
        behaviors: torch.Tensor,
        timestamps: torch.Tensor,
        *,
        item_vecs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items, behaviors: (B, L) long, right-padded with 0; timestamps: (B, L) int64 ms.

        Returns (B, L, D) user states; row t summarises events 0..t and scores the event at t+1.
        ``item_vecs``: (B, L, D) the items' vectors, given instead of looked up (private training takes the
        gradient with respect to them: privacy/dp.py).
        """
        L = items.shape[1]
        if self.cfg.max_len < L:
            raise ValueError(f"sequence length {L} exceeds max_len {self.cfg.max_len}")
        mask = items != PAD
        pos = torch.arange(L, device=items.device)
        what = (
            self.event_embeddings(items, behaviors)
            if item_vecs is None
            else item_vecs + self.behavior_emb(behaviors)
        )
        x = what + self.pos_emb(pos)
        if self.cfg.time_gaps:
            x = x + self.time_emb(time_gap_buckets(timestamps, mask, self.cfg.time_buckets))
        x = self.drop(x * mask.unsqueeze(-1))
        bias = self._relative_bias(L) if self.rel_bias is not None else None
        for block in self.blocks:
            x = block(x, bias)
        return self.ln_f(x)

    def sample_id_dropout(self, gen: torch.Generator | None = None) -> None:
        """Draw which items hide their ID embedding in the next training step (same for inputs and outputs)."""
        if self.text_proj is None or self.cfg.fusion != "id+text" or not self.cfg.id_dropout:
            return
        keep = (torch.rand(self.cfg.n_items + 1, generator=gen) >= self.cfg.id_dropout).to(self.has_id.device)
        self._id_mask = self.has_id * keep

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(…, D) representation of item indices (…): ID embedding, projected text, or their sum, plus the
        embeddings of the item's categories."""
        if self.text_proj is None:
            v = self.item_emb(items)
        elif self.cfg.fusion == "text":
            v = self.text_proj(self.text_emb[items])
        else:
            has_id = self._id_mask if self.training and self._id_mask is not None else self.has_id
            v = self.item_emb(items) * has_id[items][..., None] + self.text_proj(self.text_emb[items])
        if self.cfg.categorical:
            codes = self.item_categories[items]  # (…, F)
            for f, emb in enumerate(self.category_emb):
                v = v + emb(codes[..., f])
        return v

    def all_item_vectors(self, *, text_only: bool = False) -> torch.Tensor:
        """(n_items + 1, D) every item's representation; row 0 (padding) is zero. ``text_only``: the projected
        text alone, as a new item gets (models with item text)."""
        if self.text_proj is None and not self.cfg.categorical:
            if text_only:
                raise ValueError("text_only needs a model with item text")
            return self.item_emb.weight
        if text_only:
            if self.text_proj is None:
                raise ValueError("text_only needs a model with item text")
            v = self.text_proj(self.text_emb)
        else:
            v = self.item_vectors(torch.arange(self.cfg.n_items + 1, device=self.item_emb.weight.device))
        return v * (torch.arange(len(v), device=v.device) != PAD)[:, None]

    def event_embeddings(self, items: torch.Tensor, behaviors: torch.Tensor) -> torch.Tensor:
        """(B, L, D) what happened: item + behaviour embedding (the behaviour head's keys too)."""
        return self.item_vectors(items) + self.behavior_emb(behaviors)

    def behavior_logits(
        self,
        h: torch.Tensor,
        items: torch.Tensor,
        behaviors: torch.Tensor,
        cand: torch.Tensor,
        upto: torch.Tensor,
        cand_stats: torch.Tensor,
    ) -> torch.Tensor:
        """Behaviour logits (B, T, M, NB) of candidates ``cand`` (B, T, M) at query points ``upto`` (B, T).

        h: (B, L, D) output of :meth:`forward` for the history ``items``/``behaviors`` (B, L). Query point
        ``upto[b, t]`` is the index of the last history event it may see (-1 = empty history: zero state).
        cand_stats: (B, T, M, NB + 1) item statistics as of the query moment (candidates.ItemStats).
        """
        if self.behavior is None:
            raise ValueError("this model has no behaviour head (model.behavior_head = false)")
        idx = upto.clamp(min=0)
        states = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))  # (B, T, D)
        states = states.masked_fill((upto < 0)[..., None], 0.0)
        events = self.event_embeddings(items, behaviors)
        return self.behavior(
            events, items, behaviors, states, self.item_vectors(cand), cand, upto, cand_stats
        )

    def _relative_bias(self, L: int) -> torch.Tensor:
        """(H, L, L) additive attention bias: rel_bias[h, t - s] below the diagonal, -inf above it."""
        assert self.rel_bias is not None
        pos = torch.arange(L, device=self.rel_bias.device)
        dist = pos[:, None] - pos[None, :]  # (L, L) query t minus key s
        bias = self.rel_bias[:, dist.clamp(min=0)]  # (H, L, L)
        return bias.masked_fill(dist < 0, float("-inf"))

    def last_state(
        self, items: torch.Tensor, behaviors: torch.Tensor, timestamps: torch.Tensor
    ) -> torch.Tensor:
        """(B, D) state after each row's last real event (rows must hold at least one event)."""
        h = self.forward(items, behaviors, timestamps)
        last = (items != PAD).sum(dim=1).clamp(min=1) - 1
        return h[torch.arange(h.shape[0]), last]

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """(B, D) states -> (B, n_items + 1) scores over the whole catalogue; column 0 is -inf.

        The catalogue part only: models with ``repeat_score`` add the history's copy mass with
        :meth:`next_item_scores`, which needs the history."""
        scores = self.output_states(states) @ self.output_embeddings().T
        scores[:, PAD] = float("-inf")
        return scores

    def copy_scores(
        self, h: torch.Tensor, items: torch.Tensor, behaviors: torch.Tensor, upto: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, L) copy scores of the history slots for the queries ``upto`` (B, T) (see RepeatScore).

        h: (B, L, D) output of :meth:`forward` for ``items``/``behaviors`` (B, L)."""
        if self.repeat is None:
            raise ValueError("this model has no repeat score (model.repeat_score = false)")
        idx = upto.clamp(min=0)
        states = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1])).masked_fill(
            (upto < 0)[..., None], 0.0
        )
        return self.repeat(states, self.event_embeddings(items, behaviors), behaviors, upto)

    def next_item_scores(self, h: torch.Tensor, items: torch.Tensor, behaviors: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) next-item scores after each row's last real event (a zero state for an empty
        row), the history's copy mass mixed in for repeat-aware models; column 0 is -inf.

        h: (B, L, D) output of :meth:`forward` for ``items``/``behaviors`` (B, L), right-padded."""
        n = (items != PAD).sum(dim=1)
        upto = (n - 1)[:, None]  # (B, 1)
        last = h[torch.arange(len(h), device=h.device), upto[:, 0].clamp(min=0)]
        last = last.masked_fill((n == 0)[:, None], 0.0)
        scores = self.score_all(last)
        if self.repeat is None:
            return scores
        copy = self.copy_scores(h, items, behaviors, upto)[:, 0]  # (B, L)
        scores = RepeatScore.mix(scores.float(), copy.float(), items)
        scores[:, PAD] = float("-inf")
        return scores
