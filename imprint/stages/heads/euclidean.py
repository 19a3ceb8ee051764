"""The Euclidean head: nearest class mean or proxy by squared distance (SimpleShot, Janson et al.)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from imprint.core.support import squared_norms
from imprint.stages.heads.base import Metric


class EuclideanMetric(Metric):
    """Negative squared Euclidean distance -||x - w||^2, via one matrix product."""

    has_query_term = True

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.register_buffer("sq_norms", None)

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        super().set_proxies(proxies, proxy_counts)
        self.sq_norms = squared_norms(proxies).to(proxies.dtype)

    def ranking(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        if out is not None:
            return torch.addmm(self.sq_norms, queries, self.proxies.T, beta=-1.0, alpha=2.0, out=out)
        return torch.addmm(self.sq_norms, queries, self.proxies.T, beta=-1.0, alpha=2.0)

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        scores = self.ranking(queries, out=out)
        return scores.sub_((queries * queries).sum(dim=1, keepdim=True)).clamp_(max=0.0)

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-scores).clamp_min(0.0).sqrt()

