"""Tests of ``imprint.core.support``: the support set as the user passed it, read in blocks and normalised on the
fly: never a copy of all of it."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import LIMITED_FIT_SCRIPT, MEMORY_LEFT_MB


@pytest.mark.parametrize("settings", [
    "dict(method='custom')",  # the default pipeline: k-means k=20 over two classes of 200,000 rows
    "dict(generation='mean', norm_post='none', metric='mahalanobis', shrinkage='auto')",  # GDA, tuned by CV
])
def test_a_memory_mapped_set_larger_than_the_memory_left_is_fitted(big_set, settings):
    X, y = big_set
    done = subprocess.run([sys.executable, "-c", LIMITED_FIT_SCRIPT, str(X), str(y), str(MEMORY_LEFT_MB), settings],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy 1.0" in done.stdout, done.stdout + done.stderr[-2000:]
