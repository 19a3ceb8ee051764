"""The inference half of an imprinted classifier as plain ``nn.Module``s: ``ImprintedModel`` (embeddings to class
scores: what ``to_torch`` returns) and ``ImagesToAnswers`` (uint8 images to every answer: what an ONNX export
traces)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from imprint.estimator.calibration import as_logits
from imprint.estimator.text_blend import TextBlend
from imprint.stages.aggregation import Aggregation
from imprint.stages.heads.base import Metric
from imprint.stages.norm import Norm


class ImprintedModel(nn.Module):
    """norm_inf -> scores against every proxy (the metric) -> per-class aggregation [+ zero-shot text term].

    ``forward(embeddings)`` returns (n, n_classes) class scores, identical to
    ``ImprintClassifier.decision_function``; ``classes`` lists the class of each column. Embed it in an
    app after your encoder.
    """

    def __init__(self, norm_inf: Norm, metric: Metric, aggregation: Aggregation, classes: list,
                 text: TextBlend | None = None) -> None:
        super().__init__()
        self.norm_inf = norm_inf
        self.metric = metric
        self.aggregation = aggregation
        self.text = text
        self.classes = list(classes)
        self.temperature = 1.0
        self.log_logits = False

    @property
    def proxies(self) -> Tensor:
        return self.metric.proxies

    def proxy_scores(self, embeddings: Tensor, out: Tensor | None = None) -> Tensor:
        """(n, n_proxies) scores of normalised queries against every proxy (written into `out` if given)."""
        return self.metric(self.norm_inf(embeddings.to(self.metric.proxies.dtype)), out=out)

    def ranking_scores(self, embeddings: Tensor, out: Tensor | None = None) -> Tensor:
        """Proxy scores up to a per-query constant where the aggregation allows it (enough for the argmax)."""
        queries = self.norm_inf(embeddings.to(self.metric.proxies.dtype))
        return self.metric.ranking(queries, out=out) if self.aggregation.shift_invariant else \
            self.metric(queries, out=out)

    def head_scores(self, embeddings: Tensor, out: Tensor | None = None) -> Tensor:
        """(n, n_classes) class scores of the head alone (without the zero-shot text term)."""
        return self.aggregation(self.proxy_scores(embeddings, out=out))

    def forward(self, embeddings: Tensor, out: Tensor | None = None) -> Tensor:
        """(n, n_classes) class scores; `out` is an optional (n, n_proxies) buffer for the proxy scores."""
        scores = self.head_scores(embeddings, out=out)
        return scores if self.text is None else scores + self.text(embeddings)

    def probabilities(self, scores: Tensor) -> Tensor:
        """Calibrated class probabilities from class scores, as ``ImprintClassifier.predict_proba`` gives them
        (the classifier sets `temperature`, and `log_logits` for heads whose scores are sums of kernels)."""
        return torch.softmax(as_logits(scores, "log" if self.log_logits else "scores") / self.temperature, dim=1)


class ImagesToAnswers(nn.Module):
    """uint8 images (N x H x W x 3) -> class scores, probabilities, best class (and unknown score, accepted): the
    encoder's normalisation, the encoder, an ``ImprintedModel`` and, where the classifier rejects, its rejector."""

    def __init__(self, encoder: nn.Module, preprocessing: dict[str, Any], head: ImprintedModel, temperature: float,
                 log_logits: bool, rejector: Any = None, threshold: float | None = None) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature, self.log_logits = float(temperature), bool(log_logits)
        self.rejector, self.threshold = rejector, threshold

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        pixels = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        embeddings = self.encoder(pixels).float()
        scores = self.head(embeddings)
        logits = as_logits(scores, "log" if self.log_logits else "scores")
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        label = scores.argmax(dim=1)
        if self.rejector is None:
            return scores, probabilities, label
        unknown = self.rejector.traceable_score(embeddings, scores, self.head).float()
        return scores, probabilities, label, unknown, unknown <= self.threshold
