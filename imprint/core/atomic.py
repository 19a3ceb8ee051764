"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Files get the permissions any new file gets (0666 minus the umask), not the private 0600 of a temporary
file, so a saved classifier or report can be shared as usual. A temporary file names the host and process
that writes it, so the leftovers of a writer that was killed (SIGKILL, power loss) are recognised and removed
by the next write of the same file, and never pile up.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

TEMPORARY = re.compile(r"\.(?P<name>.+)\.imprint-(?P<host>[^/]*)-(?P<pid>\d+)-[^.]+\.tmp")


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
                f"({_remedy(self.errno)})")


def _remedy(errno: int | None) -> str:
    import errno as codes

    if errno in (codes.ENOSPC, codes.EFBIG, codes.EDQUOT):
        return "free some space or choose another place"
    if errno in (codes.EACCES, codes.EPERM, codes.EROFS):
        return "choose a place you can write to"
    if errno in (codes.ENOTDIR, codes.EEXIST, codes.EISDIR):
        return "a file stands where a folder is needed, or the other way round: choose another path"
    return "choose another place or try again"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: leave its file alone
    return True


def sweep_leftovers(target: Path) -> int:
    """Remove temporary files of earlier writes of `target` whose writer (on this host) is no longer running;
    returns how many were removed."""
    removed, host = 0, _host()
    try:
        candidates = list(target.parent.glob(f".{glob.escape(target.name)}.imprint-*.tmp"))
    except OSError:
        return 0
    for path in candidates:
        match = TEMPORARY.fullmatch(path.name)
        if match and match["name"] == target.name and match["host"] == host and not _alive(int(match["pid"])):
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sweep: bool = True, durable: bool = True) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`. On failure the
    temporary file is removed, the earlier `path` (if any) is untouched, and a WriteError says so. With `sweep`,
    temporary files that killed writers left beside `path` are removed first. ``durable=False`` skips the fsync:
    only for files that carry their own checksum (a crash may then leave an empty or cut file, which its reader
    detects and recomputes)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write to {target}: it is a directory; give a file name")
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if sweep:
            sweep_leftovers(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.imprint-{_host()}-{os.getpid()}-",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            if durable:
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


def lock_file(path: str | os.PathLike) -> Path:
    """The hidden file beside `path` whose lock ``locked`` holds: ``.NAME.lock``."""
    target = Path(path)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (by a hidden lock file beside it, ``.NAME.lock``, which outlives the file's
    atomic replacements) across processes and across separate holders in one process; waits for a holder to
    release it."""
    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:  # Windows: a lock on the file's first byte, retried as flock would wait
            import msvcrt
            import time

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
