"""The machine imprint runs on: where torch runs (the device a setting names, checked to exist), how many threads
an encoder gets, and how much memory this process may still use.

Threads: on a small machine an encoder that asks for every core while another process runs spends its time
waiting for threads to be scheduled (measured on 2 cores under load: 5.8 images/s with torch's default two
threads, 28.7 with one). So the intra-op threads are the cores available to this process (its CPU affinity) less
the cores busy with other work right now (read from /proc/stat over a tenth of a second; the load average where
that is not available), at least one.

Memory: work that would exhaust it is refused up front in one line.
"""
from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING

from imprint.core.errors import UserError, quoted

if TYPE_CHECKING:
    import torch


class DeviceError(UserError):
    """A device that is not a torch device, or not on this machine."""


def resolve_device(device: object) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must name a device this machine has."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise DeviceError(f"device must be a word such as 'auto', 'cpu', 'cuda' or 'cuda:1'; got {quoted(device)}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {quoted(device)}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {quoted(device)}: this machine has no CUDA GPU that torch can use; use "
                              "--device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {quoted(device)}: this machine has {count} CUDA GPU(s) (cuda:0 to "
                              f"cuda:{count - 1})")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                       and torch.backends.mps.is_available()):
        raise DeviceError(f"device {quoted(device)}: MPS is not available on this machine; use --device cpu")
    return resolved


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # total, idle + iowait


def busy_cores(interval: float = 0.1) -> float:
    """Cores kept busy by everything running now (sampled over `interval` seconds), or the 1-minute load
    average where /proc/stat is not there."""
    try:
        total_before, idle_before = _cpu_times()
        time.sleep(interval)
        total_after, idle_after = _cpu_times()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    elapsed = max(1, total_after - total_before)
    return (os.cpu_count() or 1) * (1.0 - (idle_after - idle_before) / elapsed)


def idle_cores(busy: float | None = None) -> int:
    """Available cores not busy with other work, at least 1 (`busy`: cores in use, measured when not given;
    this process is idle when it asks, at start-up)."""
    cores = available_cores()
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, round(cores - busy + 0.25)))


def encoder_threads(requested: int | None = None) -> int:
    """Threads for running an image encoder on the CPU: `requested` if given, else the idle cores."""
    return max(1, requested) if requested else idle_cores()


def set_torch_threads(count: int) -> int:
    """Set torch's intra-op threads (and return the number set)."""
    import torch

    torch.set_num_threads(count)
    return count


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
