"""What a server takes on at once: a memory budget for request bodies and decoded images, and a bounded queue of
images to encode. Past either, a request is refused at once with 503 and a ``Retry-After`` that says when to come
back, so the server stays responsive (``/health`` included) and never runs out of memory under load."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Overloaded(Exception):
    """The server is busy: answered with 503 and ``Retry-After`` (seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class MemoryBudget:
    """Bytes that the requests in progress may hold at once; a reservation past it waits up to `wait` seconds
    for others to finish, then is refused."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._freed = threading.Condition()

    def reserve(self, nbytes: int, wait: float = 0.0) -> bool:
        """Hold `nbytes` of the budget; False where they are not free within `wait` seconds."""
        deadline = time.monotonic() + wait
        with self._freed:
            while self.used + nbytes > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._freed.wait(left):
                    return False
            self.used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._freed:
            self.used -= nbytes
            self._freed.notify_all()

    @contextmanager
    def held(self, nbytes: int, what: str, wait: float = 0.0) -> Iterator[None]:
        """`nbytes` held for the block, or Overloaded naming `what` needed them."""
        if not self.reserve(nbytes, wait):
            raise Overloaded(f"the server is busy: {what} needs {nbytes / 2**20:.0f} MB of its "
                             f"{self.total / 2**20:.0f} MB memory budget, which requests in progress hold; retry "
                             "shortly", 1)
        try:
            yield
        finally:
            self.release(nbytes)


class ImageQueue:
    """Images taken on and not yet answered (read, decoded or waiting for the encoder), at most `limit`: a
    request that would pass it is refused, unless nothing else is in progress (so one large request always
    runs). `Retry-After` comes from the rate images have been answered at."""

    def __init__(self, limit: int) -> None:
        self.limit, self.taken = limit, 0
        self._lock = threading.Lock()
        self._rate = 50.0  # images answered per second, until measured

    def check(self) -> None:
        """Refuse before a request's body is read when the queue is already full."""
        if self.taken >= self.limit:
            raise self._overloaded(1)

    @contextmanager
    def taking(self, count: int) -> Iterator[None]:
        start = time.perf_counter()
        with self._lock:
            if self.taken and self.taken + count > self.limit:
                raise self._overloaded(count)
            self.taken += count
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            with self._lock:
                self.taken -= count
                if seconds > 0:  # a moving average of what the server gets through
                    self._rate = 0.8 * self._rate + 0.2 * max(count / seconds, 1.0)

    def _overloaded(self, count: int) -> Overloaded:
        wait = min(60, max(1, math.ceil(self.taken / self._rate)))
        return Overloaded(f"the server is busy: {self.taken} images are in progress and it takes at most "
                          f"{self.limit} at once; retry in {wait} s", wait)
