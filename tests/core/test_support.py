"""Tests of ``imprint.core.support``: the support set as the user passed it, read in blocks and normalised on the
fly: never a copy of all of it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.parametrize("settings", [
    "dict(method='custom')",  # the default pipeline: k-means k=20 over two classes of 400,000 rows
    "dict(generation='mean', norm_post='none', metric='mahalanobis', shrinkage='auto')",  # GDA, tuned by CV
])
def test_a_memory_mapped_set_larger_than_the_memory_left_is_fitted(big_set, settings):
    X, y = big_set
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(X), str(y), "300", settings], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy 1.0" in done.stdout, done.stdout + done.stderr[-2000:]
