"""Top-k retrieval over large catalogues: exact in chunks, or approximate with a FAISS index.

A next-item score is one dot product, ``output_states(h) · output_embeddings()[i]`` (see model.py), so the
top-k of a catalogue is maximum-inner-product search (MIPS) over the item vectors.

* :class:`ExactIndex` scores the catalogue in chunks of items and keeps a running top-k, so memory is
  B × chunk, never B × catalogue, and results are exact (ties broken towards the lower index).
* :class:`FaissIndex` (optional extra: ``pip install 'nextaction[ann]'``) is an HNSW graph searched by inner
  product directly (FAISS's ``METRIC_INNER_PRODUCT``). Measured on trained item vectors this beats the usual
  MIPS→L2 augmentation (an extra dimension ``sqrt(M² − |v|²)``), which squeezes the items onto a sphere where
  the graph's neighbourhoods stop matching the query's (recall@10 0.31 against 0.88 at the same efSearch;
  BENCHMARKS.md "Scale"). Approximate: measure recall against :class:`ExactIndex`.

Row 0 (padding) is never returned. Shapes: N catalogue rows (n_items + 1), D dims, B queries, k results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nextaction.data.schema import PAD_IDX
from nextaction.errors import InputError

EXACT_CHUNK = 65_536  # items per chunk at least; more while B × chunk scores stay within SCORE_BUDGET
SCORE_BUDGET = 2**24  # float32 scores held at once (64 MB)


@dataclass(frozen=True)
class Hits:
    scores: torch.Tensor  # (B, k) float32, best first
    items: torch.Tensor  # (B, k) long item_idx


class ExactIndex:
    """Exact top-k by chunked matrix products. ``vectors``: (N, D) with row 0 = padding."""

    def __init__(self, vectors: torch.Tensor, *, chunk: int | None = None, bf16: bool | None = None) -> None:
        self.vectors = vectors.detach().float().contiguous()
        self.chunk = chunk  # None: as large as SCORE_BUDGET allows for the batch (one product for one query)
        if bf16 is None:
            from nextaction.device import bf16_supported

            bf16 = bf16_supported() and chunk is None
        # a bf16 copy halves the bytes a query must read (the search is memory-bound); see _search_bf16
        self.vectors_bf16 = self.vectors.bfloat16() if bf16 else None
        self.max_norm = float(self.vectors.norm(dim=1).max()) if len(self.vectors) else 0.0

    def search(self, queries: torch.Tensor, k: int, *, exclude: list[np.ndarray] | None = None) -> Hits:
        """Top-``k`` items for each of the (B, D) queries; ``exclude[b]`` = item indices barred for row b."""
        q = queries.detach().float()
        B, N = q.shape[0], self.vectors.shape[0]
        k = min(k, N - 1)
        chunk = self.chunk or max(EXACT_CHUNK, SCORE_BUDGET // max(1, B))
        if self.vectors_bf16 is not None and chunk >= N:
            return self._search_bf16(q, k, exclude)
        best_s = torch.full((B, k), float("-inf"))
        best_i = torch.zeros((B, k), dtype=torch.long)
        for lo in range(0, N, chunk):
            hi = min(N, lo + chunk)
            s = q @ self.vectors[lo:hi].T  # (B, C)
            if lo == 0:
                s[:, PAD_IDX] = float("-inf")
            if exclude is not None:
                for b, items in enumerate(exclude):
                    inside = items[(items >= lo) & (items < hi)]
                    if len(inside):
                        s[b, torch.from_numpy(inside - lo)] = float("-inf")
            top = torch.topk(s, min(k, hi - lo), dim=1)
            cand_s = torch.cat([best_s, top.values], dim=1)
            cand_i = torch.cat([best_i, top.indices + lo], dim=1)
            # stable: on equal scores the earlier (lower-index) candidate wins, as a full topk would
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        return Hits(best_s, best_i)

    def _search_bf16(self, q: torch.Tensor, k: int, exclude: list[np.ndarray] | None) -> Hits:
        """Exact top-k in two passes: bf16 scores of the whole catalogue, then fp32 scores of every item that
        could still be in the top-k.

        bf16 keeps 8 significant bits, so with fp32 accumulation a bf16 score is within
        E = 2^-6 · |q| · max|v| of the true one (rounding q, v and the result: < (2^-7 + 2^-8)·|q||v|).
        A true top-k item then scores ≥ (k-th bf16 score) − 2E in bf16; every such item is rescored in
        fp32, so the answer equals the fp32 search (ties aside), never an approximation.
        """
        qb = q.bfloat16()
        s = (torch.mv(self.vectors_bf16, qb[0])[None] if len(q) == 1 else qb @ self.vectors_bf16.T).float()
        s[:, PAD_IDX] = float("-inf")
        if exclude is not None:
            for b, items in enumerate(exclude):
                if len(items):
                    s[b, torch.from_numpy(np.asarray(items, np.int64))] = float("-inf")
        kth = torch.topk(s, k, dim=1).values[:, -1]  # (B,)
        margin = 2 * 2.0**-6 * q.norm(dim=1) * self.max_norm  # (B,)
        scores, items = [], []
        for b in range(len(q)):
            keep = (s[b] >= kth[b] - margin[b]) & torch.isfinite(s[b])  # never excluded items or padding
            cand = torch.nonzero(keep)[
                :, 0
            ]  # ascending, so a stable sort breaks ties towards the lower index
            exact = self.vectors[cand] @ q[b]
            order = torch.sort(exact, descending=True, stable=True).indices[:k]
            short = k - len(order)  # fewer candidates than k (almost all excluded): pad like the chunked path
            scores.append(torch.cat([exact[order], torch.full((short,), float("-inf"))]))
            items.append(torch.cat([cand[order], torch.zeros(short, dtype=torch.long)]))
        return Hits(torch.stack(scores), torch.stack(items))


class FaissIndex:
    """Approximate MIPS with a FAISS HNSW index over the item vectors (row 0, padding, is left out)."""

    def __init__(
        self, vectors: torch.Tensor, *, m: int = 32, ef_construction: int = 80, ef_search: int = 128
    ) -> None:
        try:
            import faiss
        except ImportError:
            raise InputError(
                "the approximate index needs FAISS: pip install 'nextaction[ann]' (faiss-cpu)"
            ) from None
        data = np.ascontiguousarray(vectors.detach().float().numpy()[1:])
        self.index = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(data)
        self.ef_search = ef_search
        self.vectors = vectors.detach().float()

    def search(self, queries: torch.Tensor, k: int, *, exclude: list[np.ndarray] | None = None) -> Hits:
        q = np.ascontiguousarray(queries.detach().float().numpy())
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        want = min(k + extra, self.index.ntotal)
        self.index.hnsw.efSearch = max(self.ef_search, want)
        _, idx = self.index.search(q, want)
        items = torch.from_numpy(idx + 1)  # back to item_idx (row 0 was left out); -1 (none) becomes 0
        # exact scores of the candidates, so callers see the same numbers as ExactIndex
        scores = torch.einsum("bd,bkd->bk", queries.float(), self.vectors[items.clamp(min=0)])
        scores = scores.masked_fill(items <= PAD_IDX, float("-inf"))
        if exclude is not None:
            for b, barred in enumerate(exclude):
                if len(barred):
                    scores[b, torch.isin(items[b], torch.from_numpy(barred))] = float("-inf")
        top = torch.topk(scores, min(k, want), dim=1)
        return Hits(top.values, items.gather(1, top.indices))


def recall_at_k(approx: Hits, exact: Hits) -> float:
    """Mean share of the exact top-k found by the approximate search."""
    hits = [
        len(set(a.tolist()) & set(e.tolist())) / max(1, len(e))
        for a, e in zip(approx.items, exact.items, strict=True)
    ]
    return float(np.mean(hits))
