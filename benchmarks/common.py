"""Shared helpers for benchmarks: environment report, timing, peak memory in a fresh process."""
from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import time
from collections.abc import Callable

import numpy as np


def environment() -> str:
    """One markdown block naming the machine and library builds the figures come from."""
    import faiss
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    import os

    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    gpu_build = hasattr(faiss, "StandardGpuResources")
    faiss_build = f"GPU build, {faiss.get_num_gpus()} GPUs" if gpu_build else "CPU build"
    return (f"- CPU: {cpu}, {mp.cpu_count()} cores; GPU: {gpu}; OMP_WAIT_POLICY={wait}\n"
            f"- python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), faiss {faiss.__version__} "
            f"({faiss_build})")


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time over `repeat` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _anon_mib() -> float:
    """Anonymous resident memory (copies, not pages of memory-mapped files), where the system reports it."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("RssAnon")) / 1024
    except (OSError, StopIteration):
        return _rss_mib()


def _child(setup, run, repeat, queue) -> None:
    import threading

    state = setup()
    before = _anon_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the peak of anonymous memory, sampled every 5 ms
        while not done.wait(0.005):
            peak[0] = max(peak[0], _anon_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    best, result = timed(lambda: run(state), repeat)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _anon_mib())
    queue.put((best, peak[0] - before, result if isinstance(result, (int, float)) else None))


def run_isolated(setup: Callable[[], object], run: Callable[[object], object],
                 repeat: int = 1) -> tuple[float, float, float | None]:
    """(best seconds, peak extra anonymous MiB, numeric result) of run(setup()) in a fresh process.

    A fresh process per method keeps memory peaks and the thread pools of different libraries
    (OpenMP in scikit-learn and faiss, torch's own) from disturbing each other.
    `setup` and `run` must be picklable (module-level functions or partials): the child is spawned,
    since forking after OpenMP has started (scikit-learn, faiss) can hang.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(setup, run, repeat, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result
