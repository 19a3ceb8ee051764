"""Exact similarity search of query blocks against a base set: FAISS's brute force on the CPU (when FAISS is
installed), else a blocked matrix product. Called with the classifier's fixed-shape query blocks, it is
batch-invariant too."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BASE_BLOCK = 1 << 16  # base rows per matrix product on the GPU path
QUERY_BLOCK = 256  # query rows per matrix product when FAISS is not installed


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
