"""Tests of ``imprint.estimator.folds``: pipelines fitted inside cross-validation (the tuning of "auto" settings, the
calibration, the open set): a ``FoldFitter`` fits them on rows of the support set with the zero-shot text of the
classes present, or scores every fold from statistics all folds share where the pipeline allows it; a
``FoldModel`` answers in the support set's class codes."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("preset, shrinkage", [("gda", "gda"), ("tukey_gda", 0.2), ("gda", "ledoit_wolf")])
def test_a_fold_scores_its_held_out_rows_from_the_residual_spectrum_as_its_solved_head(real_embeddings, preset,
                                                                                      shrinkage):
    """A cross-fitting fold scores its held-out rows without the d x d precision, with the scores the solved head
    gives: from the n x n spectrum of its residuals with few rows, else by triangular solves with a Cholesky
    factor."""
    from imprint.core.presets import PRESETS
    from imprint.estimator.folds import FoldFitter

    Xs, ys, Xq, _ = real_embeddings("fashion_mnist")
    folds = FoldFitter(torch.device("cpu"), None, 0)
    settings = {**PRESETS[preset].settings, "shrinkage": shrinkage, "seed": 0}
    for per_class, thin in ((16, True), (100, False), (150, False)):
        rows = np.concatenate([np.flatnonzero(ys == c)[:per_class] for c in range(10)])
        model = folds.fit(Xs[rows], ys[rows], settings)
        held_out = model.held_out_scores(Xq[:300])
        metric = model.pipeline.metric
        assert metric.precision_matrix is None and (metric.factor is None) == thin
        expected = model.class_scores(Xq[:300])
        np.testing.assert_allclose(held_out, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))
        assert (held_out.argmax(1) == expected.argmax(1)).mean() >= 0.99


def test_folds_share_statistics_only_where_every_fold_would_see_the_same_rows(correlated):
    """Folds share one transformed support set only where the transformation learns nothing from its rows, the
    queries go through it too, each class has one proxy scored as it is and no zero-shot text is blended."""
    from imprint.core.presets import PRESETS
    from imprint.estimator.folds import FoldFitter

    X, y = correlated
    ranpac = {**PRESETS["ranpac"].settings, "projection_dim": 64, "ridge_lambda": 0.1, "seed": 0}
    folds = FoldFitter(torch.device("cpu"), None, 0)
    assert folds.shared(X, y, ranpac) is not None
    for change in ({"norm_pre": "center+random_relu", "norm_inf": "center+random_relu"},
                   {"norm_inf": "l2"}, {"generation": "kmeans", "k": 3},
                   {"metric": "mahalanobis", "shrinkage": 0.5}):
        assert folds.shared(X, y, {**ranpac, **change}) is None, change
    with_text = FoldFitter(torch.device("cpu"), np.eye(4, X.shape[1], dtype=np.float32), 0)
    assert with_text.shared(X, y, ranpac) is None
