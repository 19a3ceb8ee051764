"""Threads chosen for the machine: the cores this process may use, minus the ones other work keeps busy.

On a small machine an encoder that asks for every core while another process runs spends its time waiting
for threads to be scheduled (measured on 2 cores under load: 5.8 images/s with torch's default two threads,
28.7 with one). So the intra-op threads are the cores available to this process (its CPU affinity) less the
cores busy with other work right now (read from /proc/stat over a tenth of a second; the load average where
that is not available), at least one.
"""
from __future__ import annotations

import os
import time


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
