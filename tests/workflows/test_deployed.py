"""Tests of ``imprint.workflows.deployed``: a saved classifier together with the encoder it was fitted with, loaded
so that what a file says never makes imprint download weights or read a checkpoint on its own: only packaged
encoders are built from the id a file records; any other must be named by the caller."""
from __future__ import annotations

import runpy
import sys

import pytest
from conftest import EXAMPLES, ROOT, run

from imprint import ImprintClassifier


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


def test_the_embed_in_app_example_prints_its_usage_and_classifies(tmp_path, capsys, cache_flags, monkeypatch):
    """The example run as a script (in this process: the same interpreter, without a second start-up of torch)."""
    example = str(ROOT / "examples" / "embed_in_app.py")
    monkeypatch.setattr(sys, "argv", [example])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(example, run_name="__main__")
    assert str(exited.value).startswith("usage: python examples/embed_in_app.py")
    clf = tmp_path / "c.safetensors"
    assert run(capsys, "fit", EXAMPLES, "-o", clf, "--preset", "simpleshot", *cache_flags)[0] == 0
    bag = sorted((EXAMPLES / "bag").glob("*.png"))[0]
    monkeypatch.setattr(sys, "argv", [example, str(clf), str(bag)])
    runpy.run_path(example, run_name="__main__")
    assert capsys.readouterr().out.startswith(f"{bag}: bag (")
