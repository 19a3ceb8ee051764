"""Tests of ``imprint.serve``: serve a classifier over HTTP and teach it new classes by example while it runs
(``imprint serve``)."""
from __future__ import annotations

import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import BAGS, EXAMPLES, headless_browser, requested_urls, run

from imprint import ImprintClassifier
from imprint.core.errors import UserError  # noqa: E402

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def nine_classes(tmp_path_factory) -> Path:
    """A classifier of the bundled classes but 'bag' (simpleshot: a head that can forget classes)."""
    folder = tmp_path_factory.mktemp("nine")
    for source in EXAMPLES.iterdir():
        if source.is_dir() and source.name != "bag":
            shutil.copytree(source, folder / "images" / source.name)
    path = folder / "clf.safetensors"
    assert run_cli("fit", folder / "images", "-o", path, "--preset", "simpleshot", "--quiet") == 0
    return path


def run_cli(*argv) -> int:
    from imprint.cli import main

    return main([str(a) for a in argv])


def start_server(path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`imprint serve` on a free port of 127.0.0.1: (process, base URL) once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "imprint.cli", "serve", str(path), "--port", "0", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
            return process, found.group(1)
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"imprint serve did not start: {line}")


def files(paths) -> list:
    return [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]


def noisy_png(side: int, seed: int) -> bytes:
    """A photo-sized PNG of noise: costly to decode, as camera images are."""

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_server_killed_during_class_changes_leaves_the_old_or_the_new_classifier(tmp_path, nine_classes):
    path = tmp_path / "clf.safetensors"
    shutil.copy(nine_classes, path)
    rng = random.Random(0)
    for attempt in range(3):
        before = set(ImprintClassifier.load(path).classes_.tolist())
        process, url = start_server(path)
        name = f"bag{attempt}"

        def teach(name=name, url=url) -> None:
            try:
                httpx.post(f"{url}classes/{name}/examples", files=files(BAGS[:6]), timeout=60)
            except httpx.HTTPError:
                pass  # killed mid-request
        sender = threading.Thread(target=teach)
        sender.start()
        time.sleep(rng.uniform(0.0, 0.4))
        process.kill()
        process.wait()
        sender.join()
        after = set(ImprintClassifier.load(path).classes_.tolist())  # loads: never a half-written file
        assert after in (before, before | {name}), (before, after)
    process, url = start_server(path)
    try:
        listed = httpx.get(f"{url}classes", timeout=30).json()
        assert {c["name"] for c in listed["classes"]} == set(ImprintClassifier.load(path).classes_.tolist())
    finally:
        process.kill()
        process.wait()


def test_serve_refuses_mistakes_in_one_line_before_loading_anything(tmp_path, nine_classes, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        code, _, err = run(capsys, "serve", nine_classes, "--port", port)
    finally:
        busy.close()
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    code, _, err = run(capsys, "serve", nine_classes, "--port", 70000)
    assert code == 2 and "not a port number" in err
    code, _, err = run(capsys, "serve", tmp_path / "missing.safetensors", "--port", 0, "--read-only")
    assert code == 2 and "missing.safetensors" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "token").write_text("short\n")
    code, _, err = run(capsys, "serve", nine_classes, "--token-file", tmp_path / "token")
    assert code == 2 and "at least 16 characters" in err


def test_the_page_teaches_a_class_and_the_next_prediction_uses_it(tmp_path, nine_classes):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "clf.safetensors"
    shutil.copy(nine_classes, path)
    process, url = start_server(path)
    browser = headless_browser(offline=True)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "9 classes, version 1" in b.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "classify-input").send_keys("\n".join(str(p) for p in BAGS[:3]))
        labels = lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, "#results .label")]  # noqa: E731
        wait.until(lambda b: len(labels(b)) == 3)
        assert "bag" not in labels(browser)
        browser.find_element(By.ID, "teach-name").send_keys("bag")
        browser.find_element(By.ID, "teach-input").send_keys("\n".join(str(p) for p in BAGS[3:11]))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#teach-thumbs img")) == 8)
        browser.find_element(By.ID, "teach-button").click()
        wait.until(lambda b: "Taught" in b.find_element(By.ID, "message").text)
        wait.until(lambda b: b.find_element(By.ID, "results").get_attribute("data-version") == "2")
        assert labels(browser).count("bag") >= 2  # the very next prediction, no training step
        assert "10 classes, version 2" in browser.find_element(By.ID, "status").text
        shot = os.environ.get("IMPRINT_SCREENSHOT")  # docs/figures/serve_page.png is made this way
        if shot:
            browser.save_screenshot(shot)
        rows = browser.find_elements(By.CSS_SELECTOR, "#classes tr")
        bag_row = next(r for r in rows if r.find_element(By.TAG_NAME, "td").text == "bag")
        bag_row.find_element(By.CSS_SELECTOR, "button.link").click()  # the examples it was taught with
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#classes tr.examples img")) == 8)
        assert all(img.get_attribute("naturalWidth") != "0"
                   for img in browser.find_elements(By.CSS_SELECTOR, "#classes tr.examples img"))
        bag_row.find_element(By.CSS_SELECTOR, "button.quiet").click()
        wait.until(lambda b: "Remove the class" in b.switch_to.alert.text)
        browser.switch_to.alert.dismiss()  # asked first: "no" keeps the class
        assert "10 classes" in browser.find_element(By.ID, "status").text
        bag_row.find_element(By.CSS_SELECTOR, "button.quiet").click()
        wait.until(lambda b: b.switch_to.alert)
        browser.switch_to.alert.accept()
        wait.until(lambda b: "Removed" in b.find_element(By.ID, "message").text)
        wait.until(lambda b: b.find_element(By.ID, "results").get_attribute("data-version") == "3")
        assert "bag" not in labels(browser)
        browser.get(url + "docs")  # the API page, offline: its script and style come from the package
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
        assert "imprint" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        outside = [u for u in requested_urls(browser) if not u.startswith((url, "data:", f"blob:{url}"))]
        assert not outside, outside
    finally:
        browser.quit()
        process.kill()
        process.wait()
    assert "bag" not in ImprintClassifier.load(path).classes_


def test_under_load_the_queue_is_bounded_and_health_is_answered_at_once(tmp_path, nine_classes):
    """12 clients each send 16 large images at once (a retry after Retry-After, twice at most): the server takes
    on 32 images at a time and refuses the rest with 503, and /health is answered while the load is in progress."""
    path = tmp_path / "clf.safetensors"
    shutil.copy(nine_classes, path)
    process, url = start_server(path, "--read-only", "--max-queue", "32")
    payload = [("images", (f"{i}.png", noisy_png(1000, i), "image/png")) for i in range(16)]
    statuses, retry_after, unfinished = [], [], [0]
    lock, refused = threading.Lock(), threading.Event()

    def client() -> None:
        with lock:
            unfinished[0] += 1
        try:
            for _ in range(3):
                answer = httpx.post(f"{url}predict", files=payload, timeout=120)
                with lock:
                    statuses.append(answer.status_code)
                if answer.status_code != 503:
                    return
                reasons.append(answer.json()["error"][:90])
                retry_after.append(int(answer.headers["Retry-After"]))
                refused.set()
                time.sleep(min(2, int(answer.headers["Retry-After"])))
        except Exception as exc:  # said in the failure, not lost in a thread
            failures.append(repr(exc))
        finally:
            with lock:
                unfinished[0] -= 1

    reasons, failures = [], []
    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        assert refused.wait(120), statuses  # the load is on: some requests were already turned away
        health = httpx.get(f"{url}health", timeout=120)
        with lock:
            still_loaded = unfinished[0]
        for thread in threads:
            thread.join(timeout=300)
    finally:
        process.kill()
        process.wait()
    assert health.status_code == 200 and still_loaded > 0  # answered while requests were in progress
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, (statuses, set(reasons), failures)
    assert all(1 <= seconds <= 60 for seconds in retry_after)


def test_sigterm_says_the_server_shuts_down(tmp_path, nine_classes):
    import signal

    path = tmp_path / "clf.safetensors"
    shutil.copy(nine_classes, path)
    process = subprocess.Popen([sys.executable, "-m", "imprint.cli", "serve", str(path), "--port", "0",
                                "--read-only"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving 9 classes" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "imprint serve: shutting down (SIGTERM): answering the requests in progress" in out


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
