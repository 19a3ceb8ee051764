"""Tests of ``imprint.estimator.saving``: a fitted classifier to and from its file: what the estimator records (its
settings, classes, encoder, the plug-ins of its stages), each component's own part (``state`` / ``restore``), and
the checks that a file's parts agree with each other."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_line_error

from imprint import ClassifierFileError, ImprintClassifier


@pytest.mark.parametrize("settings", [
    dict(generation="kmeans", k=5),
    dict(generation="mean", norm_pre="none", norm_post="quantile", norm_inf="quantile"),
    dict(generation="all", aggregation="mnn", m=3, mnn_weights="distance", metric="euclidean"),
])
def test_save_load_round_trip(tmp_path, mixture, settings):
    X, y = mixture
    labels = np.array([f"c{c}" for c in y])
    clf = ImprintClassifier(**settings).fit(X, labels, encoder_id="timm:tf_efficientnet_lite0")
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert list(loaded.classes_) == list(clf.classes_)
    assert loaded.get_params() == clf.get_params()
    assert loaded.encoder_id_ == "timm:tf_efficientnet_lite0"
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"


def test_load_rejects_bad_files_with_clear_errors(tmp_path, fitted):
    clf, _, _ = fitted
    good = tmp_path / "good.safetensors"
    clf.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a classifier at all")
    for path in (truncated, garbage):
        one_line_error(lambda: ImprintClassifier.load(path), "corrupt or truncated", ClassifierFileError)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    meta = json.loads(header["__metadata__"]["imprint"])

    def rewrite(name, change, sign=True):
        from safetensors.numpy import load_file

        from imprint.io.classifier_file import file_digest

        edited = dict(meta)
        change(edited)
        if sign:  # a file that looks consistent: its checksum computed over the change
            edited["digest"] = file_digest(edited, load_file(good))
        new_header = dict(header, __metadata__={"imprint": json.dumps(edited)})
        blob = json.dumps(new_header).encode()
        blob += b" " * (-len(blob) % 8)
        path = tmp_path / name
        path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + header_len:])
        return path

    newer = rewrite("newer.safetensors", lambda m: m.update(format_version=99))
    one_line_error(lambda: ImprintClassifier.load(newer), "format version 99", ClassifierFileError)
    wrong_dim = rewrite("dim.safetensors", lambda m: m.update(embedding_dim=512))
    one_line_error(lambda: ImprintClassifier.load(wrong_dim), "inconsistent", ClassifierFileError)
    swapped = rewrite("swapped.safetensors", lambda m: m.update(classes=m["classes"][::-1]), sign=False)
    one_line_error(lambda: ImprintClassifier.load(swapped), "altered or damaged", ClassifierFileError)
    one_line_error(lambda: ImprintClassifier.load(good, expected_dim=512), "fitted on 32-dimensional",
                   ClassifierFileError)
    with pytest.raises(FileNotFoundError, match="not found"):
        ImprintClassifier.load(tmp_path / "missing.safetensors")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, fitted, monkeypatch):
    clf, X, _ = fitted
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    before = path.read_bytes()

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr("imprint.core.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        clf.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temp file left behind


def test_unsavable_labels_are_named(tmp_path, mixture):
    X, y = mixture
    clf = ImprintClassifier(k=2).fit(X, y)
    clf.classes_ = np.array([(1, 2)] * 6 + [None], dtype=object)[:6]
    with pytest.raises(ValueError, match="cannot be saved"):
        clf.save(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
