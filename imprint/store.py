"""Embeddings on disk as memory-mapped arrays: one folder per (encoder, dataset), filled in chunks.

Layout: ``meta.json`` (encoder, width, classes, a digest of the image list), ``paths.json`` (the image
paths, any characters; version-1 stores have ``paths.txt``), ``labels.npy``, ``embeddings.npy`` (N x d
float32, memory-mapped), ``digests.npy`` (a checksum per row) and ``state.npy`` (per row: 0 pending,
1 embedded, -1 unreadable). Rows and their checksums are written and flushed before their state says so,
so a crash at any point loses at most the batch in flight, and reopening the store resumes with the
pending rows. A row altered on disk fails its checksum: it is never served, and the next ``imprint embed``
into the store recomputes it. N is bounded by disk, not memory.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.atomic import atomic_save_npy, atomic_write_bytes
from imprint.embedded import tagged

FORMAT = "imprint-embeddings"
FORMAT_VERSION = 2  # 2: per-row checksums (digests.npy)
PENDING, EMBEDDED, UNREADABLE = 0, 1, -1
_MULTIPLIERS = np.random.default_rng(20261123).integers(1, 2**63, size=1 << 16, dtype=np.uint64) | np.uint64(1)
VERIFY_BLOCK = 1 << 14


class StoreError(ValueError):
    """A store folder that cannot be used as asked; the message says why and what to do."""


def _digest(paths: Sequence[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def row_digests(rows: np.ndarray) -> np.ndarray:
    """A 64-bit checksum per row: its 32-bit words times fixed odd multipliers, summed modulo 2^64 (any change
    to one word changes it)."""
    words = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (words * _MULTIPLIERS[:words.shape[1]]).sum(axis=1, dtype=np.uint64)


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
    digests: np.ndarray

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
            existing.state[existing.damaged()] = PENDING  # recomputed by this run, never served
            existing.state.flush()
            return existing
        if root.exists() and any(root.iterdir()):
            raise StoreError(f"{root} exists and is not an embeddings store; choose a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / "paths.json", json.dumps(paths).encode())
        atomic_save_npy(root / "labels.npy", labels)
        for name, dtype, shape in (("embeddings", np.float32, (len(paths), dim)), ("state", np.int8, (len(paths),)),
                                   ("digests", np.uint64, (len(paths),))):
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
            paths = json.loads((root / "paths.json").read_text()) if (root / "paths.json").is_file() else \
                (root / "paths.txt").read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            if not (root / "digests.npy").is_file():  # a version-1 store: checksums from what is there now
                atomic_save_npy(root / "digests.npy", row_digests(np.asarray(embeddings)))
            digests = np.load(root / "digests.npy", mmap_mode=mode)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{root} is a damaged embeddings store ({exc}); embed again into a new folder") \
                from None
        if embeddings.shape != (meta["count"], meta["dim"]) or len(state) != meta["count"] or \
                len(labels) != meta["count"] or len(paths) != meta["count"] or len(digests) != meta["count"]:
            raise StoreError(f"{root} is a damaged embeddings store (array sizes disagree with meta.json)")
        if _digest(paths, labels) != meta.get("digest"):
            raise StoreError(f"{root} is a damaged embeddings store (its image list or labels were altered); "
                             "embed again into a new folder")
        return cls(root, meta, paths, labels, embeddings, state, digests)

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def pending(self) -> np.ndarray:
        """Rows still to embed."""
        return np.flatnonzero(np.asarray(self.state) == PENDING)

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store embeddings for `rows`: data and checksums first, then their state, each flushed to disk."""
        self.embeddings[rows] = vectors
        self.digests[rows] = row_digests(vectors)
        self.embeddings.flush()
        self.digests.flush()
        self.state[rows] = EMBEDDED
        self.state.flush()

    def damaged(self) -> np.ndarray:
        """Embedded rows whose data no longer matches its checksum (altered on disk), checked block by block."""
        embedded = np.flatnonzero(np.asarray(self.state) == EMBEDDED)
        bad = [rows[row_digests(np.asarray(self.embeddings[rows])) != np.asarray(self.digests[rows])]
               for rows in np.array_split(embedded, max(1, -(-len(embedded) // VERIFY_BLOCK)))]
        return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)

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
        damaged = self.damaged()
        if len(damaged):
            raise StoreError(f"{self.root} has {len(damaged)} embedding(s) altered on disk since they were written "
                             f"(first: {self.paths[damaged[0]]}); rerun the same 'imprint embed' command to "
                             "recompute them")
        ok = np.flatnonzero(np.asarray(self.state) == EMBEDDED)
        rows = self.embeddings if len(ok) == len(self.state) else self.embeddings[ok]
        return tagged(rows, self.meta["encoder"]), np.asarray(self.class_names, dtype=object)[self.labels[ok]]

