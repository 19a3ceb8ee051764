"""A server that defends itself and the user's files: no acknowledged class change is lost when two servers share
a file, a user's own file is never replaced, pages of other origins and other host names are refused, tokens are
compared as bytes, memory and queue are bounded (503 with Retry-After, never a 500), and a full disk is a JSON 507.
Each test reproduces a defect found by an adversarial review (docs/reliability.md)."""
from __future__ import annotations

import base64
import io
import json
import resource
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import BAGS, EXAMPLES, images, served

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from imprint import ImprintClassifier  # noqa: E402
from imprint.core.errors import UserError  # noqa: E402
from imprint.serve.admission import Limits  # noqa: E402
from imprint.serve.app import ServeOptions, create_app  # noqa: E402
from imprint.serve.live import LiveClassifier, backup_path  # noqa: E402


def second_server(path, encoder, **options) -> TestClient:
    """Another server of the same file (as a second process or ASGI worker would be)."""
    live = LiveClassifier(path, ImprintClassifier.load(path), encoder)
    return TestClient(create_app(live, ServeOptions(**options)), base_url="http://localhost")


def test_two_servers_of_one_file_lose_no_acknowledged_change(tmp_path, encoder, fashion):
    first, path = served(tmp_path, encoder, fashion)
    second = second_server(path, encoder)
    coats = sorted((EXAMPLES / "coat").glob("*.png"))
    with first, second:
        assert first.post("/classes/bag/examples", files=images(BAGS[:4])).status_code == 200
        assert second.post("/classes/coat-again/examples", files=images(coats[:4])).status_code == 200
        # the second server read the first one's change before making its own, and predictions follow the file
        assert {"bag", "coat-again"} <= {c["name"] for c in first.get("/classes").json()["classes"]}
        errors = []

        def teach(client, name) -> None:
            for round_ in range(3):
                answer = client.post(f"/classes/{name}{round_}/examples", files=images(BAGS[4 + round_:6 + round_]))
                if answer.status_code != 200:
                    errors.append(answer.text)

        threads = [threading.Thread(target=teach, args=(client, name))
                   for client, name in ((first, "left"), (second, "right"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors
    saved = set(ImprintClassifier.load(path).classes_.tolist())
    assert {"bag", "coat-again"} | {f"{side}{i}" for side in ("left", "right") for i in range(3)} <= saved


def test_a_users_own_previous_file_is_never_replaced(tmp_path, encoder, fashion, capsys):
    _, path = served(tmp_path, encoder, fashion)
    mine = backup_path(path)
    mine.write_text("my notes, not a classifier\n")
    with pytest.raises(UserError, match="not a classifier file imprint wrote.*--read-only"):
        LiveClassifier(path, ImprintClassifier.load(path), encoder)
    from conftest import run

    code, _, err = run(capsys, "serve", path, "--port", 0)
    assert code == 2 and "move or rename that file" in err and len(err.strip().splitlines()) == 1
    mine.unlink()
    client = second_server(path, encoder)
    mine.write_text("made while serving\n")  # appears after the start: the change is refused, not made
    with client:
        refused = client.post("/classes/bag/examples", files=images(BAGS[:3]))
        assert refused.status_code == 409 and "move or rename" in refused.json()["error"]
    assert mine.read_text() == "made while serving\n" and "bag" not in ImprintClassifier.load(path).classes_
    mine.unlink()
    with client:  # a backup imprint wrote itself is replaced as before
        assert client.post("/classes/bag/examples", files=images(BAGS[:3])).status_code == 200
        assert client.post("/classes/bag/examples", files=images(BAGS[3:5])).status_code == 200
    assert len(ImprintClassifier.load(backup_path(path)).examples_.of("bag")) == 3


def test_pages_of_other_origins_and_other_host_names_are_refused(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion, allowed_origins=("http://localhost:3000",))
    with client:
        evil = {"Origin": "http://evil.example"}
        refused = client.post("/classes/csrf/examples", files=images(BAGS[:2]), headers=evil)
        assert refused.status_code == 403 and "--allow-origin" in refused.json()["error"]
        assert client.delete("/classes/coat", headers=evil).status_code == 403
        assert client.post("/predict", files=images(BAGS[:1]), headers=evil).status_code == 403
        assert client.post("/predict", files=images(BAGS[:1]), headers={"Origin": "null"}).status_code == 403
        assert client.post("/predict", files=images(BAGS[:1]),
                           headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.get("/classes", headers=evil).status_code == 200  # reads are not refused
        rebound = client.get("/classes", headers={"Host": "evil.example:8000"})  # DNS rebinding
        assert rebound.status_code == 400 and "--allow-host" in rebound.json()["error"]
        assert client.post("/predict", files=images(BAGS[:1]),
                           headers={"Origin": "http://localhost"}).status_code == 200  # the server's own page
        assert client.post("/predict", files=images(BAGS[:1]),
                           headers={"Origin": "http://localhost:3000"}).status_code == 200  # allowed
        assert client.get("/health", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert "csrf" not in ImprintClassifier.load(path).classes_


def test_host_names_follow_the_address_listened_on():
    from imprint.serve import check_origin, host_names

    assert set(host_names("127.0.0.1")) == {"localhost", "127.0.0.1", "::1"}
    assert "example.org" in host_names("127.0.0.1", ("Example.org",))
    everywhere = host_names("0.0.0.0")
    import socket

    assert {"localhost", "127.0.0.1", socket.gethostname().lower()} <= set(everywhere)
    with pytest.raises(UserError, match="not an origin"):
        check_origin("localhost:3000")
    assert check_origin("http://localhost:3000/") == "http://localhost:3000"


def test_tokens_are_compared_as_utf8_bytes_and_short_ones_refused(tmp_path, encoder, fashion, capsys, monkeypatch):
    from conftest import run

    from imprint.serve import read_token

    token_file = tmp_path / "token"
    token_file.write_text("ünïcödé-tökén-lång-genug\n", encoding="utf-8")
    token = read_token(token_file)
    client, path = served(tmp_path, encoder, fashion, token=token)
    with client:
        right = {"Authorization": b"Bearer " + token.encode("utf-8")}
        assert client.post("/classes/bag/examples", files=images(BAGS[:2]), headers=right).status_code == 200
        wrong = {"Authorization": b"Bearer " + token.replace("\u00e5", "a").encode("utf-8")}
        assert client.delete("/classes/bag", headers=wrong).status_code == 401
    for short in ("x", "fifteen-chars!!"):
        token_file.write_text(short + "\n")
        code, _, err = run(capsys, "serve", path, "--token-file", token_file, "--port", 0)
        assert code == 2 and "at least 16 characters" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("IMPRINT_SERVE_TOKEN", "short")
    with pytest.raises(UserError, match="at least 16"):
        read_token(None)


def png_16bit(side: int) -> bytes:
    """A 16-bit grey gradient: a few kilobytes on the wire, 2 bytes a pixel decoded (a bomb of bit depth)."""
    from PIL import Image

    values = (np.add.outer(np.arange(side), np.arange(side)) * (65535 // (2 * side))).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_image_that_decodes_larger_than_an_image_may_is_refused_by_its_header(tmp_path, encoder, fashion):
    limits = Limits(max_body_bytes=8 * 2**20, memory_bytes=64 * 2**20)  # an image may take 32 MB decoded
    client, _ = served(tmp_path, encoder, fashion, limits=limits)
    deep = png_16bit(2400)  # 5.8 million pixels in a few kilobytes: 44 MB to decode, at 16 bits and converted
    with client:
        refused = client.post("/predict", files=[("images", ("deep.png", deep, "image/png"))])
        assert refused.status_code == 413 and "decoded" in refused.json()["error"], refused.text
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200


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


class StreamedBody:
    """A request as an ASGI server hands it over: a declared length, the body in 64 KB chunks."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = {"content-type": "application/json", "content-length": str(len(body))}

    async def stream(self):
        for start in range(0, len(self.body), 65536):
            yield self.body[start:start + 65536]


def test_the_default_body_limit_and_a_json_body_read_without_three_copies(tmp_path, encoder, fashion):
    import asyncio

    from imprint.serve.uploads import read_images

    assert Limits().max_request_bytes == 100 * 2**20  # not 64 x 20 MB x 4/3 = 1.7 GB
    image = base64.b64encode(BAGS[0].read_bytes()).decode()
    padding = "A" * 2**20  # what a large image weighs on the wire
    body = json.dumps({"images": [image] + [padding] * 30}).encode()
    tracemalloc.start()
    found = asyncio.run(read_images(StreamedBody(body), Limits(max_images=64, max_image_bytes=2**20)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(found) == 31 and found[0][1] == BAGS[0].read_bytes()
    assert peak < 2.3 * len(body), peak / len(body)  # request.json() held 3.75x: chunks, body, text, strings


def test_a_json_body_nested_thousands_deep_is_a_400(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion)
    with client:
        deep = client.post("/predict", content=b"[" * 3000 + b"]" * 3000, headers={"content-type": "application/json"})
        assert deep.status_code == 400 and "nested" in deep.json()["error"]
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200


def test_a_full_disk_during_a_class_change_is_a_json_507_and_the_file_stays(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with client:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before), hard))  # a real EFBIG (Python ignores SIGXFSZ)
        try:
            full = client.post("/classes/bag/examples", files=images(BAGS[:3]))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert full.status_code == 507 and "disk is full" in full.json()["error"]
        assert client.get("/classes").json()["version"] == 1
        assert client.post("/classes/bag/examples", files=images(BAGS[:3])).status_code == 200
    assert ImprintClassifier.load(backup_path(path)).classes_.tolist() == sorted(set(fashion[1].tolist()))


@pytest.mark.parametrize("labels, unknown", [("words", "unknown"), ("numbers", -1)])
def test_the_unknown_label_cannot_name_a_taught_class(tmp_path, encoder, fashion, labels, unknown):
    X, y = fashion
    if labels == "numbers":
        y = np.unique(y, return_inverse=True)[1]
    clf = ImprintClassifier(method="simpleshot", reject="max_score").fit(X, y)
    with pytest.raises(UserError, match="unknown_label"):
        clf.add_classes(X[:3], np.asarray([unknown] * 3, dtype=y.dtype))
    with pytest.raises(UserError, match="unknown_label"):
        clf.add_examples(X[:3], np.asarray([unknown] * 3, dtype=y.dtype))
    assert unknown not in clf.classes_.tolist()
    ImprintClassifier(method="simpleshot").fit(X, y).add_classes(X[:3], np.asarray([unknown] * 3, dtype=y.dtype))
    if labels == "words":
        client, path = served(tmp_path, encoder, fashion, method="rejecting")
        with client:
            refused = client.post("/classes/unknown/examples", files=images(BAGS[:3]))
            assert refused.status_code == 409 and "unknown_label" in refused.json()["error"]
        assert "unknown" not in ImprintClassifier.load(path).classes_


def test_docs_favicon_and_the_examples_a_class_was_taught_with(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion)
    with client:
        docs = client.get("/docs").text
        assert "static/swagger-ui/swagger-ui-bundle.js" in docs and "https://" not in docs.replace(
            "https://fastapi", "")  # no CDN
        assert client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
        assert client.get("/static/swagger-ui/../page.html").status_code == 404
        assert client.get("/favicon.ico").headers["content-type"] == "image/png"
        client.post("/classes/bag/examples", files=images(BAGS[:3]))
        kept = client.get("/classes/bag/examples").json()
        assert kept["count"] == 3 and len(kept["thumbnails"]) == 3
        assert all(t.startswith("data:image/jpeg;base64,") for t in kept["thumbnails"])
        fitted = client.get("/classes/coat/examples").json()
        assert fitted["count"] is None and fitted["thumbnails"] == []
        assert client.get("/classes/nothing/examples").status_code == 404
    restored = ImprintClassifier.load(path).examples_  # the pictures are saved with the examples
    assert len(restored.thumbnails_of("bag")) == 3 and all(restored.thumbnails_of("bag"))
