"""Where a classifier's support set came from: the source it was fitted from, a content digest of every support
image (when it was fitted from image files) and its accuracy on the images held out at fit. ``imprint eval``
and ``imprint predict`` use the digests to say when a query is one of the images the classifier was fitted on
(an accuracy measured on them says little about new images); ``imprint info`` shows the rest.

A digest is 8 bytes of SHA-256 (hardware-accelerated on current CPUs) over the file's size and bytes (a file above
64 KB: its size, first and last 32 KB), so an identical copy under another name is found too, and a large image is
not read whole: 2,000 images of 120 KB take 0.2 s. The
component owns its part of the classifier file: the header field ``fitted_on`` and the array
``support.digests`` (sorted).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WHOLE = 64 * 1024  # bytes of a file digested whole; above, its head and tail
PART = 32 * 1024


def image_digest(path: str | os.PathLike) -> int:
    """An image file's content digest (8 bytes, as an unsigned integer); 0 where it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(size.to_bytes(8, "little"))
            if size <= WHOLE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(PART))
                handle.seek(size - PART)
                digest.update(handle.read(PART))
    except OSError:
        return 0
    return int.from_bytes(digest.digest()[:8], "little")


def image_digests(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """The content digests of image files, as uint64."""
    return np.fromiter((image_digest(path) for path in paths), dtype=np.uint64, count=len(paths))


@dataclass
class Provenance:
    """The source a classifier was fitted from, its support images' digests (None: fitted from embeddings) and
    its accuracy on the images held out at fit (None: none were)."""

    source: str
    digests: np.ndarray | None = None
    held_out_accuracy: float | None = None
    held_out_images: int | None = None

    @classmethod
    def of_images(cls, source: str, paths: Sequence[Path] | None) -> Provenance:
        return cls(source, None if paths is None else np.unique(image_digests(paths)))

    def in_support(self, paths: Sequence[str | os.PathLike]) -> np.ndarray | None:
        """Which image files are (copies of) support images; None where the digests were not recorded."""
        if self.digests is None:
            return None
        found = image_digests(paths)
        return np.isin(found, self.digests) & (found != 0)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """This component's part of the classifier file."""
        meta = {"fitted_on": {"source": self.source, "held_out_accuracy": self.held_out_accuracy,
                              "held_out_images": self.held_out_images}}
        return meta, ({} if self.digests is None else {"support.digests": self.digests})

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, Any]) -> Provenance | None:
        """The provenance a file records (checked by ``imprint.io.classifier_file``), or None where it records none."""
        fitted_on = meta.get("fitted_on")
        if fitted_on is None:
            return None
        digests = arrays.get("support.digests")
        accuracy, images = fitted_on.get("held_out_accuracy"), fitted_on.get("held_out_images")
        return cls(fitted_on["source"], None if digests is None else np.asarray(digests),
                   None if accuracy is None else float(accuracy), None if images is None else int(images))


def describe(fitted_on: dict[str, Any], support_images: int | None) -> str:
    """What a file records of where its support set came from, in one line (``imprint info``)."""
    accuracy = fitted_on.get("held_out_accuracy")
    held = "" if accuracy is None else \
        f"; accuracy on the {fitted_on.get('held_out_images')} images held out at fit: {accuracy:.4f}"
    count = "" if support_images is None else f" ({support_images} distinct support images)"
    return f"fitted on: {fitted_on['source']}{count}{held}"
