"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write to {target}: it is a directory; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as a .npy file (no pickle), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())
