"""Run a grid: embed each (encoder, dataset) once, then evaluate cells in parallel, resumably.

Layout of the output folder: ``config.json`` (the validated config), ``manifest.json`` (this grid's
cells in order), ``embeddings/`` (one file per encoder and dataset, for the workers), ``cells/KEY.json``
(one finished cell each, written atomically the moment it finishes) and ``failed/KEY.json``. A rerun
skips every cell whose file exists, so an interrupted grid loses no finished cell. Each cell runs on one
thread, so results do not depend on the number of workers.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from imprint.core.atomic import atomic_write_bytes
from imprint.core.errors import UserError
from imprint.data.tasks import resolve_task
from imprint.grid.config import GridBase, import_plugins
from imprint.grid.data import EmbeddedDataset, embed_dataset, unknown_test_images
from imprint.grid.evaluate import evaluate_cell
from imprint.grid.expand import Cell, expand
from imprint.grid.manifest import MANIFEST
from imprint.grid.protocols import PROTOCOLS
from imprint.io.cache import EmbeddingCache


class GridError(UserError):
    """Cells that failed; the finished ones are kept and a rerun retries only the failed ones."""


@dataclass
class GridRun:
    planned: int
    skipped: int
    ran: int


LEAK_THRESHOLD = 0.98  # embedding cosine from which a test image counts as a copy of a pool image


def is_grid_folder(path: Path) -> bool:
    """Whether `path` is a results folder ``imprint grid`` wrote (its manifest lists cells)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("cells"), list)


def read_cell(out: Path, key: str) -> dict[str, Any] | None:
    """The finished cell `key` of the grid in `out`, or None when it is not there or its file is not a cell's
    (damaged or edited: the cell is then run again, never reported from it)."""
    try:
        payload = json.loads((Path(out) / "cells" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("key") != key or not isinstance(payload.get("accuracy"),
                                                                                      (int, float)):
        return None
    return payload


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=1, default=str) + "\n").encode())


def _data_file(out: Path, cell: Cell, config: GridBase) -> Path:
    far = [d.model_dump() for d in _far_datasets(cell, config)]
    text = json.dumps([cell.encoder, cell.dataset.model_dump()] + ([far] if far else [])
                      + (["zero_shot"] if config.zero_shot else []) + ([cell.contents] if cell.contents else []),
                      sort_keys=True)
    return out / "embeddings" / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"


@contextmanager
def one_thread() -> Iterator[None]:
    """Single-threaded numpy/BLAS and torch, so a cell's floating-point result is the same everywhere."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


_loaded: dict[Path, EmbeddedDataset] = {}


def _worker_start(plugins: list[str]) -> None:
    """Worker initialiser: Ctrl-C is the parent's to handle (it stops the grid cleanly); plug-ins registered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_plugins(plugins)


def _evaluate_from_file(cell: Cell, data_file: Path) -> dict[str, Any]:
    """Worker entry point: load (once per process) the embeddings a cell needs, then evaluate it."""
    if data_file not in _loaded:
        _loaded.clear()
        _loaded[data_file] = EmbeddedDataset.load(data_file)
    with one_thread():
        return evaluate_cell(cell, _loaded[data_file])


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


# Starting worker processes costs seconds (two spawned workers import torch and scikit-learn in 7.5 s on 2 cores,
# while this process waits), so with the default number of workers the first cells run here, timed, and the pool
# starts only once the cells left would take longer than this in this process: a small grid never pays for it.
POOL_AFTER_S = 20.0


class _Progress:
    """A progress bar whose time estimate starts after the first cells (worker start-up is not a cell's cost)."""

    def __init__(self, total: int, warmup: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc="cells", unit="cell", disable=not enabled,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.warmup, self.started = max(1, warmup), None

    def update(self) -> None:
        self.bar.update()
        done = self.bar.n
        if done == self.warmup:
            self.started = time.monotonic()
        elif self.started is not None and done > self.warmup:
            per_cell = (time.monotonic() - self.started) / (done - self.warmup)
            left = per_cell * (self.bar.total - done)
            self.bar.set_postfix_str(f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left",
                                     refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_grid(config: GridBase, out: str | Path, *, workers: int | None = None,
             cache: EmbeddingCache | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> GridRun:
    """Run every cell of `config` not already finished in `out`; returns what was planned, skipped and run.
    `workers` processes run the cells; by default as many as there are cores, started once the cells left would
    take more than POOL_AFTER_S in this process (each cell runs on one thread: the same numbers either way)."""
    out = Path(out)
    expansion = expand(config)
    runs = expansion.runs
    _write_json(out / "config.json", config.model_dump(mode="json"))
    _write_json(out / MANIFEST, {"name": config.name,
                                 "cells": [{"key": c.key, "variant": c.variant, "requested": c.requested}
                                           for c in expansion.cells]})
    todo = [c for c in runs if read_cell(out, c.key) is None]
    log(f"grid {config.name}: {expansion.summary()}; {len(runs) - len(todo)} already done, {len(todo)} to run")
    failures: list[str] = []
    lock = threading.Lock()
    when_slow = workers is None
    workers = min(workers or default_workers(), max(1, len(todo)))
    bar = _Progress(len(todo), workers, progress)

    def finished(cell: Cell, future: Future) -> None:
        if future.cancelled():  # interrupted before it started: a rerun will run it
            return
        try:
            error = future.exception()
        except CancelledError:
            return
        if isinstance(error, (KeyboardInterrupt, BrokenProcessPool)):  # stopped, not failed: a rerun runs it
            return
        with lock:
            if error is None:
                _write_json(out / "cells" / f"{cell.key}.json", future.result())
                (out / "failed" / f"{cell.key}.json").unlink(missing_ok=True)
            else:
                failures.append(f"{cell.variant} on {'/'.join(cell.group)} seed {cell.seed}: {error}")
                _write_json(out / "failed" / f"{cell.key}.json", {"cell": cell.identity(), "error": str(error)})
            bar.update()

    def start_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start, initargs=(list(config.plugins),))

    pool = start_pool() if workers > 1 and not when_slow else None
    submitted: list[Future] = []
    encoders: dict[str, Any] = {}
    here, here_seconds = 0, 0.0  # cells run in this process, and their time
    try:
        for data_file, group in _by_data(out, todo, config):
            if not data_file.is_file():
                _prepare(group[0], data_file, config, cache, encoders, log)
            for cell in group:
                if pool is None and workers > 1 and here and \
                        here_seconds / here * (len(todo) - here) > POOL_AFTER_S:
                    pool = start_pool()
                if pool is None:
                    future: Future = Future()
                    started = time.perf_counter()
                    try:
                        future.set_result(_evaluate_from_file(cell, data_file))
                    except Exception as error:  # recorded per cell; the others go on
                        future.set_exception(error)
                    here, here_seconds = here + 1, here_seconds + time.perf_counter() - started
                    finished(cell, future)
                else:
                    submitted.append(pool.submit(_evaluate_from_file, cell, data_file))
                    submitted[-1].add_done_callback(lambda f, c=cell: finished(c, f))
        wait(submitted)
    finally:  # on an interrupt, cells not yet started are cancelled; finished ones are already on disk
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if failures:
        raise GridError(f"{len(failures)} of {len(todo)} cell(s) failed (details in {out / 'failed'}); "
                        f"first: {failures[0]}")
    return GridRun(len(runs), len(runs) - len(todo), len(todo))


def _far_datasets(cell: Cell, config: GridBase) -> list:
    """For a protocol with unknown images (open set): the other datasets whose test images are unknown to this
    cell's tasks."""
    if not PROTOCOLS.get(config.protocol).uses_unknown_datasets:
        return []
    return [d for d in config.unknown_datasets if d.label != cell.dataset.label]


def _by_data(out: Path, cells: list[Cell], config: GridBase) -> list[tuple[Path, list[Cell]]]:
    groups: dict[Path, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(_data_file(out, cell, config), []).append(cell)
    return list(groups.items())


def _warn_of_leaks(data: Any, label: str) -> None:
    """Warn when test images of a dataset are near copies of its pool images (which support sets come from):
    every accuracy of it would be inflated. Embeddings alone judge here, so the bar is higher than inspect's
    (at inspect's 0.92, MNIST digits that merely look alike pass it)."""
    from imprint.analysis.inspection.duplicates import find_duplicates

    pool, test = data.X[~data.is_test], data.X[data.is_test]
    pairs = find_duplicates(pool, None, threshold=LEAK_THRESHOLD, pixel_threshold=1.0, other=test)
    if pairs:
        warnings.warn(f"{label}: {len({p.second for p in pairs})} test image(s) are near copies of support-pool "
                      f"images (embedding cosine >= {LEAK_THRESHOLD}); its accuracies may be inflated. 'imprint "
                      "inspect' on its folders lists the pairs", stacklevel=2)


def _prepare(cell: Cell, data_file: Path, config: GridBase, cache: EmbeddingCache | None,
             encoders: dict[str, Any], log: Callable[[str], None]) -> None:
    """Embed the cell's dataset (through the cache) and save it for the workers; `encoders` keeps the
    current encoder loaded between datasets."""
    from imprint.encoders import create_encoder

    if cell.encoder not in encoders:
        encoders.clear()  # one encoder in memory at a time
        encoders[cell.encoder] = create_encoder(cell.encoder, device=config.device, runtime=config.runtime)
    log(f"embeddings of {cell.dataset.label} with {cell.encoder} (from the cache where there)")
    data = embed_dataset(encoders[cell.encoder], cell.dataset, cache)
    _warn_of_leaks(data, cell.dataset.label)
    far = _far_datasets(cell, config)
    if far:
        log(f"unknown test images of {', '.join(d.label for d in far)} with {cell.encoder}")
        data.far = unknown_test_images(encoders[cell.encoder], far, cache)
    if config.zero_shot:
        from imprint.encoders.open_clip_backend import class_name_proxies

        log(f"zero-shot text embeddings of the {len(data.class_names)} class names of {cell.dataset.label}")
        data.text = class_name_proxies(encoders[cell.encoder], data.class_names)
    for task in config.task_splits:  # a task naming a missing class fails here, before its cells run
        resolve_task(task, data.class_names, cell.dataset.label)
    data.save(data_file)
