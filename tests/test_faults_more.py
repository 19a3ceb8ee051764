"""Faults that used to become crashes: a full disk while a store fills, a store half-created when the disk
filled, folders that cannot be read, a classifier file that names an encoder imprint should not fetch, label
types and numbers that overflow. Each ends in one line or goes on correctly."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, copy_examples, run, unprivileged

from imprint import ImprintClassifier
from imprint.io.store import EmbeddingStore


@pytest.fixture()
def small_folder(tmp_path):
    return copy_examples(tmp_path / "images", per_class=6)


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
                                                                                      tmp_path, small_folder):
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(2000 * 1024))  # the store's 93 KB do not fit beside it
    code, _, err = run(capsys, "embed", small_folder, "-o", small_disk / "store", "--quiet",
                       "--cache-dir", tmp_path / "c")
    assert code == 2 and "No space left" in err and "nothing was written" in err and err.count("\n") == 1
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]
    ballast.unlink()
    code, _, err = run(capsys, "embed", small_folder, "-o", small_disk / "store", "--quiet",
                       "--cache-dir", tmp_path / "c")
    assert code == 0, err
    X, labels = EmbeddingStore.open(small_disk / "store").labelled()
    assert len(X) == 18


def test_a_store_half_created_by_a_killed_process_does_not_block_the_rerun(tmp_path, capsys, small_folder):
    out = tmp_path / "store"
    staging = tmp_path / ".store.creating-elsewhere-99999999"  # another host's: left alone
    from imprint.io.store import _host

    dead = tmp_path / f".store.creating-{_host()}-{2**22 + 12345}"  # this host's, its process long gone
    for folder in (staging, dead):
        folder.mkdir()
        (folder / "paths.json").write_text("[]")
    code, _, err = run(capsys, "embed", small_folder, "-o", out, "--quiet", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    assert EmbeddingStore.open(out).complete and not dead.exists() and staging.exists()


def test_unreadable_folders_are_named_and_strict_stops_on_them(capsys):
    base = Path(tempfile.mkdtemp(prefix="imprint-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        images = base / "images"
        for name in ("bag", "coat", "sandal"):
            shutil.copytree(EXAMPLES / name, images / name)
        (images / "bag" / "more").mkdir()
        shutil.copy(sorted((EXAMPLES / "bag").iterdir())[0], images / "bag" / "more" / "x.png")
        os.chmod(images / "bag" / "more", 0)  # a sub-folder inside a class that cannot be read
        os.chmod(images / "sandal", 0)  # a whole class folder that cannot be read
        (base / "home").mkdir(mode=0o777)
        os.chmod(base / "home", 0o777)
        env = dict(os.environ, HOME=str(base / "home"), IMPRINT_CACHE_DIR=str(base / "home" / "cache"))
        command = [sys.executable, "-m", "imprint.cli", "embed", str(images), "-o", str(base / "home" / "e.npz"),
                   "--quiet"]
        done = subprocess.run(unprivileged(command), capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "cannot read the folder" in done.stderr and "bag/more" in done.stderr and "sandal" in done.stderr
        assert "no images" not in done.stderr  # an unreadable class is not called empty
        strict = subprocess.run(unprivileged(command + ["--strict"]), capture_output=True, text=True, env=env,
                                timeout=300)
        assert strict.returncode == 2 and "cannot read the folder" in strict.stderr
        assert strict.stderr.count("\n") == 1
    finally:
        for folder in (base / "images" / "bag" / "more", base / "images" / "sandal"):
            if folder.exists():
                os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


def test_a_classifier_never_makes_imprint_fetch_or_read_an_encoder_it_names(tmp_path, capsys, mixture):
    X, y = mixture
    image = sorted((EXAMPLES / "bag").iterdir())[0]
    for recorded in ("open_clip:ViT-B-32/laion2b_s34b_b79k", "timm:resnet50", "timm:resnet18@/etc/passwd",
                     "open_clip:ViT-B-32//tmp/evil.pt"):
        path = tmp_path / "clf.safetensors"
        ImprintClassifier(generation="mean").fit(X, y, encoder_id=recorded).save(path)
        code, _, err = run(capsys, "predict", path, image, "--cache-dir", tmp_path / "c")
        assert code == 2 and "imprint does not build from what a file says" in err and "--encoder" in err, err
    ImprintClassifier(generation="mean").fit(X, y, encoder_id="timm:tf_efficientnet_lite0\x1b[2J").save(path)
    code, _, err = run(capsys, "predict", path, image, "--cache-dir", tmp_path / "c")
    assert code == 2 and "\x1b" not in err and "\\x1b" in err  # control characters from a file are escaped


def test_a_plugin_hint_from_a_file_never_repeats_shell_text(tmp_path, capsys, mixture):
    import json

    from safetensors.numpy import load_file

    from imprint.io.classifier_file import file_digest

    X, y = mixture
    path = tmp_path / "clf.safetensors"
    ImprintClassifier(generation="mean").fit(X, y).save(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = json.loads(header["__metadata__"]["imprint"])
    meta["settings"]["generation"] = "evil"
    meta["plugins"] = {"generation": "x; rm -rf ~"}
    meta["digest"] = file_digest(meta, load_file(path))
    blob = json.dumps(dict(header, __metadata__={"imprint": json.dumps(meta)})).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + size:])
    code, _, err = run(capsys, "info", path)
    with pytest.raises(ValueError) as info:
        ImprintClassifier.load(path)
    assert "rm -rf" not in str(info.value) and "not a valid module name" in str(info.value)


def test_huge_finite_embeddings_are_refused_not_scored_as_zero(mixture):
    X, y = mixture
    huge = X.copy()
    huge[3] *= 1e19
    with pytest.raises(ValueError, match="rescale the embeddings") as info:
        ImprintClassifier().fit(huge, y)
    assert "row 3" in str(info.value)
    clf = ImprintClassifier(generation="mean").fit(X, y)
    with pytest.raises(ValueError, match="rescale"):
        clf.predict(huge)


def test_calibrate_with_too_few_samples_warns_as_fit_does(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="max_score").fit(X, y)
    with pytest.warns(UserWarning, match="too few to reject"):
        clf.calibrate(X[:5], y[:5])


def test_binary_problems_follow_scikit_learn_so_binary_scorers_work(mixture):
    from sklearn.metrics import average_precision_score, get_scorer, roc_auc_score

    X, y = mixture
    two = y < 2
    clf = ImprintClassifier(generation="mean").fit(X[two][::2], y[two][::2])
    scores = clf.decision_function(X[two][1::2])
    assert scores.shape == (two.sum() // 2,)
    assert np.array_equal(clf.classes_[(scores > 0).astype(int)], clf.predict(X[two][1::2]))
    assert roc_auc_score(y[two][1::2], scores) > 0.9
    assert np.isfinite(get_scorer("roc_auc")(clf, X[two][1::2], y[two][1::2]))
    assert np.isfinite(average_precision_score(y[two][1::2], scores))


def test_labels_keep_their_type(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="max_score", unknown_label="none of these").fit(X, y)
    predicted = clf.predict(X[:50])
    assert predicted.dtype == object and all(isinstance(p, (int, np.integer)) for p in predicted
                                             if p != "none of these")
    with pytest.raises(ValueError, match="labels of the same type"):
        ImprintClassifier(generation="mean").fit(X, y).add_classes(X[:10], np.array(["new"] * 10))


def test_seeds_beyond_what_a_generator_takes_are_refused_up_front(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("datasets: [fashion_mnist]\nseeds: [100000000000000000000]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and "seeds must be integers from 0 to 2^32 - 1" in err
    with pytest.raises(ValueError, match="seed must be"):
        ImprintClassifier(seed=2**40).fit(np.eye(4), [0, 0, 1, 1])


def test_a_device_this_machine_lacks_is_named_not_blamed_on_the_file(tmp_path, capsys, mixture):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    X, y = mixture
    ImprintClassifier(generation="mean").fit(X, y, encoder_id="timm:tf_efficientnet_lite0").save(
        tmp_path / "clf.safetensors")
    image = sorted((EXAMPLES / "bag").iterdir())[0]
    for device in ("cuda", "cuda:7"):
        code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "--device", device)
        assert code == 2 and "no CUDA GPU" in err and "classifier" not in err
