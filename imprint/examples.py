"""The examples a classifier was taught class by class (``add_examples``), kept in its file so that a class can be
given more examples later and imprinted again from all of them, exactly as if they had come at once.

Classes imprinted by ``fit`` are kept only when asked (``keep_examples``: their support set may be millions of
rows); classes taught one by one, as a live service does, always are. The component owns its part of the
classifier file: the arrays ``examples`` (float32 rows) and ``examples.codes`` (each row's class, as an index
into the classifier's classes).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import torch


class Examples:
    """Embeddings of the examples of each taught class, by class label."""

    def __init__(self, by_class: dict[Hashable, np.ndarray] | None = None) -> None:
        self.by_class: dict[Hashable, np.ndarray] = dict(by_class or {})

    def __contains__(self, label: Hashable) -> bool:
        return label in self.by_class

    def of(self, label: Hashable) -> np.ndarray:
        """The kept examples of `label` (rows of float32)."""
        return self.by_class[label]

    @classmethod
    def of_support(cls, X: np.ndarray, classes: np.ndarray, codes: np.ndarray) -> Examples:
        """Every class's rows of a support set (float32 copies), for ``fit(keep_examples=True)``."""
        rows = np.asarray(X, dtype=np.float32)
        return cls({label: rows[codes == code].copy() for code, label in enumerate(classes.tolist())})

    def add(self, label: Hashable, X: np.ndarray) -> None:
        """Keep rows X as more examples of `label`."""
        rows = np.asarray(X, dtype=np.float32)
        self.by_class[label] = np.concatenate([self.by_class[label], rows]) if label in self.by_class else rows

    def drop(self, labels: Iterable[Hashable]) -> None:
        for label in labels:
            self.by_class.pop(label, None)

    def state(self, classes: np.ndarray) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        """This component's part of the classifier file, with codes into `classes`."""
        labels = [label for label in classes.tolist() if label in self.by_class]
        rows = [self.by_class[label] for label in labels]
        width = rows[0].shape[1] if rows else 0
        codes = np.concatenate([np.full(len(r), np.searchsorted(classes, label), dtype=np.int64)
                                for label, r in zip(labels, rows)]) if rows else np.zeros(0, np.int64)
        return {}, {"examples": np.concatenate(rows) if rows else np.zeros((0, width), np.float32),
                    "examples.codes": codes}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], classes: np.ndarray, dim: int) -> Examples | None:
        """The kept examples from a file's arrays (None when it kept none); inconsistent arrays raise ValueError,
        which the loader reports as a damaged file."""
        if "examples" not in tensors and "examples.codes" not in tensors:
            return None
        rows, codes = tensors["examples"].numpy(), tensors["examples.codes"].numpy()
        if rows.ndim != 2 or (len(rows) and rows.shape[1] != dim) or codes.shape != (len(rows),) or \
                rows.dtype != np.float32 or (len(codes) and (codes.min() < 0 or codes.max() >= len(classes))):
            raise ValueError("its kept examples do not match its classes")
        return cls({classes[code].item(): rows[codes == code].copy() for code in np.unique(codes)})
