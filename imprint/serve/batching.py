"""Dynamic batching: the work of concurrent requests is done together by one worker thread, so many clients sending
one image each keep the encoder as busy as one client sending many, and the classifier scores them in one pass
(a pass costs about the same for one query as for a block of them: queries are scored in fixed-shape blocks)."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

MAX_BATCH = 64  # items done at once; a request with more is one batch of its own


class Batcher:
    """Runs `work` (a list of items -> a list of results, one each) on the items of as many waiting requests as fit
    in `max_batch`, in `workers` threads (so one batch's scoring overlaps the next one's encoding, and a batch of
    one image does not leave the other cores idle); `on_batch(size)` is told each batch's size (for metrics)."""

    def __init__(self, work: Callable[[list[Any]], Sequence[Any]], max_batch: int = MAX_BATCH, workers: int = 1,
                 on_batch: Callable[[int], None] | None = None, name: str = "imprint-batcher") -> None:
        self.work, self.max_batch, self.on_batch = work, max_batch, on_batch
        self.name, self.workers = name, max(1, workers)
        self._waiting: queue.Queue[tuple[list[Any], Future] | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self.start()

    def start(self) -> None:
        """Start the worker threads, where they are not running (again, after ``close``)."""
        if any(worker.is_alive() for worker in self._workers):
            return
        self._workers = [threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
                         for i in range(self.workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, items: list[Any]) -> Future:
        """A future of the results of `items`, in their order."""
        done: Future = Future()
        self._waiting.put((items, done))
        return done

    def close(self) -> None:
        for _ in self._workers:
            self._waiting.put(None)
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            batch, size = [first], len(first[0])
            while size < self.max_batch:  # whatever else is waiting now joins this batch
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._waiting.put(None)
                    break
                batch.append(more)
                size += len(more[0])
            self._do(batch, size)

    def _do(self, batch: list[tuple[list[Any], Future]], size: int) -> None:
        try:
            results = self.work([item for items, _ in batch for item in items])
        except Exception as exc:  # handed to every request of the batch, which answers it
            for _, done in batch:
                done.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(size)
        start = 0
        for items, done in batch:
            done.set_result(list(results[start:start + len(items)]))
            start += len(items)
