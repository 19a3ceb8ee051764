"""Tests of ``imprint.io.store``: embeddings on disk as memory-mapped arrays: one folder per (encoder, dataset),
filled in chunks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, apply_mutation, header_mutations, run, unprivileged

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.io.store import EMBEDDED, PENDING, EmbeddingStore, StoreError


def _store(path: Path, n: int = 10, dim: int = 4, encoder_key: str = "k1") -> EmbeddingStore:
    return EmbeddingStore.create(path, encoder_id="test:enc", encoder_key=encoder_key, dim=dim,
                                 paths=[f"/img/{i}.png" for i in range(n)], labels=np.arange(n) % 2,
                                 class_names=["cat", "dog"])


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


@pytest.fixture()
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), where the machine lets this process mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _filled_store(path: Path) -> EmbeddingStore:
    rng = np.random.default_rng(0)
    store = EmbeddingStore.create(path, encoder_id="test:enc", encoder_key="k", dim=8,
                                  paths=[f"/img/{i}.png" for i in range(30)], labels=np.arange(30) % 3,
                                  class_names=["bag", "boot", "coat"])
    centres = rng.normal(size=(3, 8)) * 4
    store.write(np.arange(29), (centres[np.arange(29) % 3] + rng.normal(size=(29, 8))).astype(np.float32))
    store.mark_unreadable(np.array([29]))
    return store


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def _refused(path: Path, match: str) -> None:
    with pytest.raises(StoreError, match=match) as info:
        EmbeddingStore.open(path).labelled()
    assert "\n" not in str(info.value)


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


def test_an_embed_killed_at_random_points_resumes_to_the_same_store_bit_for_bit(small_folder: Path, tmp_path: Path):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "imprint.cli", "embed", str(small_folder), "-o", str(out), "--batch-size", "4",
               "--quiet", "--device", "cpu"]
    rng = np.random.default_rng()
    for rows in sorted(rng.integers(4, 36, size=3)):  # SIGKILL three times, at random points
        _kill_when(out, command, int(rows))
    state = np.load(out / "state.npy")
    assert (state == PENDING).any(), "the embed was not stopped before the end"
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
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

    a = ImprintClassifier.load(tmp_path / "a.safetensors")
    b = ImprintClassifier.load(tmp_path / "b.safetensors")
    np.testing.assert_allclose(a.proxies_, b.proxies_, atol=1e-5)
    assert b.encoder_id_ == "timm:tf_efficientnet_lite0"
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--encoder", "lite1"]) == 2
    assert "holds embeddings of timm:tf_efficientnet_lite0, not lite1" in capsys.readouterr().err


def test_store_rows_altered_on_disk_are_refused_then_recomputed(eight_per_class: Path, tmp_path: Path, capsys):
    store = tmp_path / "store"
    assert main(["embed", str(eight_per_class), "-o", str(store), "--quiet", "--device", "cpu"]) == 0
    truth = np.asarray(EmbeddingStore.open(store).embeddings).copy()
    with open(store / "embeddings.npy", "r+b") as handle:  # 9 bytes inside row 5
        handle.seek(-truth.nbytes + 5 * truth.shape[1] * 4 + 100, os.SEEK_END)
        handle.write(b"\x7f" * 9)
    capsys.readouterr()
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has 1 row(s) altered on disk since they were written" in err and err.count("\n") == 1
    assert main(["embed", str(eight_per_class), "-o", str(store), "--quiet", "--device", "cpu"]) == 0  # recomputes them
    np.testing.assert_array_equal(np.asarray(EmbeddingStore.open(store).embeddings), truth)
    assert main(["fit", str(store), "-o", str(tmp_path / "c.safetensors"), "--quiet"]) == 0


def test_a_read_only_store_is_read_and_not_called_damaged(tmp_path: Path, eight_per_class: Path):
    store = tmp_path / "store"
    assert main(["embed", str(eight_per_class), "-o", str(store), "--quiet", "--device", "cpu"]) == 0
    for item in [store, *store.iterdir()]:
        item.chmod(0o555 if item.is_dir() else 0o444)
    common = ["--quiet", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    try:
        fit = subprocess.run(unprivileged([sys.executable, "-m", "imprint.cli", "fit", str(store), "-o",
                                            str(tmp_path / "c.safetensors"), *common]),
                             capture_output=True, text=True, timeout=300)
        again = subprocess.run(unprivileged([sys.executable, "-m", "imprint.cli", "embed", str(eight_per_class), "-o",
                                              str(store), *common]), capture_output=True, text=True, timeout=300)
    finally:
        for item in [store, *store.iterdir()]:
            item.chmod(0o755 if item.is_dir() else 0o644)
    assert fit.returncode == 0, fit.stderr
    assert again.returncode == 2 and "permission denied" in again.stderr and "damaged" not in again.stderr, \
        again.stderr


def test_a_store_too_large_for_the_address_space_left_is_memory_not_damage(tmp_path):
    """A store is memory-mapped: under an address-space limit (ulimit -v) mapping it fails with ENOMEM, which is
    the limit's doing, not damage (it said "damaged embeddings store" under ulimit -v 6 GiB)."""
    from imprint.io.store import EmbeddingStore

    n, dim = 100_000, 512  # 200 MB, allocated but never written: creating it takes a moment
    EmbeddingStore.create(tmp_path / "store", encoder_id="test:enc", encoder_key="k", runtime="torch", dim=dim,
                          paths=[f"{i}.png" for i in range(n)], labels=np.zeros(n, dtype=np.int64),
                          class_names=["a"])
    script = ("import resource, sys\nfrom imprint.io.store import EmbeddingStore\n"
              "used = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
              "resource.setrlimit(resource.RLIMIT_AS, (used + 100 * 2**20, resource.RLIM_INFINITY))\n"
              f"try:\n    EmbeddingStore.open({str(tmp_path / 'store')!r})\n"
              "except MemoryError as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("NotEnoughMemory not enough memory to map the store"), done.stdout + done.stderr
    assert "ulimit -v" in done.stdout and "damaged" not in done.stdout


def test_a_store_too_large_for_the_disk_is_refused_up_front_and_leaves_nothing(small_disk, capsys, tmp_path):
    folder = tmp_path / "many"
    for name in ("bag", "coat"):  # 1,200 images x 1280 floats: 6 MB of store on a 2 MiB disk
        (folder / name).mkdir(parents=True)
        source = sorted((EXAMPLES / name).iterdir())[0]
        for i in range(600):
            os.link(source, folder / name / f"{i}.png")
    code, _, err = run(capsys, "embed", folder, "-o", small_disk / "store", "--quiet", "--cache-dir", tmp_path / "c")
    assert code == 2 and "cannot create the store" in err and "nothing was written" in err and err.count("\n") == 1
    assert list(small_disk.iterdir()) == []  # no half-made store, no hidden staging folder


def test_a_store_with_no_room_left_on_the_disk_is_refused_then_made_once_space_is_freed(small_disk, capsys,
                                                                                      tmp_path, six_per_class):
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(2000 * 1024))  # the store's 93 KB do not fit beside it
    code, _, err = run(capsys, "embed", six_per_class, "-o", small_disk / "store", "--quiet",
                       "--cache-dir", tmp_path / "c")
    assert code == 2 and "No space left" in err and "nothing was written" in err and err.count("\n") == 1
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]
    ballast.unlink()
    code, _, err = run(capsys, "embed", six_per_class, "-o", small_disk / "store", "--quiet",
                       "--cache-dir", tmp_path / "c")
    assert code == 0, err
    X, labels = EmbeddingStore.open(small_disk / "store").labelled()
    assert len(X) == 18


def test_a_store_half_created_by_a_killed_process_does_not_block_the_rerun(tmp_path, capsys, six_per_class):
    out = tmp_path / "store"
    staging = tmp_path / ".store.creating-elsewhere-99999999"  # another host's: left alone
    from imprint.io.store import _host

    dead = tmp_path / f".store.creating-{_host()}-{2**22 + 12345}"  # this host's, its process long gone
    for folder in (staging, dead):
        folder.mkdir()
        (folder / "paths.json").write_text("[]")
    code, _, err = run(capsys, "embed", six_per_class, "-o", out, "--quiet", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    assert EmbeddingStore.open(out).complete and not dead.exists() and staging.exists()


def test_swapped_class_names_in_a_store_are_refused(tmp_path):
    _filled_store(tmp_path / "s")
    meta = _meta(tmp_path / "s")
    meta["class_names"] = ["boot", "bag", "coat"]
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path / "s", "class names, encoder, image list or labels were altered")


@pytest.mark.parametrize("row, state", [(4, -1), (4, 0), (29, 1), (4, 2), (4, -7)])
def test_a_store_row_marked_by_hand_is_refused_or_recomputed_never_dropped(tmp_path, row, state):
    _filled_store(tmp_path / "s")
    states = np.load(tmp_path / "s" / "state.npy", mmap_mode="r+")
    states[row] = state
    states.flush()
    del states
    if state in (2, -7):
        _refused(tmp_path / "s", "row states other than")
    elif state == 0:
        _refused(tmp_path / "s", "unfinished")  # pending: the next embed computes it again
    else:
        _refused(tmp_path / "s", "row\\(s\\) altered on disk")


def test_rows_moved_with_their_checksums_are_refused(tmp_path):
    _filled_store(tmp_path / "s")
    for name in ("embeddings", "digests"):
        array = np.load(tmp_path / "s" / f"{name}.npy", mmap_mode="r+")
        array[[0, 1]] = array[[1, 0]]
        array.flush()
        del array
    _refused(tmp_path / "s", "altered on disk")


def test_a_store_without_its_checksums_is_not_read_as_an_old_one(tmp_path):
    _filled_store(tmp_path / "s")
    (tmp_path / "s" / "digests.npy").unlink()
    _refused(tmp_path / "s", "digests.npy is missing")
    meta = _meta(tmp_path / "s")
    meta["format_version"] = 1
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path / "s", "says format 1 but has the files of a newer one")


@pytest.mark.parametrize("change", [
    lambda m: m.pop("count"), lambda m: m.pop("class_names"), lambda m: m.update(class_names=["bag", "boot"]),
    lambda m: m.update(class_names="bag"), lambda m: m.update(count="30"), lambda m: m.update(dim=-1),
    lambda m: m.update(encoder=7), lambda m: m.update(format_version="3"), lambda m: m.update(format_version=9),
])
def test_store_metadata_missing_or_of_the_wrong_type_is_one_line(tmp_path, change):
    _filled_store(tmp_path / "s")
    meta = _meta(tmp_path / "s")
    change(meta)
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError) as info:
        EmbeddingStore.open(tmp_path / "s").labelled()
    assert "\n" not in str(info.value)


def test_fuzzed_store_metadata_is_refused_in_one_line_or_read_the_same(tmp_path):
    _filled_store(tmp_path / "good")
    X, y = EmbeddingStore.open(tmp_path / "good").labelled()
    meta = _meta(tmp_path / "good")
    rng = np.random.default_rng(3)
    for i, (trail, action) in enumerate(header_mutations(meta, rng)):
        copy = tmp_path / f"s{i}"
        shutil.copytree(tmp_path / "good", copy)
        edited = json.loads(json.dumps(meta))
        apply_mutation(edited, trail, action)
        (copy / "meta.json").write_text(json.dumps(edited))
        try:
            X2, y2 = EmbeddingStore.open(copy).labelled()
        except StoreError as error:
            assert "\n" not in str(error)
        else:
            assert np.array_equal(np.asarray(X2), np.asarray(X)) and y2.tolist() == y.tolist(), (trail, action)
        shutil.rmtree(copy)
