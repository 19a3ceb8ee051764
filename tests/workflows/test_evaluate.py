"""Tests of ``imprint.workflows.evaluate``: how well a classifier does on labelled images: accuracy, chance level and
per-class scores, open-set rates, a confusion-matrix picture, and the evaluation of an image folder as one library
call (``imprint eval``)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import EXAMPLES, run
from PIL import Image

import imprint
from imprint.cli import main


def test_evaluate_and_predict_folders_from_python(four_classes, tmp_path):
    clf = imprint.fit_folder(four_classes, generation="mean", cache_dir=tmp_path / "cache")
    result = imprint.evaluate_folder(clf, four_classes, cache_dir=tmp_path / "cache")
    assert result.evaluation.accuracy > 0.8 and result.payload()["images"] == 80
    found = imprint.predict_images(clf, [four_classes / "bag"], top_k=2, cache_dir=tmp_path / "cache")
    assert len(found) == 20 and all(len(p.top) == 2 for p in found)
    assert sum(p.label == "bag" for p in found) >= 15
    clf.save(tmp_path / "c.safetensors")  # a file works as well as a fitted classifier
    again = imprint.predict_images(tmp_path / "c.safetensors", [four_classes / "bag"], cache_dir=tmp_path / "cache")
    assert [p.label for p in again] == [p.label for p in found]
    with pytest.raises(imprint.UserError, match="--top-k must be an integer >= 1"):
        imprint.predict_images(clf, [four_classes / "bag"], top_k=0)


def test_the_command_line_rejects_and_reports_open_set_metrics(tmp_path, capsys, cache_flags):
    root = tmp_path / "known"
    for name in ("bag", "sneaker", "trouser", "dress"):
        shutil.copytree(EXAMPLES / name, root / name)
    unknown = tmp_path / "other"
    shutil.copytree(EXAMPLES / "coat", unknown / "coat")
    clf = tmp_path / "clf.safetensors"
    assert main(["fit", str(root), "-o", str(clf), "--generation", "mean", "--reject", "mahalanobis",
                 "--reject-rate", "0.1", *cache_flags]) == 0
    capsys.readouterr()
    assert main(["predict", str(clf), str(unknown), "-o", str(tmp_path / "p.csv"), *cache_flags]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert "unknown_score" in rows[0] and {r["label"] for r in rows} <= {"unknown", "bag", "sneaker", "trouser",
                                                                          "dress"}
    assert main(["eval", str(clf), str(root), "--unknown", str(unknown), "--format", "json", *cache_flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.5 < report["open_set"]["auroc"] <= 1 and report["open_set"]["target_rate"] == 0.1
    assert report["open_set"]["n_unknown"] == 20
    plain = tmp_path / "plain.safetensors"
    assert main(["fit", str(root), "-o", str(plain), "--generation", "mean", *cache_flags]) == 0
    capsys.readouterr()
    assert main(["eval", str(plain), str(root), "--unknown", str(unknown), *cache_flags]) == 2
    assert "has none: fit with --reject" in capsys.readouterr().err


def test_eval_draws_a_reliability_diagram_and_reports_rejection_apart(tmp_path, capsys, cache_flags):
    assert run(capsys, "fit", EXAMPLES, "-o", tmp_path / "r.safetensors", "--preset", "gda", "--reject", "max_score",
               *cache_flags)[0] == 0
    code, out, err = run(capsys, "eval", tmp_path / "r.safetensors", EXAMPLES, "--calibration", tmp_path / "rel.png",
                         *cache_flags)
    assert code == 0, err
    assert "closed set: every image gets its best class" in out and "rejected as unknown" in out
    assert "expected calibration error" in out
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run(capsys, "info", tmp_path / "r.safetensors")
    assert "threshold" in out
    code, out, _ = run(capsys, "predict", tmp_path / "r.safetensors", EXAMPLES / "bag", "--format", "table",
                       *cache_flags)
    assert code == 0 and "unknown score vs threshold" in out


def test_a_class_too_small_to_hold_out_is_named_and_left_out_of_macro_f1(capsys, tmp_path, three_classes, cache_flags):
    lonely = three_classes / "dress"
    lonely.mkdir()
    shutil.copy(next(iter(sorted((EXAMPLES / "dress").iterdir()))), lonely / "one.png")
    code, out, err = run(capsys, "fit", three_classes, "-o", tmp_path / "c.safetensors", "--test-fraction", "0.3",
                         *cache_flags)
    assert code == 0, err
    assert "1 class(es) have too few images to hold any out and are not in the held-out scores: dress" in err
    accuracy = float(out.split("held-out accuracy: ")[1].split()[0])
    macro = float(out.split("macro-F1: ")[1].split()[0])
    assert "over 3 class(es)" in out and abs(macro - accuracy) < 0.15  # not dragged down by an F1 of 0
    assert "chance level" in out


def test_the_confusion_matrix_has_a_title_with_the_accuracy(capsys, tmp_path, three_classes, cache_flags):
    clf = tmp_path / "c.safetensors"
    assert run(capsys, "fit", three_classes, "-o", clf, *cache_flags)[0] == 0
    picture = tmp_path / "cm.png"
    code, out, err = run(capsys, "eval", clf, three_classes, "--confusion", picture, *cache_flags)
    assert code == 0 and "chance level" in out
    with Image.open(picture) as image:
        assert image.size[0] > 400
    code, out, err = run(capsys, "eval", clf, three_classes, "--format", "json", *cache_flags)
    report = json.loads(out)
    assert set(report) >= {"accuracy", "chance", "macro_f1", "per_class"} and len(report["per_class"]) == 3
