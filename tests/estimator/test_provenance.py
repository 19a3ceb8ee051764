"""Tests of ``imprint.estimator.provenance``: where a classifier's support set came from: the source it was fitted
from, a content digest of every support image (when it was fitted from image files) and its accuracy on the images
held out at fit."""
from __future__ import annotations

import json
import shutil

from conftest import EXAMPLES, run

from imprint import ImprintClassifier


def test_eval_and_predict_say_which_images_the_classifier_was_fitted_on(tmp_path, capsys, cache_flags):
    """`imprint eval CLF examples/fashion` reported 0.91 without a word that 140 of the 200 images were the support
    set (held out: 0.70): the file records a content digest of every support image, and eval, predict and info
    use them."""
    clf = tmp_path / "fashion.safetensors"
    code, out, _ = run(capsys, "fit", EXAMPLES, "--test-fraction", "0.3", "-o", clf, *cache_flags)
    assert code == 0 and f"imprint predict {clf} IMAGE_OR_FOLDER" in out and f"imprint serve {clf}" in out
    held_out = float(out.split("held-out accuracy: ")[1].split()[0])
    code, out, err = run(capsys, "eval", clf, EXAMPLES, *cache_flags)
    assert code == 0 and "140 of these 200 images are images the classifier was fitted on" in err
    assert f"held out at fit it scored {held_out:.4f}" in err
    code, out, _ = run(capsys, "eval", clf, EXAMPLES, "--format", "json", *cache_flags)
    assert json.loads(out)["in_support"] == 140
    copies = tmp_path / "copies"
    copies.mkdir()
    bags = sorted((EXAMPLES / "bag").glob("*.png"))
    for bag in bags:
        shutil.copy(bag, copies / f"renamed_{bag.name}")  # a copy under another name is the same image
    code, out, err = run(capsys, "predict", clf, copies, "--format", "json", *cache_flags)
    found = json.loads(out)
    assert code == 0 and sum(p["in_support"] for p in found) == 14 and len(found) == 20
    assert "14 of these 20 images are images the classifier was fitted on" in err
    code, out, _ = run(capsys, "info", clf)
    assert f"fitted on: images of {EXAMPLES} (140 distinct support images); accuracy on the 60 images held out " \
           f"at fit: {held_out:.4f}" in out
    ImprintClassifier.load(clf).save(tmp_path / "resaved.safetensors")  # the record survives a load and a save
    assert "140 distinct support images" in run(capsys, "info", tmp_path / "resaved.safetensors")[1]
