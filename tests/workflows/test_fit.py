"""Tests of ``imprint.workflows.fit``: ``imprint fit`` as one library call: imprint a classifier from a folder of
images, a store or an embeddings file (``fit_folder``)."""
from __future__ import annotations

import numpy as np
from conftest import EXAMPLES, copy_examples, run

import imprint
from imprint import ImprintClassifier


def test_fit_folder_is_what_imprint_fit_does(four_classes, tmp_path, capsys):
    cache = {"cache_dir": tmp_path / "cache"}
    clf = imprint.fit_folder(four_classes, preset="qi", test_fraction=0.3, seed=1, output=tmp_path / "a.safetensors",
                             **cache)
    report = clf.fit_report_
    assert report.images and report.n_support == 56 and report.output == tmp_path / "a.safetensors"
    assert 0.5 < report.held_out.accuracy <= 1.0 and len(report.held_out.labels) == 24
    code, out, err = run(capsys, "fit", four_classes, "-o", tmp_path / "b.safetensors", "--preset", "qi",
                         "--test-fraction", "0.3", "--seed", "1", "--quiet")
    assert code == 0, err
    assert f"held-out accuracy: {report.held_out.accuracy:.4f}" in out
    cli = imprint.ImprintClassifier.load(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(cli.proxies_, clf.proxies_)


def test_fit_keep_examples_from_the_command_line(tmp_path, capsys):
    from conftest import run

    folder = copy_examples(tmp_path / "images", per_class=6)
    code, out, _ = run(capsys, "fit", folder, "-o", tmp_path / "c.safetensors", "--preset", "qi", "--keep-examples",
                       "--quiet")
    assert code == 0
    kept = ImprintClassifier.load(tmp_path / "c.safetensors").examples_
    assert sorted(kept.by_class) == ["bag", "sneaker", "trouser"] and len(kept.of("bag")) == 6


def test_the_command_line_shows_the_chosen_method(tmp_path, capsys):
    code, out, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--test-fraction", "0.3", "--quiet")
    assert code == 0, err
    assert "method=" in out and "method_cv_accuracy=" in out and "held-out accuracy" in out
    code, out, _ = run(capsys, "info", tmp_path / "c.safetensors")
    assert code == 0 and "chosen on the support set: method=" in out and "generation=kmeans" not in out
    code, out, _ = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "i.safetensors", "--preset", "imprint", "--quiet")
    assert code == 0 and "method=" not in out  # the paper's configuration, one word away


def test_shots_zero_is_refused_not_ignored(capsys, tmp_path, three_classes, cache_flags):
    code, out, err = run(capsys, "fit", three_classes, "-o", tmp_path / "c.safetensors", "--shots", "0", *cache_flags)
    assert code == 2 and "--shots must be an integer >= 1; got 0" in err
    assert not (tmp_path / "c.safetensors").exists()
