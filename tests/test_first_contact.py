"""First contact: the command line, its help, the reports and the API as a new user meets them (each finding of
the first-contact review, reproduced, then fixed)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, copy_examples, run
from PIL import Image

from imprint import ImprintClassifier

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def small_folder(tmp_path):
    return copy_examples(tmp_path / "images")


@pytest.fixture()
def cache(tmp_path):
    return ["--cache-dir", str(tmp_path / "cache"), "--quiet"]


def test_the_top_level_help_and_every_subcommand_help_run(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and "fit" in out and "predict" in out and not err
    assert run(capsys, "-h")[0] == 0
    from imprint.cli.commands import COMMANDS

    for command in COMMANDS:
        code, out, err = run(capsys, command, "--help")
        assert code == 0 and out.startswith(f"usage: imprint {command}"), (command, err)


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`imprint presets | head`: when the reader has gone, the command exits 0 with nothing on stderr."""
    command = f'"{sys.executable}" -m imprint.cli presets | true'  # `true` exits before a line is written
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_typo_is_one_line_naming_the_fix(capsys, tmp_path):
    code, out, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x", "--generation", "kmean")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'kmeans'" in err and "usage" not in err
    code, out, err = run(capsys, "fitt")
    assert code == 2 and err.count("\n") == 1 and "invalid choice: 'fitt'" in err


def test_shots_zero_is_refused_not_ignored(capsys, tmp_path, small_folder, cache):
    code, out, err = run(capsys, "fit", small_folder, "-o", tmp_path / "c.safetensors", "--shots", "0", *cache)
    assert code == 2 and "--shots must be an integer >= 1; got 0" in err
    assert not (tmp_path / "c.safetensors").exists()


def test_a_class_too_small_to_hold_out_is_named_and_left_out_of_macro_f1(capsys, tmp_path, small_folder, cache):
    lonely = small_folder / "dress"
    lonely.mkdir()
    shutil.copy(next(iter(sorted((EXAMPLES / "dress").iterdir()))), lonely / "one.png")
    code, out, err = run(capsys, "fit", small_folder, "-o", tmp_path / "c.safetensors", "--test-fraction", "0.3",
                         *cache)
    assert code == 0, err
    assert "1 class(es) have too few images to hold any out and are not in the held-out scores: dress" in err
    accuracy = float(out.split("held-out accuracy: ")[1].split()[0])
    macro = float(out.split("macro-F1: ")[1].split()[0])
    assert "over 3 class(es)" in out and abs(macro - accuracy) < 0.15  # not dragged down by an F1 of 0
    assert "chance level" in out


def test_fit_says_what_a_path_is_and_reads_embeddings_files(capsys, tmp_path, small_folder, cache):
    image = next(iter(sorted((small_folder / "bag").iterdir())))
    code, out, err = run(capsys, "fit", image, "-o", tmp_path / "c.safetensors", *cache)
    assert code == 2 and "is a single image; imprinting learns from a folder with one sub-folder per class" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((small_folder / "bag").iterdir())[:3]:
        shutil.copy(path, flat / path.name)
    code, out, err = run(capsys, "fit", flat, "-o", tmp_path / "c.safetensors", *cache)
    assert code == 2 and "holds 3 image(s) but no class sub-folders" in err
    assert run(capsys, "embed", small_folder, "-o", tmp_path / "emb.npz", *cache)[0] == 0
    code, out, err = run(capsys, "fit", tmp_path / "emb.npz", "-o", tmp_path / "c.safetensors", "--test-fraction",
                         "0.25", *cache)
    assert code == 0, err
    assert "imprinted 3 classes from" in out and "embeddings" in out and "held-out accuracy" in out
    assert ImprintClassifier.load(tmp_path / "c.safetensors").encoder_id_ == "timm:tf_efficientnet_lite0"


def test_written_files_get_normal_permissions(capsys, tmp_path, small_folder, cache):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "c.safetensors"
        assert run(capsys, "fit", small_folder, "-o", out, *cache)[0] == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o077)
        assert run(capsys, "fit", small_folder, "-o", tmp_path / "private.safetensors", *cache)[0] == 0
        assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_one_image_gets_a_table_and_programs_get_csv_or_json(capsys, tmp_path, small_folder, cache):
    clf = tmp_path / "c.safetensors"
    assert run(capsys, "fit", small_folder, "-o", clf, *cache)[0] == 0
    image = next(iter(sorted((small_folder / "sneaker").iterdir())))
    code, out, err = run(capsys, "predict", clf, image, "--format", "table", *cache)
    assert code == 0 and out.splitlines()[0].split() == ["image", "class", "probability", "next", "best"]
    assert image.name in out and "%" in out and "," not in out.splitlines()[2].split("%")[0]
    code, out, err = run(capsys, "predict", clf, image, *cache)  # not a terminal: CSV
    assert list(csv.reader(out.splitlines()))[0] == ["path", "label", "probability", "top_k"]
    code, out, err = run(capsys, "predict", clf, image, "--format", "json", *cache)
    assert json.loads(out)[0]["label"] in ("bag", "sneaker", "trouser")


def test_the_confusion_matrix_has_a_title_with_the_accuracy(capsys, tmp_path, small_folder, cache):
    clf = tmp_path / "c.safetensors"
    assert run(capsys, "fit", small_folder, "-o", clf, *cache)[0] == 0
    picture = tmp_path / "cm.png"
    code, out, err = run(capsys, "eval", clf, small_folder, "--confusion", picture, *cache)
    assert code == 0 and "chance level" in out
    with Image.open(picture) as image:
        assert image.size[0] > 400
    code, out, err = run(capsys, "eval", clf, small_folder, "--format", "json", *cache)
    report = json.loads(out)
    assert set(report) >= {"accuracy", "chance", "macro_f1", "per_class"} and len(report["per_class"]) == 3


def test_info_needs_no_model_and_says_when_k_was_capped(tmp_path, mixture):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[:14] for c in range(6)])
    path = tmp_path / "capped.safetensors"
    ImprintClassifier(k=20).fit(X[rows], y[rows]).save(path)
    code = ("import sys\nfrom imprint.cli import main\ncode = main(['info', sys.argv[1]])\n"
            "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert "k=20: 6 of 6 classes have fewer than 20 proxies" in done.stdout


def test_help_and_mistakes_are_answered_before_torch_is_imported(tmp_path, mixture):
    """Every command's --help, and a mistake in its arguments, paths, preset, settings or output, is answered
    without importing torch (1.2 s) or scikit-learn: the fit flags come from the settings snapshot. (A grid
    config's contents are checked against the stages themselves, after they are imported.)"""
    X, y = mixture
    ImprintClassifier(method="gda").fit(X[::10], y[::10]).save(tmp_path / "c.safetensors")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("not imprint's")
    folder, classifier, missing = str(EXAMPLES), str(tmp_path / "c.safetensors"), str(tmp_path / "missing")
    mistakes = [
        (["fit", missing, "-o", str(tmp_path / "o.safetensors")], "image folder not found"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--k", "0"], "k must be an integer >= 1"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--preset", "gdaa"], "unknown preset 'gdaa'"),
        (["fit", folder, "-o", str(foreign)], "is not a classifier file imprint wrote"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--test-dir", missing], "image folder not found"),
        (["fewshot", folder, "--metric", "cosine"], "unknown metric 'cosine'"),
        (["embed", missing, "-o", str(tmp_path / "e.npz")], "image folder not found"),
        (["embed", folder, "-o", str(foreign)], "exists and is not an embeddings store"),
        (["collapse", str(foreign)], "is a file, not an image folder"),
        (["inspect", folder, "-o", str(tmp_path / "r"), "--preset", "nope"], "unknown preset 'nope'"),
        (["eval", missing + ".safetensors", folder], "classifier file not found"),
        (["eval", classifier, missing], "image folder not found"),
        (["predict", str(foreign), folder], "not a readable classifier file"),
        (["export", classifier, "-o", str(foreign)], "is not an ONNX model imprint wrote"),
        (["serve", classifier, "--port", "70000"], "is not a port number"),
        (["grid", missing + ".yaml", "--out", str(tmp_path / "g")], "file not found"),
        (["report", str(tmp_path)], "holds no grid results (no manifest.json)"),
    ]
    code = ("import json, sys\nfrom imprint.cli import main\nresults = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    results.append([main(argv), 'torch' in sys.modules, 'sklearn' in sys.modules])\n"
            "print(json.dumps(results))")
    helps = [[command, "--help"] for command in ("fit", "fewshot", "predict", "eval", "embed", "serve", "grid",
                                                 "report")]
    done = subprocess.run([sys.executable, "-c", code, json.dumps(helps + [argv for argv, _ in mistakes])],
                          capture_output=True, text=True, timeout=120)
    results = json.loads(done.stdout.splitlines()[-1])
    assert results == [[0, False, False]] * len(helps) + [[2, False, False]] * len(mistakes), done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("imprint: error:")]
    assert len(errors) == len(mistakes)
    for line, (argv, expected) in zip(errors, mistakes):
        assert expected in line, (argv, line)
    assert "--shrinkage" in done.stdout and "--projection-dim" in done.stdout


def test_the_api_refuses_queries_from_another_encoder_and_exports_class_names(mixture):
    from imprint.core.embedded import tagged

    X, y = mixture
    names = np.array([f"c{c}" for c in y])
    clf = ImprintClassifier(generation="mean").fit(tagged(X, "timm:tf_efficientnet_lite0"), names)
    assert clf.encoder_id_ == "timm:tf_efficientnet_lite0"
    with pytest.raises(ValueError, match="these embeddings come from timm:tf_efficientnet_lite1 but the classifier "
                                         "was fitted on timm:tf_efficientnet_lite0 embeddings"):
        clf.predict(tagged(X, "timm:tf_efficientnet_lite1"))
    assert (clf.predict(X) == clf.predict(tagged(X, "timm:tf_efficientnet_lite0"))).all()  # plain arrays pass
    assert clf.to_torch().classes == sorted(set(names))


def test_encoders_tag_what_they_embed(tmp_path):
    from imprint.encoders import create_encoder

    encoder = create_encoder("timm:tf_efficientnet_lite0@random", device="cpu")
    X = encoder.encode_images([np.zeros((8, 8), dtype=np.uint8)] * 2)
    assert X.encoder_id == "timm:tf_efficientnet_lite0@random" and X[1:].encoder_id == X.encoder_id


def test_an_interrupted_grid_reports_what_finished_and_records_no_failure(capsys, tmp_path, monkeypatch):
    import yaml

    from imprint.grid import runner

    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"datasets": [{"folder": str(EXAMPLES), "support_per_class": 12,
                                                    "val_per_class": 0, "test_per_class": 6}],
                                      "task_splits": ["all", "even", "odd"], "generation": "mean"}))
    real, calls = runner.evaluate_cell, []

    def stopped_by_ctrl_c(cell, data):
        calls.append(cell)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell, data)

    monkeypatch.setattr(runner, "evaluate_cell", stopped_by_ctrl_c)
    code, out, err = run(capsys, "grid", config, "--out", tmp_path / "out", "--workers", "1",
                         "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 130 and err.strip().splitlines()[-1] == "imprint: interrupted" and "Traceback" not in err
    assert len(list((tmp_path / "out" / "cells").glob("*.json"))) == 1
    assert not list((tmp_path / "out").glob("failed/*.json"))
    assert (tmp_path / "out" / "summary.md").is_file()  # what finished is reported


def test_eval_and_predict_say_which_images_the_classifier_was_fitted_on(tmp_path, capsys, cache):
    """`imprint eval CLF examples/fashion` reported 0.91 without a word that 140 of the 200 images were the support
    set (held out: 0.70): the file records a content digest of every support image, and eval, predict and info
    use them."""
    clf = tmp_path / "fashion.safetensors"
    code, out, _ = run(capsys, "fit", EXAMPLES, "--test-fraction", "0.3", "-o", clf, *cache)
    assert code == 0 and f"imprint predict {clf} IMAGE_OR_FOLDER" in out and f"imprint serve {clf}" in out
    held_out = float(out.split("held-out accuracy: ")[1].split()[0])
    code, out, err = run(capsys, "eval", clf, EXAMPLES, *cache)
    assert code == 0 and "140 of these 200 images are images the classifier was fitted on" in err
    assert f"held out at fit it scored {held_out:.4f}" in err
    code, out, _ = run(capsys, "eval", clf, EXAMPLES, "--format", "json", *cache)
    assert json.loads(out)["in_support"] == 140
    copies = tmp_path / "copies"
    copies.mkdir()
    bags = sorted((EXAMPLES / "bag").glob("*.png"))
    for bag in bags:
        shutil.copy(bag, copies / f"renamed_{bag.name}")  # a copy under another name is the same image
    code, out, err = run(capsys, "predict", clf, copies, "--format", "json", *cache)
    found = json.loads(out)
    assert code == 0 and sum(p["in_support"] for p in found) == 14 and len(found) == 20
    assert "14 of these 20 images are images the classifier was fitted on" in err
    code, out, _ = run(capsys, "info", clf)
    assert f"fitted on: images of {EXAMPLES} (140 distinct support images); accuracy on the 60 images held out " \
           f"at fit: {held_out:.4f}" in out
    ImprintClassifier.load(clf).save(tmp_path / "resaved.safetensors")  # the record survives a load and a save
    assert "140 distinct support images" in run(capsys, "info", tmp_path / "resaved.safetensors")[1]


def test_fit_help_says_what_a_plain_fit_runs(capsys):
    code, out, _ = run(capsys, "fit", "--help")
    assert code == 0 and "a fit runs --method auto" in out and "tukey / mean / mahalanobis" in out
    assert "(default: kmeans, with a stage flag; else the chosen method's)" in " ".join(out.split())


def test_the_embed_in_app_example_prints_its_usage_and_classifies(tmp_path, capsys, cache):
    example = ROOT / "examples" / "embed_in_app.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("usage: python examples/embed_in_app.py")
    assert run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--preset", "simpleshot", *cache)[0] == 0
    bag = sorted((EXAMPLES / "bag").glob("*.png"))[0]
    done = subprocess.run([sys.executable, str(example), str(tmp_path / "c.safetensors"), str(bag)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(f"{bag}: bag ("), done.stderr
