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


class _ChunkedLogSumExp(torch.autograd.Function):
    """Per row: the log-sum-exp of the full-catalogue logits and the target's logit, computed chunk by chunk,
    never holding the (P, I) logits.

    Forward keeps only the log-sum-exp per row; backward recomputes each chunk's logits. The two big
    matmuls run in ``matmul_dtype`` (bf16 on CPUs with AMX/AVX-512-BF16: ~10x the fp32 rate) while the
    softmax arithmetic and every accumulation stay in fp32. Small chunks stay in cache and reuse memory,
    which is what makes the memory-bound softmax cheap on a CPU. Rows are padded to a whole number of
    chunks so every matmul has one shape: oneDNN compiles a kernel per shape, and a ragged last chunk
    would compile a new one for almost every batch.

    Returning the two terms (rather than the cross-entropy) lets a caller mix other scores into the
    normaliser: the repeat-aware loss adds the history's copy scores (see :func:`mixture_cross_entropy`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        states: torch.Tensor,
        item_emb: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        matmul_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        P = states.shape[0]
        pad = -P % chunk
        h = F.pad(states.detach(), (0, 0, 0, pad)).to(matmul_dtype)  # (P + pad, D)
        y = F.pad(targets, (0, pad), value=1)  # padded rows score item 1; their gradient weight is 0
        e = item_emb.detach().to(matmul_dtype)
        lse = torch.empty(P + pad, dtype=torch.float32, device=h.device)
        target_logit = torch.empty(P + pad, dtype=torch.float32, device=h.device)
        for s in range(0, P + pad, chunk):
            logits = (h[s : s + chunk] @ e.T).float()  # (C, I)
            logits[:, 0] = float("-inf")
            lse[s : s + chunk] = torch.logsumexp(logits, dim=1)
            target_logit[s : s + chunk] = logits.gather(1, y[s : s + chunk, None])[:, 0]
        ctx.save_for_backward(h, e, y, lse)
        ctx.chunk, ctx.n_rows = chunk, P
        return lse[:P], target_logit[:P]

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_lse: torch.Tensor, grad_target: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        h, e, y, lse = ctx.saved_tensors
        chunk, P = ctx.chunk, ctx.n_rows
        g_lse = torch.zeros(h.shape[0], 1, device=h.device)
        g_tgt = torch.zeros(h.shape[0], device=h.device)
        g_lse[:P, 0] = grad_lse.float()
        g_tgt[:P] = grad_target.float()  # padded rows keep weight 0: they contribute nothing
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        grad_e = torch.zeros(e.shape, dtype=torch.float32, device=e.device)
        for s in range(0, h.shape[0], chunk):
            hc = h[s : s + chunk]
            logits = (hc @ e.T).float()
            logits[:, 0] = float("-inf")
            # d/d logits = g_lse * softmax + g_target * onehot(target)
            p = torch.exp_(logits.sub_(lse[s : s + chunk, None])).mul_(g_lse[s : s + chunk])
            p[torch.arange(len(hc), device=hc.device), y[s : s + chunk]] += g_tgt[s : s + chunk]
            p = p.to(h.dtype)
            grad_h[s : s + chunk] = (p @ e).float()
            grad_e += (p.T @ hc).float()
        return grad_h[:P], grad_e, None, None, None


def chunked_log_partition(
    states: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk: int = 256,
    matmul_dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) log-sum-exp over the catalogue (padding row excluded) and (P,) target logit, differentiable,
    in a fraction of the memory of the (P, I) logits."""
    out = _ChunkedLogSumExp.apply(states, item_emb, targets, chunk, matmul_dtype)
    return out  # type: ignore[no-any-return]


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

    ``smoothing`` > 0 adds label smoothing over the real items (padding excluded): its cross-entropy term
    is lse - mean logit, and the mean logit is h . mean(e[1:]).
    """
    lse, target_logit = chunked_log_partition(
        states, item_emb, targets, chunk=chunk, matmul_dtype=matmul_dtype
    )
    loss = lse - target_logit
    if smoothing:
        mean_logit = states.float() @ item_emb[1:].float().mean(0)
        loss = (1 - smoothing) * loss + smoothing * (lse - mean_logit)
    return loss.mean()


REPEAT_MASK = -1e4  # copy score of an invisible history slot: finite, so an all-masked row has a gradient


def mixture_cross_entropy(
    lse: torch.Tensor,
    target_logit: torch.Tensor,
    copy_scores: torch.Tensor,
    copy_items: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of the repeat/explore mixture P(i) ∝ exp(h·e_i) + Σ_{s: item_s = i} exp(r_s).

    lse, target_logit: (P,) the catalogue's log-sum-exp and the target's logit (any of the losses' parts);
    copy_scores: (P, L) the copy score r_s of every history slot (REPEAT_MASK where invisible);
    copy_items: (P, L) their item_idx; targets: (P,). The normaliser adds the history's mass to the
    catalogue's; the target's mass adds every slot holding the target.
    """
    return mixture_nll(lse, target_logit, copy_scores, copy_items, targets).mean()


def mixture_nll(
    lse: torch.Tensor,
    target_logit: torch.Tensor,
    copy_scores: torch.Tensor,
    copy_items: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """(…,) cross-entropy of each position under the repeat/explore mixture (see mixture_cross_entropy);
    the leading dimensions are free, the last one of ``copy_scores``/``copy_items`` is the history's L."""
    log_z = torch.logaddexp(lse, torch.logsumexp(copy_scores.float(), dim=-1))
    own = copy_scores.float().masked_fill(copy_items != targets[..., None], REPEAT_MASK)
    return log_z - torch.logaddexp(target_logit, torch.logsumexp(own, dim=-1))


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
    lse, target_logit = sampled_log_partition(states, target_rows, negative_rows, targets, negatives, log_q)
    return (lse - target_logit).mean()


def sampled_log_partition(
    states: torch.Tensor,
    target_rows: torch.Tensor,
    negative_rows: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) log-sum-exp over [target | negatives] (logQ-corrected: it estimates the catalogue's) and (P,)
    the target's corrected logit: the parts of :func:`sampled_softmax_rows`."""
    pos = (states * target_rows).sum(-1, keepdim=True) - log_q[targets][:, None]  # (P, 1)
    neg = states @ negative_rows.T - log_q[negatives][None, :]  # (P, S)
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1).float()
    return torch.logsumexp(logits, dim=1), logits[:, 0]


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
