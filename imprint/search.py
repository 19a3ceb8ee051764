"""Exact nearest-proxy search through FAISS (on the GPU when faiss has one), in bounded memory."""
from __future__ import annotations

import numpy as np

FAISS_MIN_PROXIES = 4096  # below this a plain matrix product per chunk is as fast
QUERY_CHUNK = 1 << 16


class ProxyIndex:
    """Exact search over the proxies, chunk by chunk of queries. On the CPU it is FAISS's brute-force
    knn reading the proxies in place (an index would copy them); with GPUs, a GPU index built once."""

    def __init__(self, proxies: np.ndarray, metric: str) -> None:
        import faiss

        self.metric = metric
        self.proxies = np.ascontiguousarray(proxies, dtype=np.float32)
        self.faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "dot" else faiss.METRIC_L2
        self.gpu_index = None
        if faiss.get_num_gpus() > 0:
            flat = faiss.IndexFlatIP(proxies.shape[1]) if metric == "dot" else faiss.IndexFlatL2(proxies.shape[1])
            self.gpu_index = faiss.index_cpu_to_all_gpus(flat)
            self.gpu_index.add(self.proxies)

    def search(self, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and indices of each query's m best proxies, best first (scores as in imprint.stages.metric)."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.empty((len(queries), m), dtype=np.float32)
        indices = np.empty((len(queries), m), dtype=np.int64)
        for start in range(0, len(queries), QUERY_CHUNK):
            chunk = queries[start:start + QUERY_CHUNK]
            found = self.gpu_index.search(chunk, m) if self.gpu_index is not None else \
                faiss.knn(chunk, self.proxies, m, metric=self.faiss_metric)
            scores[start:start + len(chunk)], indices[start:start + len(chunk)] = found
        if self.metric != "dot":
            np.negative(scores, out=scores)  # squared L2 distance -> negative squared distance
        return scores, indices

