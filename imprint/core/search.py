"""Similarity search of query blocks against a base set. Exact: FAISS's brute force on the CPU (when FAISS is
installed), else a blocked matrix product; called with the classifier's fixed-shape query blocks, it is
batch-invariant too. Approximate, for large sets whose every row is a query (``imprint inspect``): candidates
from a search in a few principal directions, ranked again exactly (FAISS's inverted lists, tried first, were
as slow as the exact search on two cores: they scan lists row by row where this is one matrix product)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BASE_BLOCK = 1 << 16  # base rows per matrix product on the GPU path
QUERY_BLOCK = 256  # query rows per matrix product when FAISS is not installed
EXACT_LIMIT = 20_000  # base rows up to which ``nearest_within`` searches exactly
REDUCED_DIMS = 128  # principal directions in which a large set's candidates are searched
CANDIDATES_PER_NEIGHBOUR = 2  # candidates ranked exactly per neighbour asked


def _faiss():
    try:
        import faiss
    except ImportError:  # FAISS is optional: the blocked product below is exact too
        return None
    return faiss


def kth_similarity(queries: Tensor, base: Tensor, k: int) -> Tensor:
    """The k-th largest inner product of every query with the rows of `base` (1 <= k <= len(base))."""
    faiss = _faiss() if queries.device.type == "cpu" else None
    if faiss is not None:
        similarities, _ = faiss.knn(np.ascontiguousarray(queries.float().numpy()),
                                    np.ascontiguousarray(base.float().numpy()), k, metric=faiss.METRIC_INNER_PRODUCT)
        return torch.from_numpy(similarities[:, k - 1].copy())
    best = None
    for start in range(0, len(base), BASE_BLOCK):
        scores = queries @ base[start:start + BASE_BLOCK].T
        best = scores if best is None else torch.cat([best, scores], dim=1)
        best = best.topk(min(k, best.shape[1]), dim=1).values
    return best[:, k - 1]


def nearest(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of the k largest inner products of every query with the rows of `base`, best
    first; memory grows with len(queries) x k, never len(queries) x len(base)."""
    k = min(k, len(base))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    faiss = _faiss()
    if faiss is not None:
        similarities, indices = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
        return similarities, indices.astype(np.int64)
    best_s = np.empty((len(queries), k), dtype=np.float32)
    best_i = np.empty((len(queries), k), dtype=np.int64)
    base_t = torch.from_numpy(base)
    for start in range(0, len(queries), QUERY_BLOCK):
        scores = torch.from_numpy(queries[start:start + QUERY_BLOCK]) @ base_t.T
        top = scores.topk(k, dim=1)
        best_s[start:start + QUERY_BLOCK], best_i[start:start + QUERY_BLOCK] = top.values.numpy(), top.indices.numpy()
    return best_s, best_i


def nearest_within(units: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``nearest(units, units, k)`` for every row of one set, and how it was searched. Up to EXACT_LIMIT rows
    exactly; beyond, candidates by distance in the REDUCED_DIMS principal directions (a tenth of the work of the
    full search for 1280-d embeddings), CANDIDATES_PER_NEIGHBOUR x k of them ranked again by their exact inner
    products: every similarity given is exact, a true neighbour lost among the candidates is replaced by the
    next best found (recall measured in docs/inspect.md)."""
    units = np.ascontiguousarray(units, dtype=np.float32)
    n, dim = units.shape
    if n <= EXACT_LIMIT or dim <= REDUCED_DIMS:
        return (*nearest(units, units, k), "exact")
    centred = units - units.mean(axis=0)
    directions = np.linalg.eigh(centred.T.astype(np.float64) @ centred)[1][:, -REDUCED_DIMS:].astype(np.float32)
    reduced = centred @ directions
    squares = np.einsum("ij,ij->i", reduced, reduced)[:, None]
    # the largest 2 q.b - |b|^2 is the nearest b to q: an inner-product search ranks by distance
    _, candidates = nearest(np.hstack([2 * reduced, np.ones_like(squares)]), np.hstack([reduced, -squares]),
                            min(n, CANDIDATES_PER_NEIGHBOUR * k))
    k = min(k, n)
    similarities, indices = np.empty((n, k), dtype=np.float32), np.empty((n, k), dtype=np.int64)
    for start in range(0, n, QUERY_BLOCK):
        rows = candidates[start:start + QUERY_BLOCK]
        exact = np.einsum("nd,nkd->nk", units[start:start + QUERY_BLOCK], units[rows])
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        similarities[start:start + QUERY_BLOCK] = np.take_along_axis(exact, best, axis=1)
        indices[start:start + QUERY_BLOCK] = np.take_along_axis(rows, best, axis=1)
    return similarities, indices, f"approximate: candidates from {REDUCED_DIMS} principal directions, exact re-ranking"
