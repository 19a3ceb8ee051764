"""Tests of ``imprint.serve.admission``: what a server takes on at once (``Limits``): a memory budget for request
bodies and decoded images, and a bounded queue of images to encode."""
from __future__ import annotations

import pytest
from conftest import BAGS, images, served

from imprint.serve.admission import Limits  # noqa: E402

pytest.importorskip("fastapi")


def test_a_full_memory_budget_answers_503_with_retry_after(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion)
    budget = client.app.state.budget
    with client:
        assert budget.reserve(budget.total - 2**16)  # requests in progress hold (almost) all of it
        busy = client.post("/predict", files=images(BAGS[:2]))
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert "busy" in busy.json()["error"]
        assert client.get("/health").status_code == 200  # reads hold no body: answered
        budget.release(budget.total - 2**16)
        assert client.post("/predict", files=images(BAGS[:2])).status_code == 200
    assert budget.used == 0  # every request gave back what it held


def test_a_full_queue_answers_503_with_retry_after(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion, limits=Limits(queue_images=4))
    queue = client.app.state.queue
    with client:
        with queue.taking(3):  # three images in progress: a request of two would pass the limit
            busy = client.post("/predict", files=images(BAGS[:2]))
            assert busy.status_code == 503 and 1 <= int(busy.headers["Retry-After"]) <= 60
        assert client.post("/predict", files=images(BAGS[:2])).status_code == 200
        big = client.post("/predict", files=images(BAGS[:6]))  # alone, a request larger than the queue still runs
        assert big.status_code == 200
    assert queue.taken == 0


def test_an_admitted_request_s_decode_goes_before_new_request_bodies():
    """While an image of a request in progress waits for memory, a new request's body is refused even where it
    would fit, and the waiting image gets the memory once it is freed: new requests cannot starve admitted ones."""
    import threading

    from imprint.serve.admission import MemoryBudget

    budget = MemoryBudget(100)
    assert budget.reserve(90)  # requests in progress hold most of it
    got = []
    decode = threading.Thread(target=lambda: got.append(budget.reserve(20, wait=60)))
    decode.start()
    while not budget.waiting:  # the decode is waiting for 20
        threading.Event().wait(0.01)
    assert not budget.reserve(5)  # 95 of 100 would fit, but a reservation waits: refused
    budget.release(90)
    decode.join(60)
    assert got == [True] and budget.used == 20 and budget.waiting == 0
    assert budget.reserve(5) and not budget.reserve(80)  # nobody waits: first come, as far as it fits
