"""`imprint serve` under load, on 127.0.0.1 only: 8 and 32 concurrent clients each sending one image per request,
against offline prediction of the same images with the same runtime in the same run; then clients predicting
while classes are taught and removed, every answer checked against the classes of the version it names.

Baseline: ``imprint.predict_images`` (what ``imprint predict`` runs, model already loaded, no embedding cache) on
the same JPEGs, in this process, before the server starts, so the two never share the CPU; the best of three.
The server is a separate ``imprint serve`` process; the clients are threads of this process on keep-alive
connections of the standard library's http.client (a light load generator; its CPU still counts against the
server's, as a real client on the same machine would). Bounded: a fixed number of requests per level and a time
limit per run.

Images: 250 x 250 JPEGs of the simulated textile set shipped by PyPI's ``conformal-clip-data`` (3 classes); the
classifier is imprinted from 30 images per class with ``--preset simpleshot`` (a head that can forget classes).
Run: python benchmarks/bench_serve.py [--requests 384]
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment

TEXTILES = Path(__import__("conformal_clip_data").__file__).parent / "data" / "textile_images" / "simulated"
TIME_LIMIT = 600  # seconds per load level at most


def start_server(path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "imprint.cli", "serve", str(path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, found.group(1)
    raise SystemExit(f"imprint serve did not start: {process.wait()}")


class Client:
    """A light load generator: one keep-alive connection (the standard library's http.client), multipart uploads
    built by hand, so the clients take little of the CPU they share with the server."""

    def __init__(self, url: str) -> None:
        address = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)

    def send(self, method: str, path: str, images: list[Path] = ()) -> tuple[int, dict]:
        body = b"".join(b"--imprint-bench\r\nContent-Disposition: form-data; name=\"images\"; filename=\"" +
                        p.name.encode() + b"\"\r\nContent-Type: image/jpeg\r\n\r\n" + p.read_bytes() + b"\r\n"
                        for p in images) + (b"--imprint-bench--\r\n" if images else b"")
        headers = {"Content-Type": "multipart/form-data; boundary=imprint-bench"} if images else {}
        self.connection.request(method, path, body=body or None, headers=headers)
        answer = self.connection.getresponse()
        return answer.status, json.loads(answer.read())

    def close(self) -> None:
        self.connection.close()


def load(url: str, paths: list[Path], clients: int) -> dict:
    """`clients` threads sending one image per request until every path was sent once."""
    pending = list(enumerate(paths))
    lock = threading.Lock()
    latencies, failures = [], []
    deadline = time.monotonic() + TIME_LIMIT

    def client() -> None:
        connection = Client(url)
        while time.monotonic() < deadline:
            with lock:
                if not pending:
                    break
                _, path = pending.pop()
            start = time.perf_counter()
            status, _ = connection.send("POST", "/predict", [path])
            took = time.perf_counter() - start
            with lock:
                (latencies if status == 200 else failures).append(took)
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"images/s": len(latencies) / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "failed": len(failures),
            "sent": len(latencies) + len(failures)}


def changing(url: str, paths: list[Path], teach: list[Path], seconds: float = 30.0) -> dict:
    """8 clients predicting while one teaches a class and removes it again, for `seconds`: errors, and answers
    naming a class the version they report did not have."""
    first = Client(url)
    versions = {1: {c["name"] for c in first.send("GET", "/classes")[1]["classes"]}}
    first.close()
    answers, errors, stop = [], [], threading.Event()

    def changer() -> None:
        connection = Client(url)
        while not stop.is_set():
            for method, path, images in (("POST", "/classes/extra/examples", teach),
                                         ("DELETE", "/classes/extra", [])):
                status, body = connection.send(method, path, images)
                if status != 200:
                    errors.append(body)
                    continue
                versions[body["version"]] = {c["name"] for c in body["classes"]}
        connection.close()

    def predictor(offset: int) -> None:
        connection = Client(url)
        i = offset
        while not stop.is_set():
            status, body = connection.send("POST", "/predict?top_k=10", [paths[i % len(paths)]])
            i += 8
            if status != 200:
                errors.append(body)
                continue
            answers.append((body["version"], {t["label"] for p in body["predictions"] for t in p["top"]}))
        connection.close()

    threads = [threading.Thread(target=changer)] + [threading.Thread(target=predictor, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    wrong = sum(not labels <= versions.get(version, set()) for version, labels in answers)
    return {"predictions": len(answers), "changes": len(versions) - 1, "errors": len(errors), "wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=384, help="single-image requests per load level")
    args = parser.parse_args()
    import imprint
    from imprint.encoders import create_encoder

    print("## `imprint serve` under load\n\n" + environment() + "\n")
    all_paths = sorted(TEXTILES.glob("*/*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        by_class: dict[str, list[Path]] = {}
        for path in all_paths:
            by_class.setdefault(path.parent.name, []).append(path)
        for name, paths in by_class.items():
            (work / "support" / name).mkdir(parents=True)
            for path in paths[:30]:
                shutil.copy(path, work / "support" / name / path.name)
        queries = [p for paths in by_class.values() for p in paths[30:]][::3][:args.requests]
        teach = [p for paths in by_class.values() for p in paths[-2:]]
        clf_path = work / "clf.safetensors"
        clf = imprint.fit_folder(work / "support", preset="simpleshot", progress=False)
        clf.save(clf_path)
        imprint.predict_images(clf, queries[:16], cache=False, progress=False)  # the encoder built and warm
        offline = 0.0
        for _ in range(3):  # the best of three: the stricter baseline on a noisy machine
            start = time.perf_counter()
            imprint.predict_images(clf, queries, cache=False, progress=False)
            offline = max(offline, len(queries) / (time.perf_counter() - start))
        offline_runtime = create_encoder(clf.encoder_id_, device="cpu").runtime_id
        process, url = start_server(clf_path)
        try:
            load(url, queries[:32], 4)  # warm-up
            _, health = Client(url).send("GET", "/health")
            print(f"### {len(queries)} single-image requests (250 x 250 JPEG), classifier of 3 classes\n\n"
                  f"Offline (`imprint.predict_images`, same images and runtime, no cache, best of 3): {offline:.1f} "
                  f"images/s, the encoder on {offline_runtime}; the server's encoder on {health['runtime']}."
                  "\n\n| concurrent clients | images/s | vs offline | p50 latency | p99 latency | failed |\n"
                  "|---|---|---|---|---|---|")
            for clients in (8, 32):
                found = load(url, queries, clients)
                print(f"| {clients} | {found['images/s']:.1f} | **{found['images/s'] / offline:.2f}** | "
                      f"{1000 * found['p50']:.0f} ms | {1000 * found['p99']:.0f} ms | {found['failed']} of "
                      f"{found['sent']} |")
            found = changing(url, queries, teach)
            print(f"\n### Predicting while classes change (8 clients, 30 s)\n\n{found['predictions']} predictions "
                  f"during {found['changes']} class changes (a class taught from {len(teach)} images, then "
                  f"removed, in turn): {found['errors']} errors, {found['wrong']} answers naming a class their "
                  "version did not have.")
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
