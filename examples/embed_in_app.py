"""Embed an imprinted classifier in your own app: one torch module from image tensor to class scores.

    imprint fit examples/fashion -o fashion.safetensors       # once, from a folder of images
    python examples/embed_in_app.py fashion.safetensors examples/fashion/bag/00069.png
"""
from __future__ import annotations

import sys

import torch

from imprint import ImprintClassifier
from imprint.data.folder import load_rgb
from imprint.encoders import create_encoder


class ImageClassifier(torch.nn.Module):
    """Frozen encoder followed by the imprinted head; forward(pixels) -> class scores."""

    def __init__(self, classifier_path: str) -> None:
        super().__init__()
        classifier = ImprintClassifier.load(classifier_path)
        encoder = create_encoder(classifier.encoder_id_, device="cpu")  # the encoder it was fitted with
        self.preprocess = encoder.transform
        self.encoder = encoder.model
        self.head = classifier.to_torch()
        self.class_names = [str(c) for c in classifier.classes_]
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixels))

    @torch.inference_mode()
    def predict(self, image_path: str) -> tuple[str, float]:
        """The best class of one image and its calibrated probability (as predict_proba gives it)."""
        scores = self(self.preprocess(load_rgb(image_path))[None])
        probabilities = self.head.probabilities(scores)[0]
        best = int(probabilities.argmax())
        return self.class_names[best], float(probabilities[best])


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python examples/embed_in_app.py CLASSIFIER.safetensors IMAGE...")
    app = ImageClassifier(sys.argv[1])
    for path in sys.argv[2:]:
        label, probability = app.predict(path)
        print(f"{path}: {label} ({probability:.2f})")
