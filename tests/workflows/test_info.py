"""Tests of ``imprint.workflows.info``: what ``imprint info`` shows: a classifier file's contents
(``imprint.io.classifier_file.summarize``), read and checked without loading a model (no torch)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from imprint import ImprintClassifier


def test_info_needs_no_model_and_says_when_k_was_capped(tmp_path, mixture):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[:14] for c in range(6)])
    path = tmp_path / "capped.safetensors"
    ImprintClassifier(k=20).fit(X[rows], y[rows]).save(path)
    code = ("import sys\nfrom imprint.cli import main\ncode = main(['info', sys.argv[1]])\n"
            "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert "k=20: 6 of 6 classes have fewer than 20 proxies" in done.stdout
