"""The torch module an ONNX export traces: uint8 images in, the classifier's answers out
(``imprint.workflows.export``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ImagesToAnswers(nn.Module):
    """uint8 images -> class scores, probabilities, best class (and unknown score, accepted)."""

    def __init__(self, encoder: nn.Module, preprocessing: dict[str, Any], head: nn.Module, temperature: float,
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
        logits = scores.clamp_min(1e-30).log() if self.log_logits else scores
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        label = scores.argmax(dim=1)
        if self.rejector is None:
            return scores, probabilities, label
        unknown = self.rejector.traceable_score(embeddings, scores, self.head).float()
        return scores, probabilities, label, unknown, unknown <= self.threshold
