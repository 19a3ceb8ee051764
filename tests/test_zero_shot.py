"""Text proxies join the support set: classes imprinted from 0 images, and from text plus images."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fashion"


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_text_only_and_mixed_classes(mixture):
    X, y = mixture
    rng = np.random.default_rng(0)
    text = rng.normal(size=(3, X.shape[1])).astype(np.float32)
    images = y < 2
    clf = ImprintClassifier(generation="mean").fit(X[images], y[images], text_embeddings=text,
                                                   text_labels=[0, 1, 9])
    assert list(clf.classes_) == [0, 1, 9]
    np.testing.assert_allclose(clf.proxies_[2], unit(text[2]), rtol=1e-5)  # class 9: from text alone
    with_text = unit(np.vstack([unit(X[y == 0]), unit(text[:1])]).mean(0))
    np.testing.assert_allclose(clf.proxies_[0], with_text, rtol=1e-4, atol=1e-6)
    pure = ImprintClassifier(generation="mean").fit(None, None, text_embeddings=text, text_labels=["a", "b", "c"])
    assert list(pure.predict(text)) == ["a", "b", "c"]


def test_text_embeddings_are_validated(mixture):
    X, y = mixture
    with pytest.raises(ValueError, match="X has 32 features, but the text embeddings is expecting 8"):
        ImprintClassifier().fit(X, y, text_embeddings=np.ones((2, 8)), text_labels=[0, 1])
    with pytest.raises(ValueError, match="different lengths"):
        ImprintClassifier().fit(X, y, text_embeddings=np.ones((2, 32)), text_labels=[0])


def test_cli_zero_shot_imprints_an_empty_class_folder(tmp_path, capsys, tiny_model_name):
    root = tmp_path / "images"
    for name in ("bag", "sneaker"):
        shutil.copytree(EXAMPLES / name, root / name)
    (root / "ankle_boot").mkdir()
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\n")
    out = tmp_path / "clf.safetensors"
    code = main(["fit", str(root), "-o", str(out), "--zero-shot", "--templates", str(templates), "--encoder",
                 f"open_clip:{tiny_model_name}/random", "--generation", "mean", "--quiet", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    clf = ImprintClassifier.load(out)
    assert list(clf.classes_) == ["ankle_boot", "bag", "sneaker"]
    assert clf.encoder_id_ == f"open_clip:{tiny_model_name}/random"
    code = main(["fit", str(root), "-o", str(tmp_path / "x"), "--zero-shot", "--quiet", "--no-cache"])
    assert code == 2 and "needs an encoder with a text tower" in capsys.readouterr().err
