"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Files get the permissions any new file gets (0666 minus the umask), not the private 0600 of a temporary
file, so a saved classifier or report can be shared as usual.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else by a round trip."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class WriteError(OSError):
    """A file that could not be written (disk full, read-only folder, ...); any earlier version is unchanged."""

    def __str__(self) -> str:
        return (f"cannot write {self.filename}: {self.strerror}; any earlier version of it is unchanged "
                "(free some space or choose a writable place)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`. On failure the
    temporary file is removed, the earlier `path` (if any) is untouched, and a WriteError says so."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write to {target}: it is a directory; give a file name")
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(exc.errno, exc.strerror or str(exc), str(target)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as a .npy file (no pickle), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())
