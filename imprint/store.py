"""Embeddings on disk as memory-mapped arrays: one folder per (encoder, dataset), filled in chunks.

Layout: ``meta.json`` (encoder, width, classes, a digest of the image list), ``paths.txt`` (one image
path per line), ``labels.npy``, ``embeddings.npy`` (N x d float32, memory-mapped) and ``state.npy``
(per row: 0 pending, 1 embedded, -1 unreadable). Rows are written and flushed before their state
says so, so a crash at any point loses at most the batch in flight, and reopening the store resumes
with the pending rows. N is bounded by disk, not memory.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.atomic import atomic_save_npy, atomic_write_bytes

FORMAT = "imprint-embeddings"
FORMAT_VERSION = 1
PENDING, EMBEDDED, UNREADABLE = 0, 1, -1


class StoreError(ValueError):
    """A store folder that cannot be used as asked; the message says why and what to do."""


def _digest(paths: Sequence[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode() + b"\n")
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def is_store(path: str | Path) -> bool:
    """Whether `path` is a store folder (it holds meta.json), as opposed to an image folder."""
    return (Path(path) / "meta.json").is_file()


@dataclass
class EmbeddingStore:
    """An opened store: memory-mapped embeddings and row states, with labels, paths and classes."""

    root: Path
    meta: dict
    paths: list[str]
    labels: np.ndarray
    embeddings: np.ndarray
    state: np.ndarray

    @classmethod
    def create(cls, root: str | Path, *, encoder_id: str, encoder_key: str, dim: int, paths: Sequence[str],
               labels: np.ndarray, class_names: Sequence[str]) -> EmbeddingStore:
        """Open `root` to (continue to) embed `paths`: a new store, or the same unfinished one to resume."""
        root = Path(root)
        paths = [str(p) for p in paths]
        labels = np.asarray(labels, dtype=np.int64)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "encoder": encoder_id,
                "encoder_key": encoder_key, "dim": int(dim), "count": len(paths),
                "class_names": list(class_names), "digest": _digest(paths, labels)}
        if is_store(root):
            existing = cls.open(root, writable=True)
            for key, what in (("encoder_key", "encoder"), ("digest", "list of images"), ("dim", "width")):
                if existing.meta.get(key) != meta[key]:
                    raise StoreError(f"{root} holds embeddings of another {what} ({existing.meta['encoder']}, "
                                     f"{existing.meta['count']} images); choose a new output folder or delete it")
            return existing
        if root.exists() and any(root.iterdir()):
            raise StoreError(f"{root} exists and is not an embeddings store; choose a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / "paths.txt", "".join(p + "\n" for p in paths).encode())
        atomic_save_npy(root / "labels.npy", labels)
        for name, dtype, shape in (("embeddings", np.float32, (len(paths), dim)), ("state", np.int8, (len(paths),))):
            np.lib.format.open_memmap(root / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()
        atomic_write_bytes(root / "meta.json", json.dumps(meta, indent=1).encode())  # last: marks it complete
        return cls.open(root, writable=True)

    @classmethod
    def open(cls, root: str | Path, writable: bool = False) -> EmbeddingStore:
        """Open an existing store (read-only unless `writable`)."""
        root = Path(root)
        try:
            meta = json.loads((root / "meta.json").read_text())
        except (OSError, ValueError):
            raise StoreError(f"{root} is not an embeddings store (no readable meta.json); "
                             "create one with: imprint embed FOLDER -o STORE_DIR") from None
        if meta.get("format") != FORMAT:
            raise StoreError(f"{root} is not an embeddings store (format {meta.get('format')!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise StoreError(f"{root} was written by a newer imprint (store format {meta['format_version']}); "
                             "upgrade imprint")
        mode = "r+" if writable else "r"
        try:
            embeddings = np.load(root / "embeddings.npy", mmap_mode=mode)
            state = np.load(root / "state.npy", mmap_mode=mode)
            labels = np.load(root / "labels.npy")
            paths = (root / "paths.txt").read_text().splitlines()
        except (OSError, ValueError) as exc:
            raise StoreError(f"{root} is a damaged embeddings store ({exc}); embed again into a new folder") \
                from None
        if embeddings.shape != (meta["count"], meta["dim"]) or len(state) != meta["count"] or \
                len(labels) != meta["count"] or len(paths) != meta["count"]:
            raise StoreError(f"{root} is a damaged embeddings store (array sizes disagree with meta.json)")
        return cls(root, meta, paths, labels, embeddings, state)

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def pending(self) -> np.ndarray:
        """Rows still to embed."""
        return np.flatnonzero(np.asarray(self.state) == PENDING)

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store embeddings for `rows`: data first, then their state, each flushed to disk."""
        self.embeddings[rows] = vectors
        self.embeddings.flush()
        self.state[rows] = EMBEDDED
        self.state.flush()

    def mark_unreadable(self, rows: np.ndarray) -> None:
        self.state[rows] = UNREADABLE
        self.state.flush()

    @property
    def complete(self) -> bool:
        return not (np.asarray(self.state) == PENDING).any()

    def unreadable(self) -> list[str]:
        return [self.paths[i] for i in np.flatnonzero(np.asarray(self.state) == UNREADABLE)]

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """The embedded rows (memory-mapped, nothing loaded until used) and their class names."""
        if not self.complete:
            raise StoreError(f"{self.root} is unfinished ({len(self.pending())} images pending); "
                             "resume with the same 'imprint embed' command")
        ok = np.flatnonzero(np.asarray(self.state) == EMBEDDED)
        rows = self.embeddings if len(ok) == len(self.state) else self.embeddings[ok]
        return rows, np.asarray(self.class_names, dtype=object)[self.labels[ok]]

