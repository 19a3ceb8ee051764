"""Tests of ``imprint.stages.heads``: the heads: how a query is scored against each proxy, higher is closer; one file
per method, declared here with the settings each reads (imported when first used: this catalogue imports without
torch)."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier


@pytest.mark.parametrize("preset", ["gda", "fecam", "ranpac", "tip_adapter", "simpleshot"])
def test_every_head_saves_loads_and_exports_with_the_same_scores(correlated, tmp_path, preset):
    X, y = correlated
    clf = ImprintClassifier.from_preset(preset).fit(X.astype(np.float32), y)
    path = tmp_path / f"{preset}.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert loaded.tuned_ == clf.tuned_ and loaded.get_params() == clf.get_params()
    with torch.inference_mode():
        exported = clf.to_torch()(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(exported, clf.decision_function(X), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("preset", ["gda", "fecam", "ranpac", "tip_adapter", "simpleshot", "imprint"])
def test_degenerate_support_sets_give_finite_scores(preset):
    rng = np.random.default_rng(0)
    d = 64
    few = rng.normal(size=(9, d))  # fewer samples than dimensions
    cases = {
        "fewer samples than dimensions": (few, np.repeat([0, 1, 2], 3)),
        "duplicated samples": (np.repeat(few[:3], 4, axis=0), np.repeat([0, 1, 2], 4)),
        "constant features": (np.hstack([few[:, :32], np.ones((9, 32))]), np.repeat([0, 1, 2], 3)),
        "one sample in a class": (few[:7], np.array([0, 0, 0, 1, 1, 1, 2])),
        "a class with no variance": (np.vstack([few[:6], np.repeat(few[6:7], 3, axis=0)]), np.repeat([0, 1, 2], 3)),
    }
    queries = rng.normal(size=(5, d))
    for case, (X, y) in cases.items():
        tunes = preset in ("gda", "ranpac", "tip_adapter")  # fecam: the published fixed shrinkage
        with pytest.warns(UserWarning, match="too few support samples to tune") if case == "one sample in a class" \
                and tunes else nullcontext():
            clf = ImprintClassifier.from_preset(preset).fit(X, y)
        for inputs in (X, queries):
            scores = clf.decision_function(inputs)
            assert np.isfinite(scores).all(), (preset, case)
            assert np.isfinite(clf.predict_proba(inputs)).all(), (preset, case)
