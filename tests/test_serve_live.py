"""`imprint serve` as a user runs it: a real server process killed in the middle of class changes leaves a
classifier equal to the old or the new one and serves it again; the page in a real headless browser (Debian's
chromium) classifies images, teaches a class by example and shows the very next prediction using it."""
from __future__ import annotations

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
import pytest
from conftest import EXAMPLES, headless_browser, run

from imprint import ImprintClassifier

pytest.importorskip("fastapi")
BAGS = sorted((EXAMPLES / "bag").glob("*.png"))


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
    assert code == 2 and "at least 8 characters" in err


def test_the_page_teaches_a_class_and_the_next_prediction_uses_it(tmp_path, nine_classes):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "clf.safetensors"
    shutil.copy(nine_classes, path)
    process, url = start_server(path)
    browser = headless_browser()
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
        bag_row.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda b: "Removed" in b.find_element(By.ID, "message").text)
        wait.until(lambda b: b.find_element(By.ID, "results").get_attribute("data-version") == "3")
        assert "bag" not in labels(browser)
    finally:
        browser.quit()
        process.kill()
        process.wait()
    assert "bag" not in ImprintClassifier.load(path).classes_
