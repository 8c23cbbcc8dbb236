"""Next-item losses: pure functions of user states, item embeddings and targets.

Shapes: P flattened real positions (padding already removed), D dim, I = n_items + 1 embedding rows
(row 0 is padding), S sampled negatives.

- ``full_softmax``: cross-entropy over the whole catalogue. Best accuracy while P x I logits fit in memory.
- ``sampled_softmax``: softmax over the target, in-batch targets and S shared sampled negatives, each logit
  corrected by -log q(item) (logQ) so the sampled objective estimates the full one; for large catalogues.
- ``bce`` / ``gbce``: one sampled negative per positive (SASRec's original loss) and its calibrated
  generalisation gBCE (Petrov & Macdonald, 2023), which sharpens the positive's probability by beta.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def full_softmax(states: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """states: (P, D); item_emb: (I, D); targets: (P,) long in 1..I-1. Mean cross-entropy."""
    logits = states @ item_emb.T  # (P, I)
    logits[:, 0] = float("-inf")  # padding is never a target
    return F.cross_entropy(logits.float(), targets)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Full-catalogue cross-entropy computed chunk by chunk, never holding the (P, I) logits.

    Forward keeps only the log-sum-exp per row; backward recomputes each chunk's logits. The two big
    matmuls run in ``matmul_dtype`` (bf16 on CPUs with AMX/AVX-512-BF16: ~10x the fp32 rate) while the
    softmax arithmetic and every accumulation stay in fp32. Small chunks stay in cache and reuse memory,
    which is what makes the memory-bound softmax cheap on a CPU. Rows are padded to a whole number of
    chunks so every matmul has one shape: oneDNN compiles a kernel per shape, and a ragged last chunk
    would compile a new one for almost every batch.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        states: torch.Tensor,
        item_emb: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        matmul_dtype: torch.dtype,
        smoothing: float,
    ) -> torch.Tensor:
        P = states.shape[0]
        pad = -P % chunk
        h = F.pad(states.detach(), (0, 0, 0, pad)).to(matmul_dtype)  # (P + pad, D)
        y = F.pad(targets, (0, pad), value=1)  # padded rows score item 1; their weight is 0 below
        e = item_emb.detach().to(matmul_dtype)
        lse = torch.empty(P + pad, dtype=torch.float32, device=h.device)
        target_logit = torch.empty(P + pad, dtype=torch.float32, device=h.device)
        for s in range(0, P + pad, chunk):
            logits = (h[s : s + chunk] @ e.T).float()  # (C, I)
            logits[:, 0] = float("-inf")
            lse[s : s + chunk] = torch.logsumexp(logits, dim=1)
            target_logit[s : s + chunk] = logits.gather(1, y[s : s + chunk, None])[:, 0]
        ctx.save_for_backward(h, e, y, lse)
        ctx.chunk, ctx.n_rows, ctx.smoothing = chunk, P, smoothing
        loss = lse[:P] - target_logit[:P]
        if smoothing:
            # Label smoothing spreads mass `smoothing` uniformly over the real items (never the padding row):
            # its cross-entropy term is lse - mean logit, and the mean logit is h . mean(e[1:]).
            mean_logit = h[:P].float() @ e[1:].float().mean(0)
            loss = (1 - smoothing) * loss + smoothing * (lse[:P] - mean_logit)
        return loss.mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h, e, y, lse = ctx.saved_tensors
        chunk, P = ctx.chunk, ctx.n_rows
        weight = torch.zeros(h.shape[0], 1, device=h.device)
        weight[:P] = grad.float() / P  # mean over real rows; padded rows contribute nothing
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        grad_e = torch.zeros(e.shape, dtype=torch.float32, device=e.device)
        for s in range(0, h.shape[0], chunk):
            hc = h[s : s + chunk]
            logits = (hc @ e.T).float()
            logits[:, 0] = float("-inf")
            # d loss / d logits = (softmax - onehot) * weight
            p = torch.exp_(logits.sub_(lse[s : s + chunk, None]))
            p[torch.arange(len(hc), device=hc.device), y[s : s + chunk]] -= 1.0 - ctx.smoothing
            p = p.mul_(weight[s : s + chunk]).to(h.dtype)
            grad_h[s : s + chunk] = (p @ e).float()
            grad_e += (p.T @ hc).float()
        if ctx.smoothing:
            # The uniform part of the target, -smoothing / N on every real item, handled in closed form.
            n_real = e.shape[0] - 1
            e_mean = e[1:].float().mean(0)  # (D,)
            grad_h -= ctx.smoothing * weight * e_mean
            grad_e[1:] -= ctx.smoothing / n_real * (weight * h.float()).sum(0)
        return grad_h[:P], grad_e, None, None, None, None


def chunked_full_softmax(
    states: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk: int = 256,
    matmul_dtype: torch.dtype = torch.bfloat16,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Same value as :func:`full_softmax` (up to matmul precision) in a fraction of the memory and time.

    ``smoothing`` > 0 adds label smoothing over the real items (padding excluded).
    """
    out = _ChunkedSoftmaxCE.apply(states, item_emb, targets, chunk, matmul_dtype, smoothing)
    return out  # type: ignore[no-any-return]


def sampled_softmax(
    states: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
) -> torch.Tensor:
    """Softmax over [target | S shared negatives], with logQ correction.

    negatives: (S,) long item indices drawn from q; log_q: (I,) log sampling probability of every item.
    A negative that equals the row's target is masked out (it is not a negative for that row).
    """
    return sampled_softmax_rows(states, item_emb[targets], item_emb[negatives], targets, negatives, log_q)


def sampled_softmax_rows(
    states: torch.Tensor,
    target_rows: torch.Tensor,
    negative_rows: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
) -> torch.Tensor:
    """:func:`sampled_softmax` given the looked-up item rows: target_rows (P, D), negative_rows (S, D).

    Training passes rows from a sparse embedding lookup, so the item table's gradient touches only them.
    """
    pos = (states * target_rows).sum(-1, keepdim=True) - log_q[targets][:, None]  # (P, 1)
    neg = states @ negative_rows.T - log_q[negatives][None, :]  # (P, S)
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1).float()
    return F.cross_entropy(logits, torch.zeros_like(targets))


def gbce(
    states: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    *,
    beta: float = 1.0,
) -> torch.Tensor:
    """Generalised binary cross-entropy with negatives (P, S) sampled uniformly from I - 1 items.

    beta = 1 is plain BCE. Otherwise the positive logit s becomes log(sigmoid(s)^beta) as in gSASRec, with
    beta = alpha * (t * (1 - 1/alpha) + 1/alpha), t = calibration strength, alpha = S / (I - 1).
    """
    pos = (states * item_emb[targets]).sum(-1)  # (P,)
    neg = torch.einsum("pd,psd->ps", states, item_emb[negatives])  # (P, S)
    pos_loss = -beta * F.logsigmoid(pos.float())
    neg_loss = -F.logsigmoid(-neg.float()).sum(-1)
    return (pos_loss + neg_loss).mean()


def gbce_beta(n_negatives: int, n_items: int, t: float = 0.75) -> float:
    """gSASRec's beta for S negatives out of n_items and calibration t in [0, 1]."""
    alpha = n_negatives / max(n_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def bce(
    states: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """SASRec's original loss: one (or S) uniformly sampled negatives per positive, binary cross-entropy."""
    return gbce(states, item_emb, targets, negatives, beta=1.0)


def uniform_log_q(n_items: int) -> torch.Tensor:
    """log q for uniform sampling over real items 1..n_items; row 0 (padding) is -inf."""
    lq = torch.full((n_items + 1,), -math.log(n_items))
    lq[0] = float("-inf")
    return lq


def multilabel_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of independent per-behaviour labels.

    logits, labels: (..., NB). Each behaviour is its own yes/no question (an item can be viewed *and*
    bought), so no softmax across behaviours.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
