"""Tests of ``imprint.core.machine``: the machine imprint runs on: where torch runs (the device a setting names,
checked to exist), how many threads an encoder gets, and how much memory this process may still use."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, LIMITED_FIT_SCRIPT, MEMORY_LEFT_MB, run

from imprint import ImprintClassifier


def test_work_that_cannot_fit_is_refused_up_front_with_the_memory_it_needs(big_set):
    X, y = big_set
    done = subprocess.run([sys.executable, "-c", LIMITED_FIT_SCRIPT, str(X), str(y), str(MEMORY_LEFT_MB),
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
