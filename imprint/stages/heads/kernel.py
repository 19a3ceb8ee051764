"""Tip-Adapter's cache affinity (Zhang et al., ECCV 2022): with every support sample a proxy and sum aggregation,
its training-free cache logits."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from imprint.core.settings import AUTO
from imprint.stages.heads.base import Metric


class KernelMetric(Metric):
    """Tip-Adapter's cache affinity exp(-beta (1 - <x, w>)) (use L2-normalised queries and proxies)."""

    def __init__(self, beta: float | str = 5.5, **options: Any) -> None:
        super().__init__()
        if beta == AUTO:
            raise ValueError("beta='auto' is resolved by the classifier before the stage is built")
        self.beta = float(beta)

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        scores = torch.mm(queries, self.proxies.T, out=out) if out is not None else queries @ self.proxies.T
        return scores.sub_(1.0).mul_(self.beta).exp_()

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """Every beta from one matrix of cosines, one beta's scores at a time (there is a column per support
        sample, so holding them all would take len(values) times the memory)."""
        if name != "beta":
            return None
        cosines = queries @ self.proxies.T - 1.0
        return ((cosines * float(value)).exp_() for value in values)

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-torch.log(scores.clamp_min(1e-30)) / self.beta).clamp_min(0.0)

    def options(self) -> dict[str, Any]:
        return {"beta": self.beta}

