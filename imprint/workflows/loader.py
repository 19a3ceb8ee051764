"""Embed image files: decode in DataLoader workers while the encoder runs, reuse cached embeddings."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from imprint.core.embedded import tagged
from imprint.core.errors import UserError
from imprint.data.folder import UnreadableImage, load_rgb
from imprint.encoders.base import Encoder
from imprint.io.cache import EmbeddingCache, encoder_namespace
from imprint.io.store import EmbeddingStore


class UnreadableImagesError(UserError):
    """Images that could not be decoded, in --strict mode."""


@dataclass
class Embedded:
    """Embeddings of the readable images, and which input paths failed to decode."""

    embeddings: np.ndarray  # (n_ok, dim)
    ok: np.ndarray  # (n_paths,) bool
    failed: list[Path]
    encoded: int  # images run through the encoder (not served from the cache)
    reasons: dict[Path, str] = field(default_factory=dict)  # why each failed image failed

    def describe_failures(self, limit: int = 5) -> str:
        """'N unreadable image(s): path (why), ...' naming at most `limit` of them."""
        named = ", ".join(f"{path} ({self.reasons.get(path, 'unreadable')})" for path in self.failed[:limit])
        more = f" and {len(self.failed) - limit} more" if len(self.failed) > limit else ""
        return f"{len(self.failed)} unreadable image(s): {named}{more}"


class ImageFiles(Dataset):
    """Decoded, preprocessed image files; an unreadable file gives a placeholder and the reason it failed."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(load_rgb(self.paths[index])), index, None
        except UnreadableImage as exc:  # reported by path and reason afterwards
            return torch.zeros(3, 1, 1), index, str(exc)
        except Exception as exc:  # anything else the decoder or the transform raises
            return torch.zeros(3, 1, 1), index, f"cannot be decoded ({type(exc).__name__}: {exc})"


def collate_decoded(items):
    """(pixels of the decoded images or None, their positions, positions that failed, why each failed)."""
    good = [item for item in items if item[2] is None]
    pixels = torch.stack([item[0] for item in good]) if good else None
    bad = [item for item in items if item[2] is not None]
    return pixels, [item[1] for item in good], [item[1] for item in bad], [item[2] for item in bad]


def default_workers(device: torch.device | None = None) -> int:
    """Decoding worker processes. A GPU encoder leaves the CPU to decoding; a CPU encoder already uses
    every core, and on 2 cores a worker costs more than it overlaps (measured: 0.80 vs 0.98 of the
    encoder's own throughput), so small CPU machines decode in the main process (on as many threads as the
    encoder: decoding and resizing let go of the GIL)."""
    cores = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def iter_embedded(encoder: Encoder, paths: Sequence[Path], *, batch_size: int = 64, workers: int | None = None,
                  progress: bool = True,
                  desc: str = "embedding") -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
    """Per batch: (positions in `paths` that decoded, their embeddings, positions that did not, why)."""
    workers = default_workers(encoder.device) if workers is None else workers
    files = ImageFiles(paths, encoder.transform)
    if workers:
        batches: Iterator = iter(DataLoader(files, batch_size=batch_size, num_workers=workers,
                                            collate_fn=collate_decoded, pin_memory=encoder.device.type == "cuda",
                                            persistent_workers=False))
    else:
        batches = _decoded_in_threads(files, batch_size, torch.get_num_threads())
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for pixels, good, bad, reasons in batches:
            vectors = encoder.encode_batch(pixels) if pixels is not None else \
                np.zeros((0, encoder.embedding_dim), dtype=np.float32)
            yield np.asarray(good, dtype=np.int64), vectors, np.asarray(bad, dtype=np.int64), reasons
            bar.update(len(good) + len(bad))


def _decoded_in_threads(files: ImageFiles, batch_size: int, threads: int) -> Iterator[tuple]:
    """Batches of `files` decoded in this process by `threads` threads, in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="imprint-decode") as pool:
        for start in range(0, len(files), batch_size):
            yield collate_decoded(list(pool.map(files.__getitem__, range(start, min(start + batch_size, len(files))))))


def embed_paths(encoder: Encoder, paths: Sequence[Path], *, cache: EmbeddingCache | None = None,
                batch_size: int = 64, workers: int | None = None, progress: bool = True,
                strict: bool = False) -> Embedded:
    """Embeddings of image files; unreadable files are skipped and listed (an error with `strict`)."""
    paths = [Path(p) for p in paths]
    dim = encoder.embedding_dim
    namespace = encoder_namespace(encoder)
    if cache is not None:
        out, found = cache.get_many(namespace, paths, dim)
    else:
        out, found = np.zeros((len(paths), dim), dtype=np.float32), np.zeros(len(paths), dtype=bool)
    todo = np.flatnonzero(~found)
    ok = found.copy()
    failed: list[int] = []
    reasons: dict[Path, str] = {}
    if len(todo):
        for good, vectors, bad, why in iter_embedded(encoder, [paths[i] for i in todo], batch_size=batch_size,
                                                     workers=workers, progress=progress):
            failed.extend(todo[bad].tolist())
            reasons.update(zip([paths[i] for i in todo[bad]], why))
            rows = todo[good]
            out[rows], ok[rows] = vectors, True
            if cache is not None and len(rows):
                cache.put_many(namespace, [paths[i] for i in rows], vectors)
    result = Embedded(tagged(out[ok], encoder.id), ok, [paths[i] for i in sorted(failed)],
                      int(len(todo) - len(failed)), reasons)
    if strict and result.failed:
        raise UnreadableImagesError(result.describe_failures() + "; fix or remove them, or drop --strict")
    return result


def embed_into_store(encoder: Encoder, store: EmbeddingStore, *, batch_size: int = 64, workers: int | None = None,
                     progress: bool = True) -> int:
    """Embed the store's pending rows, each batch written to disk as it is done; returns rows embedded now."""
    pending = store.pending()
    paths = [Path(store.paths[i]) for i in pending]
    done = 0
    for good, vectors, bad, _ in iter_embedded(encoder, paths, batch_size=batch_size, workers=workers,
                                               progress=progress):
        if len(good):
            store.write(pending[good], vectors)
        if len(bad):
            store.mark_unreadable(pending[bad])
        done += len(good)
    return done
