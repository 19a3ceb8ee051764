"""Tests of ``imprint.io.embeddings_file``: the embeddings file written by ``imprint embed DIR -o FILE.npz``:
embeddings, labels, paths, encoder id."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run


@pytest.mark.parametrize("embeddings, labels, message", [
    (np.array([["a", "b"], ["c", "d"]]), np.array(["x", "y"]), "must be a non-empty 2-D array of numbers"),
    (np.ones((2, 4), np.float32), np.array([["x"], ["y"]]), "one label"),
    (np.ones((2, 4), np.float32), np.array(["x"]), "one label"),
])
def test_embeddings_files_of_the_wrong_shapes_or_types_are_one_line(tmp_path, capsys, embeddings, labels, message):
    path = tmp_path / "odd.npz"
    np.savez(path, embeddings=embeddings, labels=labels)
    code, _, err = run(capsys, "fit", path, "-o", tmp_path / "clf.safetensors")
    assert code == 2 and message in err and err.count("\n") == 1


def test_bytes_labels_in_an_embeddings_file_are_class_names(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    np.savez(tmp_path / "bytes.npz", embeddings=X, labels=np.array([b"cat", b"dog", b"caf\xe9"] * 4))
    code, out, err = run(capsys, "fit", tmp_path / "bytes.npz", "-o", tmp_path / "clf.safetensors", "--preset", "qi")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "clf.safetensors", "--json")
    import json

    assert sorted(json.loads(out)["classes"]) == sorted(["cat", "dog", "caf\udce9"])
