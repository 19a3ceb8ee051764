"""Tests of ``imprint.workflows.predict``: predictions of images: each one's class, probability, alternatives and
unknown score, written as a table for people or CSV or JSON for programs (the format ``imprint predict`` writes
and recognises as its own), and the prediction of image files as one library call."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys

import pytest
from conftest import run


def test_predictions_of_files_whose_names_are_not_utf8_are_written(tmp_path, capsys, six_per_class, cache_flags):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    assert run(capsys, "fit", six_per_class, "-o", tmp_path / "clf.safetensors", *cache_flags)[0] == 0
    odd = os.fsencode(tmp_path) + b"/caf\xe9.png"
    shutil.copy(sorted((six_per_class / "bag").iterdir())[0], odd)
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", os.fsdecode(odd), "-o", tmp_path / "p.csv",
                       *cache_flags)
    assert code == 0, err
    data = (tmp_path / "p.csv").read_bytes()
    assert b"caf\xe9.png" in data and data.count(b"\n") == 2


def test_one_image_gets_a_table_and_programs_get_csv_or_json(capsys, tmp_path, three_classes, cache_flags):
    clf = tmp_path / "c.safetensors"
    assert run(capsys, "fit", three_classes, "-o", clf, *cache_flags)[0] == 0
    image = next(iter(sorted((three_classes / "sneaker").iterdir())))
    code, out, err = run(capsys, "predict", clf, image, "--format", "table", *cache_flags)
    assert code == 0 and out.splitlines()[0].split() == ["image", "class", "probability", "next", "best"]
    assert image.name in out and "%" in out and "," not in out.splitlines()[2].split("%")[0]
    code, out, err = run(capsys, "predict", clf, image, *cache_flags)  # not a terminal: CSV
    assert list(csv.reader(out.splitlines()))[0] == ["path", "label", "probability", "top_k"]
    code, out, err = run(capsys, "predict", clf, image, "--format", "json", *cache_flags)
    assert json.loads(out)[0]["label"] in ("bag", "sneaker", "trouser")
