"""The inference half of an imprinted classifier as a plain ``nn.Module`` (what ``to_torch`` returns)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from imprint.stages.aggregation import Aggregation
from imprint.stages.metric import METRICS
from imprint.stages.norm import Norm

NORM_BLOCK = 8192  # proxies per block when computing their squared norms (32 MiB of float64 at d=512)


class ImprintedModel(nn.Module):
    """norm_inf -> scores against every proxy (one matrix product) -> per-class aggregation.

    ``forward(embeddings)`` returns (n, n_classes) class scores, identical to
    ``ImprintClassifier.decision_function``. Embed it in an app after your encoder.
    """

    def __init__(self, proxies: Tensor, norm_inf: Norm, metric: str, aggregation: Aggregation) -> None:
        super().__init__()
        self.norm_inf = norm_inf
        self.aggregation = aggregation
        self.metric = metric
        self._score = METRICS.get(metric)
        self.register_buffer("proxies", proxies)
        # accumulated in float64, block by block: never a float64 copy of all proxies
        sq_norms = torch.cat([block.double().square_().sum(1) for block in proxies.split(NORM_BLOCK)])
        self.register_buffer("proxy_sq_norms", sq_norms.to(proxies.dtype))

    def proxy_scores(self, embeddings: Tensor) -> Tensor:
        """(n, n_proxies) scores of normalised queries against every proxy."""
        return self._score(self.norm_inf(embeddings.to(self.proxies.dtype)), self.proxies, self.proxy_sq_norms)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.aggregation(self.proxy_scores(embeddings))
