"""Exact similarity search of query blocks against a base set: FAISS's brute force on the CPU (when FAISS is
installed), else a blocked matrix product. Called with the classifier's fixed-shape query blocks, it is
batch-invariant too."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BASE_BLOCK = 1 << 16  # base rows per matrix product on the GPU path


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
