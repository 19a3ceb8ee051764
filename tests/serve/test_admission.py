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
