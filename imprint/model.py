"""The inference half of an imprinted classifier as a plain ``nn.Module`` (what ``to_torch`` returns)."""
from __future__ import annotations

from torch import Tensor, nn

from imprint.stages.aggregation import Aggregation
from imprint.stages.metric import METRICS, squared_norms
from imprint.stages.norm import Norm


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
        self.register_buffer("proxy_sq_norms", squared_norms(proxies).to(proxies.dtype))

    def proxy_scores(self, embeddings: Tensor) -> Tensor:
        """(n, n_proxies) scores of normalised queries against every proxy."""
        return self._score(self.norm_inf(embeddings.to(self.proxies.dtype)), self.proxies, self.proxy_sq_norms)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.aggregation(self.proxy_scores(embeddings))
