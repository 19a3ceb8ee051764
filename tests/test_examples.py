"""The example app: encoder + imprinted head as one module, same scores as the classifier."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from imprint import ImprintClassifier
from imprint.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_embed_in_app_example(tmp_path, capsys):
    clf_path = tmp_path / "fashion.safetensors"
    assert main(["fit", str(EXAMPLES / "fashion"), "-o", str(clf_path), "--quiet", "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    spec = importlib.util.spec_from_file_location("embed_in_app", EXAMPLES / "embed_in_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.ImageClassifier(str(clf_path))
    image = sorted((EXAMPLES / "fashion" / "trouser").iterdir())[0]
    label, probability = app.predict(str(image))
    assert label == "trouser" and 0 < probability <= 1
    clf = ImprintClassifier.load(clf_path)
    from imprint.data.folder import load_rgb

    with torch.inference_mode():
        pixels = app.preprocess(load_rgb(image))[None]
        embedding = app.encoder(pixels.contiguous(memory_format=torch.channels_last)).numpy()
        np.testing.assert_allclose(app(pixels).numpy(), clf.decision_function(embedding), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(app.head.probabilities(app(pixels)).numpy(), clf.predict_proba(embedding),
                                   rtol=1e-4, atol=1e-6)
