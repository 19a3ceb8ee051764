"""Score metrics: how a query is compared with a proxy (higher is closer)."""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from imprint.registry import Registry

MetricFn = Callable[[Tensor, Tensor, Tensor], Tensor]
METRICS: Registry[MetricFn] = Registry("metric")


@METRICS.register("dot")
def dot_scores(queries: Tensor, proxies: Tensor, proxy_sq_norms: Tensor) -> Tensor:
    """Inner product <x, w> (cosine similarity when both sides are L2-normalised)."""
    return queries @ proxies.T


@METRICS.register("euclidean")
def neg_sq_euclidean_scores(queries: Tensor, proxies: Tensor, proxy_sq_norms: Tensor) -> Tensor:
    """Negative squared Euclidean distance -||x - w||^2, via one matrix product."""
    scores = queries @ proxies.T
    scores.mul_(2.0).sub_(proxy_sq_norms).sub_((queries * queries).sum(dim=1, keepdim=True))
    return scores.clamp_(max=0.0)


def scores_to_distances(scores: Tensor, metric: str) -> Tensor:
    """Turn scores back into non-negative distances for distance-weighted voting."""
    if metric == "euclidean":
        return (-scores).clamp_min(0.0).sqrt()
    return (1.0 - scores).clamp_min(0.0)  # cosine distance when rows are unit-norm
