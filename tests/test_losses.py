import math

import pytest
import torch
import torch.nn.functional as F

from nextaction import losses


def setup(P=6, D=8, n_rows=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(P, D, generator=g),
        torch.randn(n_rows, D, generator=g),
        torch.randint(1, n_rows, (P,), generator=g),
    )


def test_full_softmax_matches_manual_cross_entropy():
    h, e, y = setup()
    logits = h @ e.T
    logits[:, 0] = -math.inf
    expected = -(logits.log_softmax(-1)[torch.arange(len(y)), y]).mean()
    torch.testing.assert_close(losses.full_softmax(h, e, y), expected)


def test_sampled_softmax_with_all_items_and_uniform_q_equals_full():
    h, e, y = setup()
    negatives = torch.arange(1, e.shape[0])  # every real item once
    lq = losses.uniform_log_q(e.shape[0] - 1)
    # uniform logQ shifts all logits equally, and the target appearing among negatives is masked out
    torch.testing.assert_close(losses.sampled_softmax(h, e, y, negatives, lq), losses.full_softmax(h, e, y))


def test_gbce_beta_one_is_bce():
    h, e, y = setup()
    neg = torch.randint(1, e.shape[0], (len(y), 3))
    pos = (h * e[y]).sum(-1)
    negs = torch.einsum("pd,psd->ps", h, e[neg])
    expected = (
        F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        + F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs), reduction="none").sum(-1)
    ).mean()
    torch.testing.assert_close(losses.bce(h, e, y, neg), expected)


def test_gbce_beta_formula():
    # with every item sampled (alpha = 1) beta is 1 whatever t
    assert losses.gbce_beta(20, 21, t=0.75) == 1.0
    # t = 0 gives beta = 1 (plain BCE); t = 1 gives beta = alpha
    assert abs(losses.gbce_beta(10, 1001, t=0.0) - 1.0) < 1e-12
    assert abs(losses.gbce_beta(10, 1001, t=1.0) - 10 / 1000) < 1e-12


def test_losses_have_gradients():
    h, e, y = setup()
    h.requires_grad_(True)
    losses.full_softmax(h, e, y).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_softmax_equals_full_in_value_and_gradient(chunk):
    h, e, y = setup(P=13, D=8, n_rows=31)
    h1, e1 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    h2, e2 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    full = losses.full_softmax(h1, e1, y)
    full.backward()
    fused = losses.chunked_full_softmax(h2, e2, y, chunk=chunk, matmul_dtype=torch.float32)
    fused.backward()
    torch.testing.assert_close(fused, full)
    torch.testing.assert_close(h2.grad, h1.grad)
    torch.testing.assert_close(e2.grad, e1.grad)


def test_chunked_softmax_in_bf16_stays_close():
    h, e, y = setup(P=50, D=16, n_rows=200)
    fused = losses.chunked_full_softmax(h, e, y, chunk=16, matmul_dtype=torch.bfloat16)
    assert abs(float(fused) - float(losses.full_softmax(h, e, y))) < 0.05


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_chunked_softmax_label_smoothing_matches_torch_over_real_items(eps):
    h, e, y = setup(P=9, D=8, n_rows=17)
    h1, e1 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    h2, e2 = h.clone().requires_grad_(True), e.clone().requires_grad_(True)
    # reference: smoothing over the real items only (column 0 is padding and never a class)
    ref = F.cross_entropy(h1 @ e1[1:].T, y - 1, label_smoothing=eps)
    ref.backward()
    fused = losses.chunked_full_softmax(h2, e2, y, chunk=4, matmul_dtype=torch.float32, smoothing=eps)
    fused.backward()
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(h2.grad, h1.grad)
    torch.testing.assert_close(e2.grad, e1.grad)


# ---- repeat-aware mixture ------------------------------------------------------------------------------


def test_chunked_parts_match_autograd_and_mixture_matches_brute_force():
    """The chunked log-partition's gradients equal plain autograd's, and the mixture loss equals a
    cross-entropy over the catalogue scores with every history slot's mass added to its item."""
    h, e, y = setup(P=5, D=8, n_rows=13)
    g = torch.Generator().manual_seed(1)
    copy = torch.randn(5, 4, generator=g)
    copy[1, 2:] = losses.REPEAT_MASK  # invisible slots
    items = torch.randint(1, 13, (5, 4), generator=g)
    items[0, 1] = y[0]  # a repeated target
    items[0, 3] = y[0]  # twice

    h1, e1 = h.clone().requires_grad_(), e.clone().requires_grad_()
    lse, tgt = losses.chunked_log_partition(h1, e1, y, chunk=2, matmul_dtype=torch.float32)
    loss = losses.mixture_cross_entropy(lse, tgt, copy, items, y)
    loss.backward()

    h2, e2 = h.clone().requires_grad_(), e.clone().requires_grad_()
    logits = h2 @ e2.T
    logits[:, 0] = -math.inf
    visible = copy > losses.REPEAT_MASK / 2
    mass = torch.zeros_like(logits).scatter_add(1, items, torch.exp(copy) * visible)
    mixed = torch.logaddexp(logits, torch.log(mass))
    expected = F.cross_entropy(mixed, y)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-5)


def test_mixture_without_visible_slots_is_the_plain_cross_entropy():
    h, e, y = setup()
    lse, tgt = losses.chunked_log_partition(h, e, y, chunk=4, matmul_dtype=torch.float32)
    copy = torch.full((len(y), 3), losses.REPEAT_MASK)
    mixed = losses.mixture_cross_entropy(lse, tgt, copy, torch.ones(len(y), 3, dtype=torch.long), y)
    torch.testing.assert_close(mixed, losses.full_softmax(h, e, y), rtol=1e-5, atol=1e-5)
