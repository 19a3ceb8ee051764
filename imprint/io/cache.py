"""On-disk embedding cache: one small file per (encoder, weights, preprocessing, image path, size, mtime), and per
in-memory image by its pixels (a built-in dataset's images: two draws of one dataset share the images they have in
common).

A changed image, model or transform gives a new key, so a stale embedding is never served. Every file
is written atomically (temporary file + rename), so an interrupted write leaves no partial entry and
several processes can share one cache. Every entry carries a SHA-256 of its array: an entry altered or
truncated on disk fails the check when read and is recomputed (and rewritten), never served. That check is also
why entries are not fsynced one by one (measured: 10 s of a 150 s run on 2,000 images): after a power cut an
entry may be empty or cut short, and is then recomputed like any damaged one.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from stat import S_ISLNK

import numpy as np
import platformdirs

from imprint.core.atomic import atomic_write_bytes
from imprint.encoders.base import Encoder

MAGIC = b"IMPRINT1"
SUFFIX = ".emb"
# What the cache writes, and nothing else: <namespace>/<2 hex>/<62 hex>.emb (an image file's entry, or an in-memory
# image's); <namespace>/arrays/<32 hex>.emb is what earlier versions wrote for a whole image array, cleared still
NAMESPACE = re.compile(r"[0-9a-f]{24}")
BUCKET = re.compile(r"[0-9a-f]{2}")
PATH_ENTRY = re.compile(r"[0-9a-f]{62}\.emb")
ARRAY_ENTRY = re.compile(r"[0-9a-f]{32}\.emb")
LEFTOVER = re.compile(r"\.[0-9a-f]{32,62}\.emb\..*\.tmp")  # a temporary file of an interrupted write


def default_cache_dir() -> Path:
    """$IMPRINT_CACHE_DIR, else the user cache folder (e.g. ~/.cache/imprint/embeddings)."""
    return Path(os.environ.get("IMPRINT_CACHE_DIR") or platformdirs.user_cache_dir("imprint")) / "embeddings"


def image_key(image: np.ndarray) -> str:
    """Digest of one in-memory image's shape, type and pixels: the cache key of its embedding (each image runs as a
    batch of its own on the CPU, so its embedding is the same whatever array it came in)."""
    digest = hashlib.sha256(f"pixels|{image.shape}|{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def encoder_namespace(encoder: Encoder) -> str:
    """Digest of everything about the encoder that changes its output, the runtime included (embeddings of two
    runtimes are never mixed)."""
    text = f"{encoder.id}\n{encoder.weights_id}\n{encoder.preprocessing_id}"
    runtime = encoder.runtime_id
    if runtime != "torch":  # torch's namespace is the one caches had before runtimes were chosen
        text += f"\n{runtime}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=4)
def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The .npy header of a little-endian float32 array of `shape` (the same for every entry of an encoder)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _pack(array: np.ndarray) -> bytes:
    """MAGIC + SHA-256 of the .npy bytes + the .npy bytes."""
    array = np.ascontiguousarray(array, dtype="<f4")
    data = _npy_header(array.shape) + array.tobytes()
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
        self.writable = True  # turned off, with one warning, when the cache cannot be written (full, read-only)

    def _entry(self, namespace: str, path: Path, folders: dict[Path, Path] | None = None) -> Path:
        """The entry of an image file: from its absolute path (links resolved), size and mtime. `folders` keeps the
        resolved folders of earlier calls: a folder of many images is resolved once, not once per image."""
        stat = os.lstat(path)
        if S_ISLNK(stat.st_mode):
            stat, resolved = os.stat(path), path.resolve()
        elif folders is None:
            resolved = path.resolve()
        else:
            folder = folders.get(path.parent)
            if folder is None:
                folder = folders[path.parent] = path.parent.resolve()
            resolved = folder / path.name
        ident = f"{resolved}\n{stat.st_size}\n{stat.st_mtime_ns}"
        key = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()  # any file name
        return self.root / namespace / key[:2] / f"{key[2:]}{SUFFIX}"

    @staticmethod
    def _read(entry: Path) -> np.ndarray | None:
        try:
            return _unpack(entry.read_bytes())
        except OSError:
            return None

    def _image_entry(self, namespace: str, key: str) -> Path:
        """The entry of an in-memory image, by its `image_key`."""
        return self.root / namespace / key[:2] / f"{key[2:]}{SUFFIX}"

    def get_many(self, namespace: str, paths: Sequence[Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, found mask) for `paths`; rows not found, or whose entry fails its check, are zero."""
        folders: dict[Path, Path] = {}
        return self._gathered([lambda path=path: self._entry(namespace, path, folders) for path in paths], dim)

    def get_images(self, namespace: str, keys: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, found mask) for in-memory images, by their `image_key`s, as `get_many`."""
        return self._gathered([lambda key=key: self._image_entry(namespace, key) for key in keys], dim)

    def _gathered(self, entries: Sequence[Callable[[], Path]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of `entries` (each made when it is read) that are there and pass their check."""
        out = np.zeros((len(entries), dim), dtype=np.float32)
        found = np.zeros(len(entries), dtype=bool)
        for i, entry in enumerate(entries):
            try:
                vector = self._read(entry())
            except OSError:  # the image itself is gone or unreadable: the encoder will say so
                continue
            if vector is not None and vector.shape == (dim,) and np.isfinite(vector).all():
                out[i], found[i] = vector, True
        return out, found

    def put_many(self, namespace: str, paths: Sequence[Path], embeddings: np.ndarray) -> None:
        """Store one embedding per path. A cache that cannot be written (a full disk, a read-only folder) is
        left alone with one warning: embedding goes on without it."""
        folders: dict[Path, Path] = {}
        self._stored([lambda path=path: self._entry(namespace, path, folders) for path in paths], embeddings)

    def put_images(self, namespace: str, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store one embedding per in-memory image, by its `image_key`, as `put_many`."""
        self._stored([lambda key=key: self._image_entry(namespace, key) for key in keys], embeddings)

    def _stored(self, entries: Sequence[Callable[[], Path]], embeddings: np.ndarray) -> None:
        """Write each vector to its entry (made when it is written), until the cache turns out not to be writable."""
        for entry, vector in zip(entries, embeddings):
            if not self._write(entry, _pack(vector)):
                return

    def _write(self, entry: Callable[[], Path], data: bytes) -> bool:
        """Write one entry; False (after one warning) once the cache has turned out not to be writable."""
        if not self.writable:
            return False
        try:
            atomic_write_bytes(entry(), data, sweep=False, durable=False)  # checksummed: see the module docstring
        except OSError as exc:
            self.writable = False
            reason = exc.strerror or str(exc)
            warnings.warn(f"the embedding cache {self.root} cannot be written ({reason}); going on without caching "
                          "(free some space, or pass --cache-dir DIR or --no-cache)", stacklevel=3)
            return False
        return True

    def _folders(self) -> Iterator[tuple[Path, re.Pattern]]:
        """The cache's own folders under the root (namespace buckets and array folders), with the pattern their
        entries' names match. Anything else under the root is not the cache's and is never touched."""
        for namespace in _subfolders(self.root, NAMESPACE):
            for bucket in _subfolders(namespace, BUCKET):
                yield bucket, PATH_ENTRY
            if (namespace / "arrays").is_dir() and not (namespace / "arrays").is_symlink():
                yield namespace / "arrays", ARRAY_ENTRY

    def _entries(self) -> Iterator[Path]:
        """Every file the cache wrote: a name of its pattern and the cache's signature at its start."""
        for folder, pattern in self._folders():
            for item in folder.iterdir():
                if pattern.fullmatch(item.name) and item.is_file() and not item.is_symlink() and _signed(item):
                    yield item

    def info(self) -> dict[str, object]:
        """Location, number of entries, size on disk and encoder namespaces."""
        files = list(self._entries())
        return {"path": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files),
                "encoders": len(list(_subfolders(self.root, NAMESPACE)))}

    def clear(self) -> int:
        """Delete the cache's entries (files it recognises as its own by their name, place and signature) and the
        temporary files of interrupted writes, then its folders that are left empty; anything else under the root
        is left as it is. Returns how many entries there were."""
        folders = list(self._folders())
        removed = 0
        for entry in list(self._entries()):
            entry.unlink(missing_ok=True)
            removed += 1
        for folder, _ in folders:
            for item in folder.iterdir():
                if LEFTOVER.fullmatch(item.name) and item.is_file():
                    item.unlink(missing_ok=True)
        for folder in [f for f, _ in folders] + list(_subfolders(self.root, NAMESPACE)) + [self.root]:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        return removed


def _subfolders(folder: Path, pattern: re.Pattern) -> Iterator[Path]:
    """Real sub-folders (not links) of `folder` whose names match `pattern`."""
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        if pattern.fullmatch(item.name) and item.is_dir() and not item.is_symlink():
            yield item


def _signed(path: Path) -> bool:
    """Whether a file starts with the cache's signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
