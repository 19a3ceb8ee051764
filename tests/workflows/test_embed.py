"""Tests of ``imprint.workflows.embed``: ``imprint embed`` as one library call: embed an image folder into an
embeddings file or a memory-mapped store, resumable, locally or with Ray (``embed_folder``)."""
from __future__ import annotations

import numpy as np

import imprint


def test_embed_folder_writes_what_fit_folder_reads(four_classes, tmp_path):
    report = imprint.embed_folder(four_classes, tmp_path / "e.npz", cache_dir=tmp_path / "cache")
    assert report.embedded == 80 and report.classes == 4 and not report.store
    from_file = imprint.fit_folder(tmp_path / "e.npz", generation="mean")
    from_images = imprint.fit_folder(four_classes, generation="mean", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(from_file.proxies_, from_images.proxies_, rtol=1e-6, atol=1e-6)
    assert not from_file.fit_report_.images
