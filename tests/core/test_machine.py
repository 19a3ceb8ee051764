"""Tests of ``imprint.core.machine``: the machine imprint runs on: where torch runs (the device a setting names,
checked to exist), how many threads an encoder gets, and how much memory this process may still use."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, run

from imprint import ImprintClassifier

SCRIPT = """
import resource, sys
import numpy as np
from imprint import ImprintClassifier
import imprint.stages, imprint.openset  # everything imported before the limit is set
X = np.load(sys.argv[1], mmap_mode="r")
y = np.load(sys.argv[2])
def vm_data():
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
limit = vm_data() + int(sys.argv[3]) * 2**20  # what is used now, plus a little: less than the data
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
settings = eval(sys.argv[4])
try:
    clf = ImprintClassifier(device="cpu", **settings).fit(X, y)
    print("accuracy", (clf.predict(X[::997]) == y[::997]).mean())
except MemoryError as error:
    print("refused", str(error).splitlines()[0])
"""


@pytest.fixture(scope="module")
def big_set(tmp_path_factory) -> tuple[Path, Path]:
    """800,000 x 128 float32 (410 MB on disk, memory-mapped): two classes of 400,000 rows, raw (not unit-norm)."""
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(800_000, 128))
    y = np.repeat(np.arange(2), 400_000)
    centres = rng.normal(size=(2, 128)).astype(np.float32) * 3
    for start in range(0, len(y), 50_000):
        X[start:start + 50_000] = centres[y[start:start + 50_000]] + rng.normal(size=(50_000, 128))
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    return folder / "X.npy", folder / "y.npy"


def test_work_that_cannot_fit_is_refused_up_front_with_the_memory_it_needs(big_set):
    X, y = big_set
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(X), str(y), "300",
                           "dict(generation='mean', reject='max_score')"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused rejection keeps a float32 copy of the support set" in done.stdout
    assert "it needs about" in done.stdout and "left" in done.stdout


def test_a_device_this_machine_lacks_is_named_not_blamed_on_the_file(tmp_path, capsys, mixture):

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    X, y = mixture
    ImprintClassifier(generation="mean").fit(X, y, encoder_id="timm:tf_efficientnet_lite0").save(
        tmp_path / "clf.safetensors")
    image = sorted((EXAMPLES / "bag").iterdir())[0]
    for device in ("cuda", "cuda:7"):
        code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "--device", device)
        assert code == 2 and "no CUDA GPU" in err and "classifier" not in err


def test_without_a_gpu_everything_falls_back_to_the_cpu(mixture, monkeypatch):
    import faiss

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    X, y = mixture
    for backend in ("batched", "faiss"):
        clf = ImprintClassifier(k=5, kmeans_backend=backend).fit(X, y)
        assert clf.device_.type in ("cpu", "mps") and clf.score(X, y) > 0.9
    many = ImprintClassifier(generation="all", aggregation="mnn", m=3).fit(np.tile(X, (8, 1)), np.tile(y, 8))
    assert len(many.proxies_) >= 4096  # many proxies: mnn's top-m over blocks of proxy scores
    assert many.score(X, y) > 0.9
