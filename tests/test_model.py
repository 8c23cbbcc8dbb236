"""Masking and shape properties of the transformer (the HSTU-style contract tests)."""

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nextaction.model import ModelConfig, NextActionModel, time_gap_buckets


def tiny(**kw) -> NextActionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=30, n_behaviors=4, dim=16, n_heads=2, n_layers=2, max_len=12, dropout=0.0, **kw)
    return NextActionModel(cfg).eval()


def seq(items, behaviors=None, times=None):
    n = len(items)
    b = behaviors or [1] * n
    t = times or [i * 1000 for i in range(n)]
    return torch.tensor([items]), torch.tensor([b]), torch.tensor([t])


@settings(max_examples=25, deadline=None)
@given(
    prefix=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    future=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    other=st.lists(st.integers(1, 30), min_size=1, max_size=5),
)
def test_causality_future_events_never_change_earlier_outputs(prefix, future, other):
    m = tiny()
    with torch.no_grad():
        a = m(*seq(prefix + future))
        b = m(*seq(prefix + other))
    n = len(prefix)
    torch.testing.assert_close(a[0, :n], b[0, :n], rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(items=st.lists(st.integers(1, 30), min_size=1, max_size=8), pad=st.integers(1, 4))
def test_padding_invariance(items, pad):
    m = tiny()
    n = len(items)
    with torch.no_grad():
        a = m(*seq(items))
        b = m(*seq(items + [0] * pad, [1] * n + [0] * pad, [i * 1000 for i in range(n)] + [0] * pad))
        s1 = m.last_state(*seq(items))
        s2 = m.last_state(
            *seq(items + [0] * pad, [1] * n + [0] * pad, [i * 1000 for i in range(n)] + [0] * pad)
        )
    torch.testing.assert_close(a[0], b[0, :n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)


def reference_attention(q, k, v):
    """Plain softmax(QK^T / sqrt(d) + causal mask) V."""
    L = q.shape[-2]
    att = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return att @ v


def test_fused_attention_equals_reference():
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, 2, 9, 8) for _ in range(3))
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(fused, reference_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_block_attention_equals_reference_through_the_module():
    m = tiny()
    attn = m.blocks[0].attn
    x = torch.randn(2, 7, 16)
    B, L, D = x.shape
    q, k, v = attn.qkv(x).split(D, dim=2)
    q, k, v = (t.view(B, L, 2, D // 2).transpose(1, 2) for t in (q, k, v))
    expected = attn.proj(reference_attention(q, k, v).transpose(1, 2).reshape(B, L, D))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_time_gap_buckets():
    t = torch.tensor([[0, 1000, 1000, 61_000, 0]])
    mask = torch.tensor([[True, True, True, True, False]])
    b = time_gap_buckets(t, mask, 32)
    # first event 1; gap 1 s -> 2 + floor(log2 2) = 3; gap 0 -> 2; gap 60 s -> 2 + floor(log2 61) = 7; pad 0
    assert b.tolist() == [[1, 3, 2, 7, 0]]


def test_shapes_and_tied_scores():
    m = tiny()
    items, beh, ts = seq([3, 4, 5])
    with torch.no_grad():
        h = m(items, beh, ts)
        s = m.score_all(m.last_state(items, beh, ts))
    assert h.shape == (1, 3, 16)
    assert s.shape == (1, 31)
    assert s[0, 0] == float("-inf")
    assert m.output_embeddings() is m.item_emb.weight


def test_behaviour_and_time_change_the_output():
    m = tiny()
    with torch.no_grad():
        a = m.last_state(*seq([3, 4], [1, 1], [0, 1000]))
        b = m.last_state(*seq([3, 4], [1, 2], [0, 1000]))
        c = m.last_state(*seq([3, 4], [1, 1], [0, 86_400_000]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, c)


@settings(max_examples=10, deadline=None)
@given(
    prefix=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    future=st.lists(st.integers(1, 30), min_size=1, max_size=4),
)
def test_causality_holds_for_every_layer_variant(prefix, future):
    for kw in (
        {"ffn": "swiglu"},
        {"gated_residual": True},
        {"item_bias": True, "tie_weights": False},
        {"rel_pos_bias": True},
    ):
        m = tiny(**kw)
        with torch.no_grad():
            a = m(*seq(prefix + future))
            b = m(*seq(prefix + [1] * len(future)))
        torch.testing.assert_close(a[0, : len(prefix)], b[0, : len(prefix)], rtol=1e-5, atol=1e-5)


def test_relative_bias_reaches_attention():
    m = tiny(rel_pos_bias=True)
    with torch.no_grad():
        a = m.last_state(*seq([3, 4, 5]))
        m.rel_bias[:, 2] += 5.0  # favour the event two steps back
        b = m.last_state(*seq([3, 4, 5]))
    assert not torch.allclose(a, b)


# ---- repeat-aware scores ---------------------------------------------------------------------------------


def test_repeat_scores_are_causal_and_lift_only_history_items():
    """Copy scores of query t never read slots after t; next_item_scores change only history items' scores
    (upwards) and equal the catalogue scores for every other item."""
    from nextaction.model import RepeatScore

    model = tiny(repeat_score=True)
    items, behaviors, times = seq([3, 7, 3, 9, 11], [1, 2, 1, 3, 1])
    h = model(items, behaviors, times)
    upto = torch.arange(5)[None, :]
    copy = model.copy_scores(h, items, behaviors, upto)  # (1, 5, 5)
    later = torch.ones(5, 5, dtype=torch.bool).triu(1)
    assert (copy[0][later] <= -1e3).all() and (copy[0][~later] > -1e3).all()  # slot s > t: invisible to t
    other = model(torch.tensor([[3, 7, 3, 20, 21]]), behaviors, times)
    copy2 = model.copy_scores(other, torch.tensor([[3, 7, 3, 20, 21]]), behaviors, upto)
    torch.testing.assert_close(copy[0, :3, :3], copy2[0, :3, :3])

    scores = model.next_item_scores(h, items, behaviors)
    base = model.score_all(h[:, -1])
    seen = torch.zeros(31, dtype=torch.bool)
    seen[[3, 7, 9, 11]] = True
    assert (scores[0, seen] > base[0, seen]).all()
    torch.testing.assert_close(scores[0, ~seen][1:], base[0, ~seen][1:])
    # the mixture by hand for item 3 (two slots)
    c = copy[0, 4]
    expected = torch.logsumexp(torch.stack([base[0, 3], c[0], c[2]]), dim=0)
    torch.testing.assert_close(scores[0, 3], expected)
    assert isinstance(model.repeat, RepeatScore)


def test_empty_history_scores_the_catalogue_only():
    model = tiny(repeat_score=True)
    items = torch.zeros(1, 4, dtype=torch.long)
    h = model(items, items, items)
    scores = model.next_item_scores(h, items, items)
    torch.testing.assert_close(scores, model.score_all(torch.zeros(1, 16)))
