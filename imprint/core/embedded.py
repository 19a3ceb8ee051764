"""Embeddings that remember their encoder, and the labelled sets the command line reads.

``Embeddings`` is a plain float32 ndarray with an ``encoder_id`` attribute that survives slicing. Every
imprint function that embeds images returns one, and ``ImprintClassifier`` records it at fit time and
refuses queries from another encoder: a classifier fitted on one encoder's embeddings would otherwise score
another's of the same width without a word (measured: 27% instead of 92%).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Embeddings(np.ndarray):
    """An ndarray of embeddings tagged with the id of the encoder that made them."""

    encoder_id: str | None

    def __array_finalize__(self, parent: object) -> None:
        self.encoder_id = getattr(parent, "encoder_id", None)


def tagged(X: np.ndarray, encoder_id: str | None) -> Embeddings:
    """A view of X (no copy) that carries `encoder_id`."""
    out = np.asarray(X).view(Embeddings)
    out.encoder_id = encoder_id
    return out


@dataclass
class Labelled:
    """Embeddings with one class name per row, the encoder that made them and, where known, the image paths."""

    X: np.ndarray
    labels: np.ndarray
    encoder_id: str | None
    paths: list[str] | None = None
