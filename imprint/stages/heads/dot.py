"""The inner product head (Qi et al., CVPR 2018: cosine imprinting with L2-normalised proxies and queries)."""
from __future__ import annotations

import torch
from torch import Tensor

from imprint.stages.heads.base import Metric


class DotMetric(Metric):
    """Inner product <x, w> (cosine similarity when both sides are L2-normalised)."""

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.mm(queries, self.proxies.T, out=out) if out is not None else queries @ self.proxies.T

