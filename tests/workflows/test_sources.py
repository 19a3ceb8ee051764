"""Tests of ``imprint.workflows.sources``: where labelled support data comes from: an image folder (embedded on
demand), an embeddings store or an embeddings file; and which of its rows are support and which are held out."""
from __future__ import annotations

import shutil

from conftest import run

from imprint import ImprintClassifier


def test_fit_says_what_a_path_is_and_reads_embeddings_files(capsys, tmp_path, three_classes, cache_flags):
    image = next(iter(sorted((three_classes / "bag").iterdir())))
    code, out, err = run(capsys, "fit", image, "-o", tmp_path / "c.safetensors", *cache_flags)
    assert code == 2 and "is a single image; imprinting learns from a folder with one sub-folder per class" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((three_classes / "bag").iterdir())[:3]:
        shutil.copy(path, flat / path.name)
    code, out, err = run(capsys, "fit", flat, "-o", tmp_path / "c.safetensors", *cache_flags)
    assert code == 2 and "holds 3 image(s) but no class sub-folders" in err
    assert run(capsys, "embed", three_classes, "-o", tmp_path / "emb.npz", *cache_flags)[0] == 0
    code, out, err = run(capsys, "fit", tmp_path / "emb.npz", "-o", tmp_path / "c.safetensors", "--test-fraction",
                         "0.25", *cache_flags)
    assert code == 0, err
    assert "imprinted 3 classes from" in out and "embeddings" in out and "held-out accuracy" in out
    assert ImprintClassifier.load(tmp_path / "c.safetensors").encoder_id_ == "timm:tf_efficientnet_lite0"
