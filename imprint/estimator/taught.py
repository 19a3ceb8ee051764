"""The examples a classifier was taught class by class (``add_examples``), kept in its file so that a class can be
given more examples later and imprinted again from all of them, exactly as if they had come at once.

Classes imprinted by ``fit`` are kept only when asked (``keep_examples``: their support set may be millions of
rows); classes taught one by one, as a live service does, always are, with a small JPEG of each image where
the service was sent images. The component owns its part of the classifier file: the arrays ``examples``
(float32 rows), ``examples.codes`` (each row's class, as an index into the classifier's classes) and, where
there are pictures, ``examples.thumbnails`` (their bytes, one after the other) and ``examples.thumbnail_sizes``
(each row's share of them; 0 for a row without).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import torch


class Examples:
    """Embeddings of the examples of each taught class, by class label."""

    def __init__(self, by_class: dict[Hashable, np.ndarray] | None = None,
                 pictures: dict[Hashable, list[bytes]] | None = None) -> None:
        self.by_class: dict[Hashable, np.ndarray] = dict(by_class or {})
        self.pictures: dict[Hashable, list[bytes]] = {label: list(kept) for label, kept in (pictures or {}).items()}

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

    def thumbnails_of(self, label: Hashable) -> list[bytes]:
        """A small JPEG of each example of `label`, in the order taught (b"" where none was kept)."""
        return self.pictures.get(label) or [b""] * len(self.by_class.get(label, ()))

    def add(self, label: Hashable, X: np.ndarray, thumbnails: list[bytes] | None = None) -> None:
        """Keep rows X as more examples of `label`, with a small JPEG of each where given."""
        rows = np.asarray(X, dtype=np.float32)
        if thumbnails is not None and len(thumbnails) != len(rows):
            raise ValueError(f"{len(thumbnails)} thumbnails for {len(rows)} examples")
        pictures = self.thumbnails_of(label) + (list(thumbnails) if thumbnails is not None else [b""] * len(rows))
        self.by_class[label] = np.concatenate([self.by_class[label], rows]) if label in self.by_class else rows
        if any(pictures):
            self.pictures[label] = pictures

    def drop(self, labels: Iterable[Hashable]) -> None:
        for label in labels:
            self.by_class.pop(label, None)
            self.pictures.pop(label, None)

    def state(self, classes: np.ndarray) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        """This component's part of the classifier file, with codes into `classes`."""
        labels = [label for label in classes.tolist() if label in self.by_class]
        rows = [self.by_class[label] for label in labels]
        width = rows[0].shape[1] if rows else 0
        codes = np.concatenate([np.full(len(r), np.searchsorted(classes, label), dtype=np.int64)
                                for label, r in zip(labels, rows)]) if rows else np.zeros(0, np.int64)
        arrays = {"examples": np.concatenate(rows) if rows else np.zeros((0, width), np.float32),
                  "examples.codes": codes}
        pictures = [picture for label in labels for picture in self.thumbnails_of(label)]
        if any(pictures):
            arrays["examples.thumbnails"] = np.frombuffer(b"".join(pictures), dtype=np.uint8)
            arrays["examples.thumbnail_sizes"] = np.asarray([len(p) for p in pictures], dtype=np.int64)
        return {}, arrays

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
        pictures: dict[Hashable, list[bytes]] = {}
        if "examples.thumbnails" in tensors or "examples.thumbnail_sizes" in tensors:
            blob, sizes = tensors["examples.thumbnails"].numpy(), tensors["examples.thumbnail_sizes"].numpy()
            if blob.dtype != np.uint8 or blob.ndim != 1 or sizes.shape != (len(rows),) or \
                    (len(sizes) and sizes.min() < 0) or int(sizes.sum()) != len(blob):
                raise ValueError("its pictures of kept examples do not match them")
            ends = np.cumsum(sizes)
            each = [blob[end - size:end].tobytes() for end, size in zip(ends.tolist(), sizes.tolist())]
            for code in np.unique(codes):
                pictures[classes[code].item()] = [each[i] for i in np.flatnonzero(codes == code)]
        return cls({classes[code].item(): rows[codes == code].copy() for code in np.unique(codes)}, pictures)
