"""How much memory this process may still use, so work that would exhaust it is refused up front in one line."""
from __future__ import annotations

import os
import resource

from imprint.errors import UserError


class NotEnoughMemory(UserError, MemoryError):
    """Work refused up front because it would need more memory than this process has left."""


def need_memory(n_bytes: int, why: str) -> None:
    """Refuse up front, in one line, work that needs more memory than this process has left."""
    free = available_memory()
    if n_bytes > free:
        raise NotEnoughMemory(f"{why}: it needs about {gib(n_bytes)} of memory, and this process has {gib(free)} "
                              "left; use fewer support samples, or free memory")


def available_memory() -> int:
    """Bytes this process can still allocate: the memory the system reports available, bounded by this process's
    data and address-space limits (ulimit -d / -v) less what it already uses."""
    available = _field("/proc/meminfo", "MemAvailable") or _sysconf_available()
    for limit, used in ((resource.RLIMIT_DATA, _field("/proc/self/status", "VmData")),
                        (resource.RLIMIT_AS, _field("/proc/self/status", "VmSize"))):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            available = min(available, max(0, soft - used))
    return available


def _field(path: str, key: str) -> int:
    """A 'Key:  N kB' line of a /proc file, in bytes (0 where there is none)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _sysconf_available() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def gib(n_bytes: float) -> str:
    """A byte count in words for a message: '2.5 GiB', '300 MiB'."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"
