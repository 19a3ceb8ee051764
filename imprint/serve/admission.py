"""What a server takes on at once (``Limits``): a memory budget for request bodies and decoded images, and a
bounded queue of images to encode. Past either, a request is refused at once with 503 and a ``Retry-After`` that
says when to come back, so the server stays responsive (``/health`` included) and never runs out of memory."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may carry, and what the server holds at once."""

    max_images: int = 64
    max_image_bytes: int = 20 * 2**20
    max_body_bytes: int = 100 * 2**20
    memory_bytes: int = 2**30  # request bodies and decoded images held at once
    queue_images: int = 256  # images in progress at once (read, decoding, waiting for the encoder)

    @property
    def max_request_bytes(self) -> int:
        """The body limit: what `max_images` images of `max_image_bytes` need base64-encoded (4/3) with the form's
        own text, capped at `max_body_bytes`."""
        return min(self.max_body_bytes, self.max_images * self.max_image_bytes * 4 // 3 + 2**20)

    @property
    def max_decoded_bytes(self) -> int:
        """The memory one image may take decoded (pixels at their bit depth, and its conversions): half the budget,
        so that two decodes always fit."""
        return self.memory_bytes // 2

    def body_bytes(self, length: int | None) -> int:
        """Memory a body of `length` bytes takes while it is read and parsed (JSON: the text and its strings), at
        most; a body of unknown length may grow to the limit."""
        return 2 * (self.max_request_bytes if length is None else min(length, self.max_request_bytes)) + 2**16

    def check(self) -> None:
        """Refuse limits that cannot work together, in one line naming the flags."""
        from imprint.core.errors import UserError

        if not 1 <= self.max_images <= 10_000 or not 0 < self.max_image_bytes <= 2**30:
            raise UserError("--max-images is 1 to 10000 and --max-image-mb above 0 and at most 1024")
        if not 0 < self.max_body_bytes <= 2**34:
            raise UserError("--max-request-mb must be above 0 and at most 16384")
        if self.body_bytes(None) > self.memory_bytes // 2:
            raise UserError(f"--memory-mb {self.memory_bytes // 2**20} cannot hold a request body of "
                            f"--max-request-mb {self.max_request_bytes // 2**20} while it is parsed (twice its size) "
                            f"and an image decoding: give at least {4 * self.max_request_bytes // 2**20 + 1} MB, or "
                            "a smaller --max-request-mb")
        if self.queue_images < 1:
            raise UserError("--max-queue must be at least 1 image")


class Overloaded(Exception):
    """The server is busy: answered with 503 and ``Retry-After`` (seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class MemoryBudget:
    """Bytes that the requests in progress may hold at once; a reservation past it waits up to `wait` seconds
    for others to finish, then is refused. Work already taken on goes first: while a reservation waits (an
    image of an admitted request, to decode), one that would not wait (a new request's body) is refused, so a
    stream of new requests cannot starve the ones in progress until they too are turned away."""

    def __init__(self, total: int) -> None:
        self.total, self.used, self.waiting = total, 0, 0
        self._freed = threading.Condition()

    def reserve(self, nbytes: int, wait: float = 0.0) -> bool:
        """Hold `nbytes` of the budget; False where they are not free within `wait` seconds (at once, with no
        wait, while another reservation is waiting)."""
        deadline = time.monotonic() + wait
        with self._freed:
            if wait <= 0:
                if self.waiting or self.used + nbytes > self.total:
                    return False
            else:
                self.waiting += 1
                try:
                    while self.used + nbytes > self.total:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._freed.wait(left):
                            return False
                finally:
                    self.waiting -= 1
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
