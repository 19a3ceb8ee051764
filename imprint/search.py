"""Exact nearest-proxy search through FAISS (on the GPU when faiss has one), in bounded memory."""
from __future__ import annotations

import numpy as np

FAISS_MIN_PROXIES = 4096  # below this a plain matrix product per chunk is as fast
QUERY_CHUNK = 1 << 16


def nearest_proxies(queries: np.ndarray, proxies: np.ndarray, m: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores and indices of each query's m best proxies, best first (scores as in imprint.stages.metric)."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index = faiss.IndexFlatIP(proxies.shape[1]) if metric == "dot" else faiss.IndexFlatL2(proxies.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(np.ascontiguousarray(proxies, dtype=np.float32))
    scores = np.empty((len(queries), m), dtype=np.float32)
    indices = np.empty((len(queries), m), dtype=np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        scores[start:start + QUERY_CHUNK], indices[start:start + QUERY_CHUNK] = index.search(
            queries[start:start + QUERY_CHUNK], m)
    if metric != "dot":
        np.negative(scores, out=scores)  # squared L2 distance -> negative squared distance
    return scores, indices
