"""Faults a real user meets: concurrent writers, data altered on disk, a full disk or a read-only folder while
saving. Each is survived with no data lost and no wrong answer served. (Killed embeds and grids: test_store.py
and test_grid_run.py.)"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import unprivileged

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.io.cache import EmbeddingCache
from imprint.io.store import EmbeddingStore
from imprint.workflows.loader import embed_paths

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "fashion"


@pytest.fixture(scope="module")
def encoder():
    from imprint.encoders import create_encoder

    return create_encoder(device="cpu")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ("bag", "coat", "sandal"):
        root.joinpath(name).mkdir(parents=True)
        for image in sorted((EXAMPLES / name).iterdir())[:8]:
            shutil.copy(image, root / name / image.name)
    return root


def test_two_processes_embedding_into_one_cache_at_once(folder: Path, tmp_path: Path, encoder):
    cache = tmp_path / "cache"
    commands = [[sys.executable, "-m", "imprint.cli", "embed", str(folder), "-o", str(tmp_path / f"{i}.npz"),
                 "--cache-dir", str(cache), "--quiet", "--device", "cpu", "--batch-size", "4"] for i in range(2)]
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    first, second = (np.load(tmp_path / f"{i}.npz") for i in range(2))
    np.testing.assert_array_equal(first["embeddings"], second["embeddings"])
    fresh = embed_paths(encoder, [Path(p) for p in first["paths"]], progress=False)  # no cache: computed now
    np.testing.assert_array_equal(first["embeddings"], fresh.embeddings)
    entries = list(cache.rglob("*.emb"))
    assert len(entries) == 24 and not list(cache.rglob("*.tmp"))  # every entry whole, no debris
    served = embed_paths(encoder, [Path(p) for p in first["paths"]], cache=EmbeddingCache(cache), progress=False)
    assert served.encoded == 0 and np.array_equal(served.embeddings, fresh.embeddings)


def test_cache_entries_altered_on_disk_are_recomputed_not_served(folder: Path, tmp_path: Path, encoder):
    paths = sorted(folder.rglob("*.png"))
    cache = EmbeddingCache(tmp_path / "cache")
    truth = embed_paths(encoder, paths, cache=cache, progress=False).embeddings
    entries = sorted((tmp_path / "cache").rglob("*.emb"))
    rng = np.random.default_rng()
    for entry in rng.choice(entries, 5, replace=False):  # 9 bytes overwritten inside 5 entries
        data = bytearray(entry.read_bytes())
        at = int(rng.integers(60, len(data) - 9))
        data[at:at + 9] = b"\xff" * 9
        entry.write_bytes(bytes(data))
    entries[0].write_bytes(entries[0].read_bytes()[:50])  # and one truncated
    again = embed_paths(encoder, paths, cache=cache, progress=False)
    assert again.encoded >= 5  # the damaged ones were computed again
    np.testing.assert_array_equal(again.embeddings, truth)
    assert embed_paths(encoder, paths, cache=cache, progress=False).encoded == 0  # and rewritten whole


def test_store_rows_altered_on_disk_are_refused_then_recomputed(folder: Path, tmp_path: Path, capsys):
    store = tmp_path / "store"
    assert main(["embed", str(folder), "-o", str(store), "--quiet", "--device", "cpu"]) == 0
    truth = np.asarray(EmbeddingStore.open(store).embeddings).copy()
    with open(store / "embeddings.npy", "r+b") as handle:  # 9 bytes inside row 5
        handle.seek(-truth.nbytes + 5 * truth.shape[1] * 4 + 100, os.SEEK_END)
        handle.write(b"\x7f" * 9)
    capsys.readouterr()
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has 1 row(s) altered on disk since they were written" in err and err.count("\n") == 1
    assert main(["embed", str(folder), "-o", str(store), "--quiet", "--device", "cpu"]) == 0  # recomputes them
    np.testing.assert_array_equal(np.asarray(EmbeddingStore.open(store).embeddings), truth)
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--quiet"]) == 0


def _save_with_file_size_limit(path: Path, limit: int) -> subprocess.CompletedProcess:
    """Save a classifier in a child process whose files may not grow beyond `limit` bytes (a full disk)."""
    code = (f"import numpy as np\nfrom imprint.cli import main\nimport sys\n"
            f"sys.exit(main(['fit', {str(EXAMPLES)!r}, '-o', {str(path)!r}, '--quiet', '--shots', '10', "
            f"'--generation', 'all', '--cache-dir', {str(path.parent / 'cache')!r}]))")

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit_files)


def test_a_full_disk_while_saving_keeps_the_previous_classifier_and_says_so(tmp_path: Path, capsys):
    path = tmp_path / "clf.safetensors"
    assert main(["fit", str(EXAMPLES), "-o", str(path), "--quiet", "--shots", "2", "--generation", "mean",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    before = path.read_bytes()
    done = _save_with_file_size_limit(path, 200_000)  # the new file (100 proxies x 1280) needs ~520 kB
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("imprint: error: ")]
    assert len(lines) == 1 and f"cannot write {path}: File too large; any earlier version of it is unchanged" \
        in lines[0]
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before and ImprintClassifier.load(path).proxies_.shape[0] == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["clf.safetensors"]  # no debris


def test_a_read_only_folder_keeps_the_previous_classifier_and_says_so(tmp_path: Path, mixture):
    X, y = mixture
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "clf.safetensors"
    ImprintClassifier(generation="mean").fit(X, y).save(path)
    before = path.read_bytes()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    script = ("import numpy as np, sys\nfrom imprint import ImprintClassifier\n"
              f"X, y = np.load({str(tmp_path / 'X.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})\n"
              "try:\n"
              f"    ImprintClassifier(generation='kmeans', k=2).fit(X, y).save({str(path)!r})\n"
              "except OSError as error:\n    print(error)\n")
    folder.chmod(0o555)
    try:
        done = subprocess.run(unprivileged([sys.executable, "-c", script]), capture_output=True, text=True,
                              timeout=300)
    finally:
        folder.chmod(0o755)
    assert f"cannot write {path}: Permission denied; any earlier version of it is unchanged" in done.stdout, \
        done.stdout + done.stderr
    assert path.read_bytes() == before


def test_a_read_only_store_is_read_and_not_called_damaged(tmp_path: Path, folder: Path):
    store = tmp_path / "store"
    assert main(["embed", str(folder), "-o", str(store), "--quiet", "--device", "cpu"]) == 0
    for item in [store, *store.iterdir()]:
        item.chmod(0o555 if item.is_dir() else 0o444)
    common = ["--quiet", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    try:
        fit = subprocess.run(unprivileged([sys.executable, "-m", "imprint.cli", "fit", str(store), "-o",
                                            str(tmp_path / "c.safetensors"), *common]),
                             capture_output=True, text=True, timeout=300)
        again = subprocess.run(unprivileged([sys.executable, "-m", "imprint.cli", "embed", str(folder), "-o",
                                              str(store), *common]), capture_output=True, text=True, timeout=300)
    finally:
        for item in [store, *store.iterdir()]:
            item.chmod(0o755 if item.is_dir() else 0o644)
    assert fit.returncode == 0, fit.stderr
    assert again.returncode == 2 and "permission denied" in again.stderr and "damaged" not in again.stderr, \
        again.stderr
