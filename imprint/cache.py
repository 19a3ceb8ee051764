"""On-disk embedding cache: one small file per (encoder, weights, preprocessing, image path, size, mtime).

A changed image, model or transform gives a new key, so a stale embedding is never served. Every file
is written atomically (temporary file + rename), so an interrupted write leaves no partial entry and
several processes can share one cache. Every entry carries a SHA-256 of its array: an entry altered or
truncated on disk fails the check when read and is recomputed (and rewritten), never served.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import platformdirs

from imprint.atomic import atomic_write_bytes
from imprint.encoders.base import Encoder

MAGIC = b"IMPRINT1"
SUFFIX = ".emb"


def default_cache_dir() -> Path:
    """$IMPRINT_CACHE_DIR, else the user cache folder (e.g. ~/.cache/imprint/embeddings)."""
    return Path(os.environ.get("IMPRINT_CACHE_DIR") or platformdirs.user_cache_dir("imprint")) / "embeddings"


def array_key(images: np.ndarray) -> str:
    """Digest of an image array's shape, type and pixels: the cache key of its embeddings."""
    digest = hashlib.sha256(f"{images.shape}|{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:32]


def encoder_namespace(encoder: Encoder) -> str:
    """Digest of everything about the encoder that changes its output."""
    text = f"{encoder.id}\n{encoder.weights_id}\n{encoder.transform!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _pack(array: np.ndarray) -> bytes:
    """MAGIC + SHA-256 of the .npy bytes + the .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    return MAGIC + hashlib.sha256(data).digest() + data


def _unpack(blob: bytes) -> np.ndarray | None:
    """The array of an entry, or None when it is not one of ours or fails its checksum."""
    head = len(MAGIC) + 32
    if len(blob) < head or not blob.startswith(MAGIC) or hashlib.sha256(blob[head:]).digest() != blob[len(MAGIC):head]:
        return None
    try:
        return np.load(io.BytesIO(blob[head:]), allow_pickle=False)
    except ValueError:
        return None


class EmbeddingCache:
    """Embeddings keyed by encoder namespace and image identity (absolute path, size, mtime)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _entry(self, namespace: str, path: Path) -> Path:
        stat = path.stat()
        ident = f"{path.resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}"
        key = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()  # any file name
        return self.root / namespace / key[:2] / f"{key[2:]}{SUFFIX}"

    @staticmethod
    def _read(entry: Path) -> np.ndarray | None:
        try:
            return _unpack(entry.read_bytes())
        except OSError:
            return None

    def get_many(self, namespace: str, paths: Sequence[Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, found mask) for `paths`; rows not found, or whose entry fails its check, are zero."""
        out = np.zeros((len(paths), dim), dtype=np.float32)
        found = np.zeros(len(paths), dtype=bool)
        for i, path in enumerate(paths):
            try:
                vector = self._read(self._entry(namespace, path))
            except OSError:  # the image itself is gone or unreadable: the encoder will say so
                continue
            if vector is not None and vector.shape == (dim,) and np.isfinite(vector).all():
                out[i], found[i] = vector, True
        return out, found

    def put_many(self, namespace: str, paths: Sequence[Path], embeddings: np.ndarray) -> None:
        """Store one embedding per path."""
        for path, vector in zip(paths, embeddings):
            atomic_write_bytes(self._entry(namespace, path), _pack(vector))

    def _array_entry(self, namespace: str, content_key: str) -> Path:
        return self.root / namespace / "arrays" / f"{content_key}{SUFFIX}"

    def get_array(self, namespace: str, content_key: str) -> np.ndarray | None:
        """Embeddings stored for an in-memory image array (see `array_key`), or None (missing or damaged)."""
        return self._read(self._array_entry(namespace, content_key))

    def put_array(self, namespace: str, content_key: str, embeddings: np.ndarray) -> None:
        """Store the embeddings of an in-memory image array."""
        atomic_write_bytes(self._array_entry(namespace, content_key), _pack(embeddings))

    def info(self) -> dict[str, object]:
        """Location, number of entries, size on disk and encoder namespaces."""
        files = list(self.root.rglob(f"*{SUFFIX}")) if self.root.is_dir() else []
        namespaces = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        return {"path": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files),
                "encoders": len(namespaces)}

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        entries = int(self.info()["entries"])
        if self.root.is_dir():
            shutil.rmtree(self.root)
        return entries
