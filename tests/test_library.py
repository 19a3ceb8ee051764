"""Every command is one library call: a Python user imprints, evaluates, predicts and embeds a folder exactly as
the command line does, and gets the same numbers."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES, copy_examples, run

import imprint


@pytest.fixture()
def folder(tmp_path):
    return copy_examples(tmp_path / "images", classes=("bag", "coat", "sneaker", "trouser"))


def test_fit_folder_is_what_imprint_fit_does(folder, tmp_path, capsys):
    cache = {"cache_dir": tmp_path / "cache"}
    clf = imprint.fit_folder(folder, preset="qi", test_fraction=0.3, seed=1, output=tmp_path / "a.safetensors",
                             **cache)
    report = clf.fit_report_
    assert report.images and report.n_support == 56 and report.output == tmp_path / "a.safetensors"
    assert 0.5 < report.held_out.accuracy <= 1.0 and len(report.held_out.labels) == 24
    code, out, err = run(capsys, "fit", folder, "-o", tmp_path / "b.safetensors", "--preset", "qi",
                         "--test-fraction", "0.3", "--seed", "1", "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 0, err
    assert f"held-out accuracy: {report.held_out.accuracy:.4f}" in out
    cli = imprint.ImprintClassifier.load(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(cli.proxies_, clf.proxies_)


def test_evaluate_and_predict_folders_from_python(folder, tmp_path):
    clf = imprint.fit_folder(folder, generation="mean", cache_dir=tmp_path / "cache")
    result = imprint.evaluate_folder(clf, folder, cache_dir=tmp_path / "cache")
    assert result.evaluation.accuracy > 0.8 and result.payload()["images"] == 80
    found = imprint.predict_images(clf, [folder / "bag"], top_k=2, cache_dir=tmp_path / "cache")
    assert len(found) == 20 and all(len(p.top) == 2 for p in found)
    assert sum(p.label == "bag" for p in found) >= 15
    clf.save(tmp_path / "c.safetensors")  # a file works as well as a fitted classifier
    again = imprint.predict_images(tmp_path / "c.safetensors", [folder / "bag"], cache_dir=tmp_path / "cache")
    assert [p.label for p in again] == [p.label for p in found]
    with pytest.raises(imprint.UserError, match="--top-k must be an integer >= 1"):
        imprint.predict_images(clf, [folder / "bag"], top_k=0)


def test_embed_folder_writes_what_fit_folder_reads(folder, tmp_path):
    report = imprint.embed_folder(folder, tmp_path / "e.npz", cache_dir=tmp_path / "cache")
    assert report.embedded == 80 and report.classes == 4 and not report.store
    from_file = imprint.fit_folder(tmp_path / "e.npz", generation="mean")
    from_images = imprint.fit_folder(folder, generation="mean", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(from_file.proxies_, from_images.proxies_, rtol=1e-6, atol=1e-6)
    assert not from_file.fit_report_.images


def test_a_bug_is_shown_as_one_and_a_mistake_as_one_line(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x.safetensors", "--k", "0")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err

    def broken(*args, **kwargs):
        raise KeyError("an internal invariant")

    monkeypatch.setattr("imprint.workflows.fit.fit_folder", broken)
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x.safetensors")
    assert code == 3 and "Traceback" in err and "this is a bug in imprint" in err and "please report it" in err
