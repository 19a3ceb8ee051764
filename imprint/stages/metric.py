"""Score metrics: how a query is compared with a proxy (higher is closer)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from imprint.registry import Registry

SQ_NORM_BLOCK = 8192  # rows per block for squared norms (32 MiB of float64 at d=512)

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


def squared_norms(X: Tensor) -> Tensor:
    """Row squared norms accumulated in float64, block by block: never a float64 copy of all of X."""
    return torch.cat([block.double().square_().sum(1) for block in X.split(SQ_NORM_BLOCK)])


def scores_to_distances(scores: Tensor, metric: str) -> Tensor:
    """Turn scores back into non-negative distances for distance-weighted voting."""
    if metric == "euclidean":
        return (-scores).clamp_min(0.0).sqrt()
    return (1.0 - scores).clamp_min(0.0)  # cosine distance when rows are unit-norm
