"""Tests of ``imprint.cli.commands``: the ``imprint`` subcommands: each turns its arguments into one library call and
prints what it returns."""
from __future__ import annotations

import csv

from conftest import error_lines, run

CLASSES = ("bag", "sneaker", "trouser", "dress")


def test_fit_predict_eval_info_on_a_messy_folder(tmp_path, capsys, messy_folder):
    root, corrupt = messy_folder
    cache = tmp_path / "cache"
    clf = tmp_path / "clf.safetensors"
    code, out, err = run(capsys, "fit", root, "-o", clf, "--test-fraction", "0.3", "--cache-dir", cache,
                         "--quiet", "--workers", "1")
    assert code == 0, err
    assert "imprinted 4 classes" in out
    assert "held-out accuracy:" in out and float(out.split("held-out accuracy: ")[1].split()[0]) > 0.7
    assert str(corrupt) in err and "unreadable" in err
    assert "empty_class" in err and "README" not in err

    code, out, err = run(capsys, "predict", clf, root / "dress", root / "bag" / "00069.png", "-o",
                         tmp_path / "pred.csv", "--top-k", "2", "--cache-dir", cache, "--quiet", "--workers", "0")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "pred.csv").open()))
    assert len(rows) == 21 and set(rows[0]) == {"path", "label", "probability", "top_k"}
    assert sum(r["label"] == "dress" for r in rows[:20]) >= 15
    assert rows[0]["top_k"].count(";") == 1

    code, out, err = run(capsys, "eval", clf, root, "--confusion", tmp_path / "cm.png", "--cache-dir", cache,
                         "--quiet", "--workers", "0")
    assert code == 0, err
    assert "test accuracy:" in out and "macro-F1" in out and "sneaker" in out
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"

    code, out, err = run(capsys, "info", clf)
    assert code == 0 and "encoder: timm:tf_efficientnet_lite0" in out and "classes: 4" in out


def test_strict_mode_names_the_corrupt_file(tmp_path, capsys, messy_folder):
    root, corrupt = messy_folder
    code, out, err = run(capsys, "fit", root, "-o", tmp_path / "c.safetensors", "--strict", "--quiet", "--workers", "0")
    assert code == 2 and len(error_lines(err)) == 1 and str(corrupt) in error_lines(err)[0]
    assert not (tmp_path / "c.safetensors").exists()


def test_embed_writes_embeddings_labels_and_paths(tmp_path, capsys, messy_folder):
    import numpy as np

    root, corrupt = messy_folder
    code, out, err = run(capsys, "embed", root, "-o", tmp_path / "emb.npz", "--quiet", "--cache-dir",
                         tmp_path / "cache", "--workers", "0")
    assert code == 0, err
    with np.load(tmp_path / "emb.npz", allow_pickle=False) as data:
        assert data["embeddings"].shape == (80, 1280)
        assert sorted(set(data["labels"].tolist())) == sorted(CLASSES)
        assert str(corrupt) not in data["paths"].tolist() and str(data["encoder"]) == "timm:tf_efficientnet_lite0"
