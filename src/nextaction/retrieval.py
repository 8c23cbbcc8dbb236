"""Top-k retrieval over large catalogues: exact in chunks, or approximate with a FAISS index.

A next-item score is one dot product, ``output_states(h) · output_embeddings()[i]`` (see model.py), so the
top-k of a catalogue is maximum-inner-product search (MIPS) over the item vectors.

* :class:`ExactIndex` scores the catalogue in chunks of items and keeps a running top-k, so memory is
  B × chunk, never B × catalogue, and results are exact (ties broken towards the lower index).
* :class:`FaissIndex` (optional extra: ``pip install 'nextaction[ann]'``) is an HNSW graph. HNSW searches by
  L2 distance; MIPS becomes L2 search by the usual augmentation: item ``v`` → ``[v, sqrt(M² − |v|²)]``
  with M the largest item norm, query ``q`` → ``[q, 0]``. Then ``|q' − v'|² = |q|² + M² − 2 q·v``, smallest
  exactly where ``q·v`` is largest. Approximate: measure recall against :class:`ExactIndex`.

Row 0 (padding) is never returned. Shapes: N catalogue rows (n_items + 1), D dims, B queries, k results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nextaction.data.schema import PAD_IDX
from nextaction.errors import InputError

EXACT_CHUNK = 65_536  # items per chunk: B × 64k fp32 scores stay small for any realistic B


@dataclass(frozen=True)
class Hits:
    scores: torch.Tensor  # (B, k) float32, best first
    items: torch.Tensor  # (B, k) long item_idx


class ExactIndex:
    """Exact top-k by chunked matrix products. ``vectors``: (N, D) with row 0 = padding."""

    def __init__(self, vectors: torch.Tensor, *, chunk: int = EXACT_CHUNK) -> None:
        self.vectors = vectors.detach().float().contiguous()
        self.chunk = chunk

    def search(self, queries: torch.Tensor, k: int, *, exclude: list[np.ndarray] | None = None) -> Hits:
        """Top-``k`` items for each of the (B, D) queries; ``exclude[b]`` = item indices barred for row b."""
        q = queries.detach().float()
        B, N = q.shape[0], self.vectors.shape[0]
        k = min(k, N - 1)
        best_s = torch.full((B, k), float("-inf"))
        best_i = torch.zeros((B, k), dtype=torch.long)
        for lo in range(0, N, self.chunk):
            hi = min(N, lo + self.chunk)
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


class FaissIndex:
    """Approximate MIPS with a FAISS HNSW index (see the module docstring for the L2 augmentation)."""

    def __init__(
        self, vectors: torch.Tensor, *, m: int = 32, ef_construction: int = 80, ef_search: int = 64
    ) -> None:
        try:
            import faiss
        except ImportError:
            raise InputError(
                "the approximate index needs FAISS: pip install 'nextaction[ann]' (faiss-cpu)"
            ) from None
        v = vectors.detach().float().numpy()[1:]  # row 0 (padding) is not indexed
        norms = np.einsum("nd,nd->n", v, v)
        extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]
        data = np.ascontiguousarray(np.hstack([v, extra]).astype(np.float32))
        self._faiss = faiss
        self.index = faiss.IndexHNSWFlat(data.shape[1], m)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(data)
        self.ef_search = ef_search
        self.vectors = vectors.detach().float()

    def search(self, queries: torch.Tensor, k: int, *, exclude: list[np.ndarray] | None = None) -> Hits:
        q = queries.detach().float().numpy()
        q = np.ascontiguousarray(np.hstack([q, np.zeros((len(q), 1), np.float32)]))
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
