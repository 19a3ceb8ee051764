"""An image embedder assembled for the machine: the encoder, the threads it runs on, the embedding cache and the
batch settings, behind one call from paths to embeddings. Every command that embeds images, and every library
workflow, embeds through one of these."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EmbedOptions:
    """How images are embedded: which encoder (None: the default, or the one a classifier records), on which
    device and runtime (auto: on the CPU the faster of ONNX Runtime and OpenVINO, else torch), with which cache (a
    folder, or none with ``cache=False``), threads, batch size, decoding workers, progress bars, and whether an
    unreadable image is an error (`strict`)."""

    encoder: str | None = None
    device: str = "auto"
    runtime: str = "auto"
    cache_dir: str | Path | None = None
    cache: bool = True
    threads: int | None = None
    batch_size: int = 64
    workers: int | None = None
    progress: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        if self.runtime != "auto":  # a runtime that is unknown or not installed: refused before any slow work
            from imprint.encoders.runtime import resolve_runtime

            resolve_runtime(self.runtime, "cpu")


class Embedder:
    """Embeds image files with one encoder, built on first use (so a mistake found before any image is embedded
    costs no model load); unreadable images are skipped and named in one warning (an error with `strict`)."""

    def __init__(self, options: EmbedOptions, encoder_id: str | None = None) -> None:
        self.options = options
        self.encoder_id = encoder_id or options.encoder
        self._encoder: Any = None
        self._cache: Any = None

    @property
    def encoder(self) -> Any:
        """The encoder, built (and the threads set for it) the first time it is asked for."""
        if self._encoder is None:
            from imprint.core.machine import encoder_threads, set_torch_threads
            from imprint.encoders import DEFAULT_ENCODER, create_encoder
            from imprint.io.cache import EmbeddingCache

            self._encoder = create_encoder(self.encoder_id or DEFAULT_ENCODER, device=self.options.device,
                                           runtime=self.options.runtime)
            if self._encoder.device.type == "cpu":
                set_torch_threads(encoder_threads(self.options.threads))
            self._cache = EmbeddingCache(self.options.cache_dir) if self.options.cache else None
        return self._encoder

    def __call__(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings of the readable images, mask of the paths that were readable)."""
        from imprint.workflows.loader import embed_paths

        encoder = self.encoder
        result = embed_paths(encoder, paths, cache=self._cache, batch_size=self.options.batch_size,
                             workers=self.options.workers, progress=self.options.progress,
                             strict=self.options.strict)
        if result.failed:
            warnings.warn("skipped " + result.describe_failures(), stacklevel=2)
        return result.embeddings, result.ok
