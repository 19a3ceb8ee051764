"""Embeddings on disk as memory-mapped arrays: one folder per (encoder, dataset), filled in chunks.

Layout: ``meta.json`` (encoder, width, classes, a digest of everything else that is not a row), ``paths.json``
(the image paths, any characters; version-1 stores have ``paths.txt``), ``labels.npy``, ``embeddings.npy``
(N x d float32, memory-mapped), ``digests.npy`` (a checksum per row) and ``state.npy`` (per row: 0 pending,
1 embedded, -1 unreadable). Rows and their checksums are written and flushed before their state says so, so a
crash at any point loses at most the batch in flight, and reopening the store resumes with the pending rows.

Nothing read back is trusted: the digest in ``meta.json`` covers the class names, encoder, width, image list
and labels (format 3); each row's checksum covers its position, its state and its numbers, so a row altered,
moved, or marked unreadable or embedded on disk fails its check. A failed row is never served, and the next
``imprint embed`` into the store recomputes it. Older formats are read only when they really are older.

A store is created in a hidden folder beside its place and renamed into place once complete, with the space
for every row reserved on disk first: a full disk or a killed process leaves no half-made store behind, and
filling the store never meets a full disk half-way (a write through a memory map would end in SIGBUS). N is
bounded by disk, not memory.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.core.atomic import WriteError, atomic_save_npy, atomic_write_bytes
from imprint.core.embedded import tagged
from imprint.core.errors import UserError, printable

FORMAT = "imprint-embeddings"
FORMAT_VERSION = 3  # 2: per-row checksums (digests.npy); 3: the meta digest covers the class names, rows their place
PENDING, EMBEDDED, UNREADABLE = 0, 1, -1
STATES = (PENDING, EMBEDDED, UNREADABLE)
_MULTIPLIERS = np.random.default_rng(20261123).integers(1, 2**63, size=1 << 16, dtype=np.uint64) | np.uint64(1)
_PLACE = np.uint64(0x9E3779B97F4A7C15)  # mixes a row's position into its checksum (format 3)
_UNREADABLE_MARK = np.uint64(0xD1B54A32D192ED03)
VERIFY_BLOCK = 1 << 14
FILES = ("meta.json", "paths.json", "labels.npy", "embeddings.npy", "state.npy", "digests.npy")
STAGING = re.compile(r"\.(?P<name>.+)\.creating-(?P<host>[^/]*)-(?P<pid>\d+)")


class StoreError(UserError):
    """A store folder that cannot be used as asked; the message says why and what to do."""


def _digest(paths: Sequence[str], labels: np.ndarray, described: dict | None = None) -> str:
    """SHA-256 of the image list and labels and, for format 3, of what meta.json says about them."""
    digest = hashlib.sha256()
    if described is not None:
        digest.update(json.dumps(described, sort_keys=True).encode() + b"\n")
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def _described(meta: dict) -> dict:
    """The fields of meta.json its digest covers (format 3)."""
    return {key: meta.get(key) for key in ("format", "format_version", "encoder", "encoder_key", "dim", "count",
                                           "class_names")}


def row_digests(rows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit checksum per row: its 32-bit words times fixed odd multipliers, summed modulo 2^64 (any change to
    one word changes it), plus, with `positions` (format 3), a multiple of the row's position."""
    words = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        sums = (words * _MULTIPLIERS[:words.shape[1]]).sum(axis=1, dtype=np.uint64)
        if positions is not None:
            sums += (np.asarray(positions, dtype=np.uint64) + np.uint64(1)) * _PLACE
    return sums


def unreadable_marks(positions: np.ndarray) -> np.ndarray:
    """The checksum an unreadable row carries (format 3): its position's, never that of any embedding's."""
    with np.errstate(over="ignore"):
        return (np.asarray(positions, dtype=np.uint64) + np.uint64(1)) * _PLACE ^ _UNREADABLE_MARK


def check_store_place(root: Path) -> None:
    """Refuse `root` for a store unless it is new, an empty folder, or a store already (which a run resumes)."""
    if not is_store(root) and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StoreError(f"{printable(root)} exists and is not an embeddings store; choose a new or empty folder")


def is_store(path: str | Path) -> bool:
    """Whether `path` is a store folder (it holds meta.json), as opposed to an image folder."""
    return (Path(path) / "meta.json").is_file()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _sweep_staging(root: Path) -> None:
    """Remove the hidden folders of store creations (of `root`, on this host) whose process was killed."""
    from imprint.core.atomic import _alive

    for folder in root.parent.glob(f".{root.name}.creating-*"):
        match = STAGING.fullmatch(folder.name)
        if match and match["name"] == root.name and match["host"] == _host() and not _alive(int(match["pid"])) \
                and folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= set(FILES):
            shutil.rmtree(folder, ignore_errors=True)


def _reserve(path: Path, size: int) -> None:
    """Allocate the disk blocks of a file up front, so later writes cannot meet a full disk (where the file
    system can; elsewhere the writes themselves report a full disk)."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (28, 27, 122):  # ENOSPC, EFBIG, EDQUOT: report it now, before any work
                raise
        except AttributeError:  # no posix_fallocate on this system
            pass


def _data_offset(path: Path) -> int:
    """Where the array data of an .npy file starts."""
    with open(path, "rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        (np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0)(handle)
        return handle.tell()


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

    @property
    def version(self) -> int:
        return int(self.meta.get("format_version", 1))

    @classmethod
    def create(cls, root: str | Path, *, encoder_id: str, encoder_key: str, dim: int, paths: Sequence[str],
               labels: np.ndarray, class_names: Sequence[str], runtime: str = "torch") -> EmbeddingStore:
        """Open `root` to (continue to) embed `paths`: a new store, or the same unfinished one to resume (with the
        same encoder on the same `runtime`, so its rows never mix two runtimes' embeddings)."""
        root = Path(root)
        paths = [str(p) for p in paths]
        labels = np.asarray(labels, dtype=np.int64)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "encoder": encoder_id,
                "encoder_key": encoder_key, "dim": int(dim), "count": len(paths), "class_names": list(class_names)}
        meta["digest"] = _digest(paths, labels, _described(meta))
        meta["runtime"] = runtime  # said in errors; the encoder key covers it
        if is_store(root):
            existing = cls.open(root, writable=True)
            earlier = existing.meta.get("runtime", "torch")
            if existing.meta.get("encoder") == encoder_id and earlier != runtime:
                from imprint.encoders.runtime import runtime_flag

                raise StoreError(f"{printable(root)} holds embeddings from {printable(earlier)}, this run uses "
                                 f"{runtime}; run it with --runtime {runtime_flag(str(earlier))}, or choose a new "
                                 "output folder (a store never mixes two runtimes' embeddings)")
            same_images = _digest(paths, labels, _described(existing.meta) if existing.version >= 3 else None)
            for differs, what in ((existing.meta.get("encoder_key") != encoder_key, "encoder"),
                                  (existing.meta.get("digest") != same_images, "list of images"),
                                  (existing.meta.get("dim") != int(dim), "width")):
                if differs:
                    raise StoreError(f"{printable(root)} holds embeddings of another {what} "
                                     f"({printable(existing.meta['encoder'])}, {existing.meta['count']} images); "
                                     "choose a new output folder or delete it")
            damaged = existing.damaged()
            if len(damaged):
                existing._set_state(damaged, PENDING)  # recomputed by this run, never served
            return existing
        check_store_place(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        _sweep_staging(root)
        staging = root.parent / f".{root.name}.creating-{_host()}-{os.getpid()}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            atomic_write_bytes(staging / "paths.json", json.dumps(paths).encode("utf-8", "surrogateescape"))
            atomic_save_npy(staging / "labels.npy", labels)
            for name, dtype, shape in (("embeddings", np.float32, (len(paths), dim)),
                                       ("state", np.int8, (len(paths),)), ("digests", np.uint64, (len(paths),))):
                array = np.lib.format.open_memmap(staging / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                size = array.offset + array.nbytes
                del array
                if size:
                    _reserve(staging / f"{name}.npy", size)
            atomic_write_bytes(staging / "meta.json", json.dumps(meta, indent=1).encode())  # last: it is complete
            if root.exists():
                root.rmdir()  # empty (checked above)
            os.rename(staging, root)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            need = len(paths) * (4 * int(dim) + 9)
            raise StoreError(f"cannot create the store {printable(root)}: {exc.strerror or exc} (it needs about "
                             f"{need / 2**20:.0f} MiB of disk); nothing was written; free some space or choose "
                             "another place") from None
        return cls.open(root, writable=True)

    @classmethod
    def open(cls, root: str | Path, writable: bool = False) -> EmbeddingStore:
        """Open an existing store (read-only unless `writable`), checking everything it says about itself."""
        root = Path(root)
        shown = printable(root)
        try:
            meta = json.loads((root / "meta.json").read_text())
        except PermissionError:
            raise StoreError(f"cannot read the store {shown} (permission denied)") from None
        except (OSError, ValueError):
            raise StoreError(f"{shown} is not an embeddings store (no readable meta.json); "
                             "create one with: imprint embed FOLDER -o STORE_DIR") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StoreError(f"{shown} is not an embeddings store (its meta.json is not an imprint store's)")
        version = meta.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreError(f"{shown} is a damaged embeddings store (format version {printable(version)})")
        if version > FORMAT_VERSION:
            raise StoreError(f"{shown} was written by a newer imprint (store format {version}); upgrade imprint")
        _check_meta(meta, shown)
        _check_files(root, version, shown)
        mode = "r+" if writable else "r"
        try:
            embeddings = np.load(root / "embeddings.npy", mmap_mode=mode)
            state = np.load(root / "state.npy", mmap_mode=mode)
            labels = np.load(root / "labels.npy", allow_pickle=False)
            paths = json.loads((root / "paths.json").read_bytes().decode("utf-8", "surrogateescape")) \
                if version >= 2 else \
                (root / "paths.txt").read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            if not (root / "digests.npy").is_file():  # a real version-1 store (checked above) never checksummed
                if writable:
                    atomic_save_npy(root / "digests.npy", row_digests(np.asarray(embeddings)))
                else:
                    digests = row_digests(np.asarray(embeddings))
            if (root / "digests.npy").is_file():
                digests = np.load(root / "digests.npy", mmap_mode=mode)
        except PermissionError:
            raise StoreError(f"cannot {'write to' if writable else 'read'} the store {shown} (permission denied); "
                             + ("embed into a folder you can write to" if writable else "check its permissions")) \
                from None
        except (MemoryError, OSError) as exc:  # mapping it needs address space: a limit, not damage
            if isinstance(exc, OSError) and exc.errno != errno.ENOMEM:
                raise StoreError(f"{shown} is a damaged embeddings store ({str(exc).splitlines()[0][:120]}); embed "
                                 "again into a new folder") from None
            from imprint.core.machine import NotEnoughMemory, gib

            size = sum(path.stat().st_size for path in root.glob("*.npy"))
            raise NotEnoughMemory(f"not enough memory to map the store {shown} ({gib(size)}): this process's "
                                  "address space is limited (ulimit -v) or the machine's memory is short; allow it "
                                  "more, or free memory") from None
        except ValueError as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise StoreError(f"{shown} is a damaged embeddings store ({reason}); embed again into a new folder") \
                from None
        count, dim = meta["count"], meta["dim"]
        if embeddings.shape != (count, dim) or embeddings.dtype != np.float32 or state.shape != (count,) or \
                state.dtype != np.int8 or labels.shape != (count,) or labels.dtype.kind not in "iu" or \
                not isinstance(paths, list) or len(paths) != count or not all(isinstance(p, str) for p in paths) or \
                np.shape(digests) != (count,):
            raise StoreError(f"{shown} is a damaged embeddings store (its arrays disagree with meta.json); embed "
                             "again into a new folder")
        described = _described(meta) if version >= 3 else None
        if _digest(paths, labels, described) != meta.get("digest"):
            raise StoreError(f"{shown} is a damaged embeddings store (its "
                             + ("class names, encoder, " if version >= 3 else "")
                             + "image list or labels were altered); embed again into a new folder")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(meta["class_names"])):
            raise StoreError(f"{shown} is a damaged embeddings store (labels outside its {len(meta['class_names'])} "
                             "classes); embed again into a new folder")
        if not np.isin(np.unique(np.asarray(state)), STATES).all():
            raise StoreError(f"{shown} is a damaged embeddings store (row states other than pending, embedded or "
                             "unreadable); embed again into a new folder")
        return cls(root, meta, paths, labels, embeddings, state, digests)

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def pending(self) -> np.ndarray:
        """Rows still to embed."""
        return np.flatnonzero(np.asarray(self.state) == PENDING)

    def _checksums(self, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        return row_digests(vectors, rows if self.version >= 3 else None)

    def _write_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Write `values` (one per row) into the .npy file `name` with plain file writes, then sync it: a full
        disk is an error here, never a SIGBUS from a write through the memory map."""
        path = self.root / f"{name}.npy"
        array = getattr(self, name)
        values = np.ascontiguousarray(values, dtype=array.dtype)
        width = values[0].nbytes if len(values) else 0
        offset = _data_offset(path)
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                order = np.argsort(rows, kind="stable")
                rows, values = np.asarray(rows)[order], values[order]
                breaks = np.flatnonzero(np.diff(rows) != 1) + 1
                for run_rows, run_values in zip(np.split(rows, breaks), np.split(values, breaks)):
                    if len(run_rows):
                        data = run_values.tobytes()
                        written = os.pwrite(fd, data, offset + int(run_rows[0]) * width)
                        if written != len(data):
                            raise OSError(28, "No space left on device")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from None

    def _set_state(self, rows: np.ndarray, state: int) -> None:
        if state == UNREADABLE and self.version >= 3:
            self._write_rows("digests", rows, unreadable_marks(rows))
        self._write_rows("state", rows, np.full(len(rows), state, dtype=np.int8))

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store embeddings for `rows`: data and checksums first, then their state, each synced to disk."""
        rows = np.asarray(rows, dtype=np.int64)
        self._write_rows("embeddings", rows, np.asarray(vectors, dtype=np.float32))
        self._write_rows("digests", rows, self._checksums(rows, vectors))
        self._set_state(rows, EMBEDDED)

    def damaged(self) -> np.ndarray:
        """Rows whose data no longer matches its checksum (altered on disk, or marked embedded or unreadable by
        hand), checked block by block."""
        state = np.asarray(self.state)
        embedded = np.flatnonzero(state == EMBEDDED)
        bad = [rows[self._checksums(rows, np.asarray(self.embeddings[rows])) != np.asarray(self.digests[rows])]
               for rows in np.array_split(embedded, max(1, -(-len(embedded) // VERIFY_BLOCK)))]
        if self.version >= 3:
            unreadable = np.flatnonzero(state == UNREADABLE)
            bad.append(unreadable[unreadable_marks(unreadable) != np.asarray(self.digests[unreadable])])
        return np.sort(np.concatenate(bad)) if bad else np.zeros(0, dtype=np.int64)

    def mark_unreadable(self, rows: np.ndarray) -> None:
        self._set_state(np.asarray(rows, dtype=np.int64), UNREADABLE)

    @property
    def complete(self) -> bool:
        return not (np.asarray(self.state) == PENDING).any()

    def unreadable(self) -> list[str]:
        return [self.paths[i] for i in np.flatnonzero(np.asarray(self.state) == UNREADABLE)]

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """The embedded rows (memory-mapped, nothing loaded until used) and their class names."""
        if not self.complete:
            raise StoreError(f"{printable(self.root)} is unfinished ({len(self.pending())} images pending); "
                             "resume with the same 'imprint embed' command")
        damaged = self.damaged()
        if len(damaged):
            raise StoreError(f"{printable(self.root)} has {len(damaged)} row(s) altered on disk since they were "
                             f"written (first: {printable(self.paths[damaged[0]])}); rerun the same 'imprint embed' "
                             "command to recompute them")
        ok = np.flatnonzero(np.asarray(self.state) == EMBEDDED)
        rows = self.embeddings if len(ok) == len(self.state) else self.embeddings[ok]
        return tagged(rows, self.meta["encoder"]), np.asarray(self.class_names, dtype=object)[self.labels[ok]]


def _check_meta(meta: dict, shown: str) -> None:
    """Every field of meta.json present and of its type, else a one-line StoreError naming it."""
    def bad(field: str, want: str) -> StoreError:
        return StoreError(f"{shown} is a damaged embeddings store (meta.json: {field} must be {want}); embed again "
                          "into a new folder")

    for field in ("count", "dim"):
        value = meta.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (field == "dim" and value < 1):
            raise bad(field, "a whole number")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) or \
            len(set(names)) != len(names):
        raise bad("class_names", "a list of distinct names")
    if not isinstance(meta.get("encoder"), str) or not meta["encoder"]:
        raise bad("encoder", "an encoder id")
    if not isinstance(meta.get("digest"), str):
        raise bad("digest", "a checksum")


def _check_files(root: Path, version: int, shown: str) -> None:
    """A store's files as its format version has them: an older format only where it really is one."""
    has = {name: (root / name).is_file() for name in ("paths.json", "paths.txt", "digests.npy")}
    if version >= 2 and not (has["paths.json"] and has["digests.npy"]):
        missing = "digests.npy" if not has["digests.npy"] else "paths.json"
        raise StoreError(f"{shown} is a damaged embeddings store ({missing} is missing); embed again into a new "
                         "folder")
    if version == 1 and (has["paths.json"] or not has["paths.txt"]):
        raise StoreError(f"{shown} is a damaged embeddings store (it says format 1 but has the files of a newer "
                         "one); embed again into a new folder")
