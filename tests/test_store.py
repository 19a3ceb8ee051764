"""Memory-mapped embedding stores: round trip, resume after an interrupted embed, Ray Data local mode."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imprint.cli import main
from imprint.io.store import EMBEDDED, PENDING, EmbeddingStore, StoreError

ROOT = Path(__file__).parents[1]


def _store(path: Path, n: int = 10, dim: int = 4, encoder_key: str = "k1") -> EmbeddingStore:
    return EmbeddingStore.create(path, encoder_id="test:enc", encoder_key=encoder_key, dim=dim,
                                 paths=[f"/img/{i}.png" for i in range(n)], labels=np.arange(n) % 2,
                                 class_names=["cat", "dog"])


def test_a_store_round_trips_and_is_memory_mapped(tmp_path: Path):
    store = _store(tmp_path / "s")
    assert store.pending().tolist() == list(range(10))
    vectors = np.arange(40, dtype=np.float32).reshape(10, 4)
    store.write(np.arange(0, 10, 2), vectors[::2])
    store.write(np.arange(1, 10, 2), vectors[1::2])
    reopened = EmbeddingStore.open(tmp_path / "s")
    X, y = reopened.labelled()
    assert isinstance(reopened.embeddings, np.memmap)
    assert np.array_equal(np.asarray(X), vectors) and y.tolist() == ["cat", "dog"] * 5
    assert reopened.paths[3] == "/img/3.png" and reopened.complete


def test_unfinished_and_unreadable_rows(tmp_path: Path):
    store = _store(tmp_path / "s")
    store.write(np.array([0, 1, 2]), np.ones((3, 4), dtype=np.float32))
    store.mark_unreadable(np.array([3]))
    with pytest.raises(StoreError, match="unfinished \\(6 images pending\\); resume with the same 'imprint embed'"):
        store.labelled()
    assert _store(tmp_path / "s").pending().tolist() == [4, 5, 6, 7, 8, 9]  # reopening resumes
    store.write(np.arange(4, 10), np.ones((6, 4), dtype=np.float32))
    X, _ = store.labelled()
    assert len(X) == 9 and store.unreadable() == ["/img/3.png"]


def test_a_store_refuses_other_images_or_encoders_and_damage(tmp_path: Path):
    _store(tmp_path / "s")
    with pytest.raises(StoreError, match="holds embeddings of another encoder"):
        _store(tmp_path / "s", encoder_key="k2")
    with pytest.raises(StoreError, match="holds embeddings of another list of images"):
        _store(tmp_path / "s", n=11)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not an embeddings store; choose a new or empty folder"):
        _store(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    (tmp_path / "s" / "state.npy").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="is a damaged embeddings store"):
        EmbeddingStore.open(tmp_path / "s")


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """40 real example images (4 classes x 10) and one corrupt file."""
    root = tmp_path / "images"
    for name in ("bag", "coat", "sandal", "trouser"):
        (root / name).mkdir(parents=True)
        for image in sorted((ROOT / "examples" / "fashion" / name).iterdir())[:10]:
            shutil.copy(image, root / name / image.name)
    (root / "bag" / "broken.png").write_bytes(b"not a png")
    return root


def _kill_when(out: Path, command: list[str], rows: int) -> None:
    """Start `command` and SIGKILL it once `rows` rows of the store are embedded (or it finishes)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if (np.load(out / "state.npy", mmap_mode="r") == EMBEDDED).sum() >= rows:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_an_embed_killed_at_random_points_resumes_to_the_same_store_bit_for_bit(small_folder: Path, tmp_path: Path):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "imprint.cli", "embed", str(small_folder), "-o", str(out), "--batch-size", "4",
               "--quiet", "--device", "cpu"]
    rng = np.random.default_rng()
    for rows in sorted(rng.integers(4, 36, size=3)):  # SIGKILL three times, at random points
        _kill_when(out, command, int(rows))
    state = np.load(out / "state.npy")
    assert (state == PENDING).any(), "the embed was not stopped before the end"
    resumed = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"resuming: {int((state != PENDING).sum())} of 41 images already embedded" in resumed.stdout
    assert "skipped 1 unreadable image(s)" in resumed.stderr and "broken.png" in resumed.stderr
    assert main(["embed", str(small_folder), "-o", str(tmp_path / "once"), "--quiet", "--device", "cpu"]) == 0
    a, b = EmbeddingStore.open(out), EmbeddingStore.open(tmp_path / "once")
    np.testing.assert_array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))  # bit for bit
    np.testing.assert_array_equal(np.asarray(a.state), np.asarray(b.state))
    assert a.paths == b.paths and a.labelled()[1].tolist() == b.labelled()[1].tolist()


def test_collapse_and_fewshot_read_a_store(small_folder: Path, tmp_path: Path, capsys):
    assert main(["embed", str(small_folder), "-o", str(tmp_path / "s"), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["collapse", str(tmp_path / "s"), "--json"]) == 0
    assert '"nc1"' in capsys.readouterr().out
    assert main(["fewshot", str(tmp_path / "s"), "--ways", "3", "--shots", "2", "--queries", "3",
                 "--episodes", "20"]) == 0


def test_ray_data_in_local_mode_writes_the_same_store(small_folder: Path, tmp_path: Path):
    pytest.importorskip("ray.data")
    assert main(["embed", str(small_folder), "-o", str(tmp_path / "local"), "--quiet", "--device", "cpu"]) == 0
    assert main(["embed", str(small_folder), "-o", str(tmp_path / "ray"), "--engine", "ray", "--batch-size", "16",
                 "--quiet", "--device", "cpu"]) == 0
    local, distributed = EmbeddingStore.open(tmp_path / "local"), EmbeddingStore.open(tmp_path / "ray")
    assert distributed.complete and distributed.unreadable() == local.unreadable()
    np.testing.assert_allclose(np.asarray(distributed.embeddings), np.asarray(local.embeddings), atol=1e-4)


def test_ray_engine_needs_a_store_folder(small_folder: Path, tmp_path: Path, capsys):
    assert main(["embed", str(small_folder), "-o", str(tmp_path / "x.npz"), "--engine", "ray"]) == 2
    assert "--engine ray writes a memory-mapped store" in capsys.readouterr().err


def test_fit_from_a_store_equals_fit_from_the_folder(small_folder: Path, tmp_path: Path, capsys):
    (small_folder / "bag" / "broken.png").unlink()  # same images on both sides, so the same split
    store = tmp_path / "s"
    assert main(["embed", str(small_folder), "-o", str(store), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    common = ["--test-fraction", "0.3", "--k", "3", "--quiet", "--device", "cpu"]
    assert main(["fit", str(small_folder), "-o", str(tmp_path / "a.safetensors"), *common]) == 0
    from_folder = capsys.readouterr().out
    assert main(["fit", str(store), "-o", str(tmp_path / "b.safetensors"), "--encoder", "lite0", *common[:-3]]) == 0
    from_store = capsys.readouterr().out
    held_out = [line for line in from_folder.splitlines() if line.startswith("held-out")]
    assert held_out and held_out == [line for line in from_store.splitlines() if line.startswith("held-out")]
    from imprint import ImprintClassifier

    a = ImprintClassifier.load(tmp_path / "a.safetensors")
    b = ImprintClassifier.load(tmp_path / "b.safetensors")
    np.testing.assert_allclose(a.proxies_, b.proxies_, atol=1e-5)
    assert b.encoder_id_ == "timm:tf_efficientnet_lite0"
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--encoder", "lite1"]) == 2
    assert "holds embeddings of timm:tf_efficientnet_lite0, not lite1" in capsys.readouterr().err
