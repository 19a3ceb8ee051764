"""Threads chosen for the machine: the cores this process may use, minus the ones other work keeps busy.

On a small machine an encoder that asks for every core while another process runs spends its time waiting
for threads to be scheduled (measured on 2 cores under load: 5.8 images/s with torch's default two threads,
28.7 with one). So the intra-op threads are the cores available to this process (its CPU affinity) less the
load of everything else (the 1-minute load average), at least one.
"""
from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def idle_cores(load: float | None = None) -> int:
    """Available cores not busy with other work, at least 1. `load` is the other work in cores (default: the
    1-minute load average, which this process has not yet added to when it calls this at start-up)."""
    cores = available_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, round(cores - load + 0.25)))


def encoder_threads(requested: int | None = None) -> int:
    """Threads for running an image encoder on the CPU: `requested` if given, else the idle cores."""
    return max(1, requested) if requested else idle_cores()


def set_torch_threads(count: int) -> int:
    """Set torch's intra-op threads (and return the number set)."""
    import torch

    torch.set_num_threads(count)
    return count
