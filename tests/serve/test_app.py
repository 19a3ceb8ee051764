"""Tests of ``imprint.serve.app``: the HTTP service: predict images, list, teach and remove classes, health and
Prometheus metrics, and the page at ``/`` that does it all from a browser."""
from __future__ import annotations

import base64
import json
import resource
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import BAGS, EXAMPLES, images, served

from imprint import ImprintClassifier  # noqa: E402
from imprint.core.errors import UserError  # noqa: E402
from imprint.serve.admission import Limits  # noqa: E402
from imprint.serve.live import (
    backup_path,  # noqa: E402
)

pytest.importorskip("fastapi")


class StreamedBody:
    """A request as an ASGI server hands it over: a declared length, the body in 64 KB chunks."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = {"content-type": "application/json", "content-length": str(len(body))}

    async def stream(self):
        for start in range(0, len(self.body), 65536):
            yield self.body[start:start + 65536]


def test_a_class_taught_by_example_is_used_by_the_next_prediction(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion)
    with client:
        before = client.post("/predict", files=images(BAGS[:4])).json()
        assert before["version"] == 1 and all(p["label"] != "bag" for p in before["predictions"])
        taught = client.post("/classes/bag/examples", files=images(BAGS[4:12]))
        assert taught.status_code == 200 and taught.json()["version"] == 2
        after = client.post("/predict", json={"images": [base64.b64encode(p.read_bytes()).decode()
                                                          for p in BAGS[:4]]}).json()
        assert after["version"] == 2 and [p["label"] for p in after["predictions"]].count("bag") >= 3
        first = after["predictions"][0]
        assert {"label", "probability", "top"} <= set(first) and first["unknown_score"] is None
        listed = client.get("/classes").json()
        assert {"name": "bag", "count": 8, "proxies": 1} in listed["classes"] and listed["version"] == 2
        more = client.post("/classes/bag/examples", files=images(BAGS[12:14])).json()
        assert more["version"] == 3 and {"name": "bag", "count": 10, "proxies": 1} in more["classes"]
    # saved as it changed, the replaced file kept; a restart serves what was last written
    restarted = ImprintClassifier.load(path)
    assert "bag" in restarted.classes_ and len(restarted.examples_.of("bag")) == 10
    assert len(ImprintClassifier.load(backup_path(path)).examples_.of("bag")) == 8


def test_a_class_from_a_fit_that_kept_its_examples_gets_more(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion, keep_examples=True)
    with client:
        counts = {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}
        more = client.post("/classes/coat/examples", files=images(BAGS[:2]))
        assert more.status_code == 200
        assert {c["name"]: c["count"] for c in more.json()["classes"]}["coat"] == counts["coat"] + 2
    assert len(ImprintClassifier.load(path).examples_.of("coat")) == counts["coat"] + 2


def test_predictions_come_in_the_order_sent_with_the_top_classes(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion)
    order = [EXAMPLES / "trouser" / "0.png", EXAMPLES / "sneaker" / "0.png", EXAMPLES / "trouser" / "1.png"]
    order = [p if p.exists() else sorted(p.parent.glob("*.png"))[0] for p in order]
    with client:
        answer = client.post("/predict?top_k=2", files=images(order)).json()["predictions"]
    assert [p["label"] for p in answer] == ["trouser", "sneaker", "trouser"]
    assert all(len(p["top"]) == 2 and p["top"][0]["label"] == p["label"] for p in answer)


def test_a_rejecting_classifier_answers_with_the_unknown_score(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion, method="rejecting")
    with client:
        answer = client.post("/predict", files=images(BAGS[:2] + [EXAMPLES / "coat" / p.name for p in
                                                                  sorted((EXAMPLES / "coat").glob("*.png"))[:1]]))
    found = answer.json()["predictions"]
    assert all(isinstance(p["unknown_score"], float) and isinstance(p["accepted"], bool) and p["threshold"]
               for p in found)
    assert found[2]["accepted"] and found[2]["label"] == "coat"


def test_removing_a_class_and_the_heads_that_cannot(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion)
    with client:
        assert client.post("/classes/bag/examples", files=images(BAGS[:5])).status_code == 200
        gone = client.delete("/classes/bag")
        assert gone.status_code == 200 and "bag" not in [c["name"] for c in gone.json()["classes"]]
        assert client.delete("/classes/bag").status_code == 404
        assert client.get("/classes").json()["can_remove"] is True
    assert "bag" not in ImprintClassifier.load(path).classes_
    (tmp_path / "gda").mkdir()
    gda, _ = served(tmp_path / "gda", encoder, fashion, method="gda")
    with gda:
        assert gda.get("/classes").json()["can_remove"] is False
        refused = gda.delete("/classes/coat")
        assert refused.status_code == 409 and "mahalanobis" in refused.json()["error"]
        assert gda.post("/classes/bag/examples", files=images(BAGS[:3])).status_code == 200  # adding is exact


@pytest.mark.parametrize("request_args, status, words", [
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
    ({"json": {"images": []}}, 400, "no images"),
    ({"json": {"pictures": ["x"]}}, 400, "list of base64"),
    ({"json": {"images": ["@@not base64@@"]}}, 400, "not valid base64"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"files": [("images", ("a.png", b"GIF89a not really", "image/png"))]}, 422, "image 1 (a.png)"),
    ({"files": [("other", ("a.png", b"x", "image/png"))]}, 400, "named 'images'"),
    ({"files": [("images", ("a.png", b"x" * 3000, "image/png"))]}, 413, "at most 2048"),
    ({"files": [("images", (f"{i}.png", b"x", "image/png")) for i in range(4)]}, 413, "at most 3"),
])
def test_bad_requests_get_a_4xx_that_names_the_problem_and_the_server_keeps_serving(
        tmp_path, encoder, fashion, request_args, status, words):
    client, _ = served(tmp_path, encoder, fashion, limits=Limits(max_images=3, max_image_bytes=2048))
    with client:
        answer = client.post("/predict", **request_args)
        assert answer.status_code == status and words in answer.json()["error"], answer.json()
        assert "\n" not in answer.json()["error"]
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200  # and serves the next one
        assert client.get("/health").json()["status"] == "ok"


def test_a_body_over_the_limit_is_refused_declared_or_chunked(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion, limits=Limits(max_images=1, max_image_bytes=1024))
    limit = Limits(max_images=1, max_image_bytes=1024).max_request_bytes
    with client:
        declared = client.post("/predict", content=b"x" * (limit + 1), headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "at most" in declared.json()["error"]
        chunks = (b"x" * 65536 for _ in range(limit // 65536 + 2))  # no length: sent chunked
        chunked = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200


def test_class_changes_are_refused_clearly(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion)
    with client:
        fitted = client.post("/classes/coat/examples", files=images(BAGS[:2]))
        assert fitted.status_code == 409 and "imprinted by fit" in fitted.json()["error"]
        for name in ("%20bag", "x" * 101, "tab%09here"):
            assert client.post(f"/classes/{name}/examples", files=images(BAGS[:1])).status_code == 422
        assert client.delete("/classes/no-such-class").json() == {"error": "no class named 'no-such-class'"}
        bad = client.post("/predict?top_k=0", files=images(BAGS[:1]))
        assert bad.status_code == 422 and "top_k" in bad.json()["error"]
        assert client.get("/nowhere").status_code == 404
    assert ImprintClassifier.load(path).classes_.tolist().count("bag") == 0


def test_read_only_and_token(tmp_path, encoder, fashion):
    client, path = served(tmp_path, encoder, fashion, read_only=True)
    before = path.read_bytes()
    with client:
        assert client.post("/classes/bag/examples", files=images(BAGS[:2])).status_code == 403
        assert client.delete("/classes/coat").status_code == 403
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200
    assert path.read_bytes() == before and not backup_path(path).exists()
    (tmp_path / "t").mkdir()
    client, path = served(tmp_path / "t", encoder, fashion, token="s3cret-token-of-24-chars")
    with client:
        assert client.post("/classes/bag/examples", files=images(BAGS[:2])).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.delete("/classes/coat", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret-token-of-24-chars"}
        assert client.post("/classes/bag/examples", files=images(BAGS[:2]), headers=right).status_code == 200
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200  # predicting needs none


def test_health_metrics_page_and_openapi(tmp_path, encoder, fashion):
    client, _ = served(tmp_path, encoder, fashion)
    with client:
        client.post("/predict", files=images(BAGS[:3]))
        client.post("/predict", json={"images": ["@@"]})
        assert client.get("/health").json() == {"status": "ok", "version": 1, "classes": 9,
                                                "encoder": "timm:tf_efficientnet_lite0",
                                                "runtime": encoder.runtime_id}
        metrics = client.get("/metrics").text
        assert 'imprint_requests_total{method="POST",route="/predict",status="200"} 1.0' in metrics
        assert 'imprint_errors_total{route="/predict",status="400"} 1.0' in metrics
        assert "imprint_request_seconds_bucket" in metrics and "imprint_encoder_batch_images_sum 3.0" in metrics
        page = client.get("/")
        assert page.status_code == 200 and "Teach a class by example" in page.text
        spec = client.get("/openapi.json").json()
        assert {"/predict", "/classes", "/classes/{name}/examples", "/classes/{name}", "/health",
                "/metrics"} <= set(spec["paths"])
        assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]


def test_predictions_during_changes_see_one_version_whole(tmp_path, encoder, fashion):
    """Concurrent predictions while a class is taught and removed again and again: every answer names only
    classes of the version it reports."""
    client, _ = served(tmp_path, encoder, fashion)
    payload = {"images": [base64.b64encode(p.read_bytes()).decode() for p in BAGS[:6]]}
    seen, failures = [], []
    with client:
        classes_of = {1: set(client.get("/classes").json()["classes"][i]["name"] for i in range(9))}

        def change() -> None:
            for _ in range(4):
                taught = client.post("/classes/bag/examples", files=images(BAGS[6:10])).json()
                classes_of[taught["version"]] = {c["name"] for c in taught["classes"]}
                gone = client.delete("/classes/bag").json()
                classes_of[gone["version"]] = {c["name"] for c in gone["classes"]}

        def predict() -> None:
            for _ in range(6):
                answer = client.post("/predict?top_k=10", json=payload)
                if answer.status_code != 200:
                    failures.append(answer.text)
                    continue
                body = answer.json()
                seen.append((body["version"], {t["label"] for p in body["predictions"] for t in p["top"]}))

        threads = [threading.Thread(target=change)] + [threading.Thread(target=predict) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not failures and len(seen) == 18
    assert all(labels <= classes_of[version] for version, labels in seen)
    assert len(classes_of) == 9  # versions 1..9


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
