"""``.npz`` files read safely: every member's declared size is checked before anything is decompressed.

A .npz is a zip of .npy arrays. A 2 MB zip can declare (and inflate to) gigabytes, and an .npy header can
declare an array larger than its data; numpy would allocate either before noticing. Here the zip directory and
each array's header are read first: a member that inflates more than MAX_RATIO times, whose header does not
match its size, or arrays that together need more memory than this process has left, are refused in one line.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imprint.core.errors import UserError
from imprint.core.machine import available_memory, gib

MAX_RATIO = 100  # arrays of numbers do not compress 100-fold; a zip bomb does (thousands-fold)


class NpzError(UserError):
    """A .npz file that is damaged, not of arrays, or would take more memory than this process has."""


def _npy_size(member: Any) -> int | None:
    """Bytes the array of an .npy member declares in its header (data plus header), or None if unreadable."""
    fmt = np.lib.format
    major, _ = fmt.read_magic(member)
    reader = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, _, dtype = reader(member)
    if dtype.hasobject:
        return None
    return int(np.prod(shape, dtype=object)) * dtype.itemsize + member.tell()


def checked_npz(path: str | os.PathLike, what: str = "embeddings file") -> Any:
    """``np.load(path)`` (no pickle) after checking every member's declared sizes; a NpzError otherwise."""
    path = Path(path)
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_size and info.file_size > MAX_RATIO * max(info.compress_size, 1) and \
                        info.file_size > 1 << 20:
                    raise NpzError(f"{path} is not a usable {what}: {info.filename} inflates from "
                                   f"{gib(info.compress_size)} to {gib(info.file_size)} (a zip bomb?)")
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        declared = _npy_size(member)
                    if declared is None:
                        raise NpzError(f"{path} is not a usable {what}: {info.filename} holds Python objects, "
                                       "not numbers or text (never unpickled)")
                    if declared != info.file_size:
                        raise NpzError(f"{path} is damaged: {info.filename} declares {declared} bytes but holds "
                                       f"{info.file_size}; write it again")
                total += info.file_size
    except NpzError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NpzError(f"{path} is not a readable {what} ({reason})") from None
    free = available_memory()
    if total > free:
        raise NpzError(f"{path} needs {gib(total)} of memory to read, but this process has {gib(free)} left; "
                       "free memory or use a memory-mapped store (imprint embed FOLDER -o STORE_DIR)")
    return np.load(path, allow_pickle=False)
