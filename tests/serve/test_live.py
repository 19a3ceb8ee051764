"""Tests of ``imprint.serve.live``: a classifier being served and taught."""
from __future__ import annotations

import threading

import pytest
from conftest import BAGS, EXAMPLES, images, served
from fastapi.testclient import TestClient  # noqa: E402

from imprint import ImprintClassifier  # noqa: E402
from imprint.core.errors import UserError  # noqa: E402
from imprint.serve.app import ServeOptions, create_app  # noqa: E402
from imprint.serve.live import LiveClassifier, backup_path  # noqa: E402

pytest.importorskip("fastapi")


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
