"""Tests of ``imprint.stages.heads.ridge``: ridge regression onto one-hot proxy targets; with random_relu features,
RanPAC (McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel, NeurIPS 2023)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier

RAW = dict(norm_pre="none", norm_post="none", norm_inf="none")


def test_ridge_is_the_regularised_least_squares_onto_one_hot_classes(correlated):
    X, y = correlated
    clf = ImprintClassifier(generation="mean", metric="ridge", ridge_lambda=0.1, **RAW).fit(X, y)
    G = X.T @ X
    Y = np.eye(4)[y]
    W = np.linalg.solve(G + 0.1 * np.trace(G) / X.shape[1] * np.eye(X.shape[1]), X.T @ Y)
    np.testing.assert_allclose(clf.decision_function(X), X @ W, rtol=1e-4, atol=1e-4)


def test_ranpac_is_ridge_on_random_relu_features(correlated):
    X, y = correlated
    clf = ImprintClassifier.from_preset("ranpac", projection_dim=64, ridge_lambda=1.0).fit(X, y)
    W = clf.pipeline_.norm_pre.parts[1].weight.numpy().astype(np.float64)
    H = np.maximum((X / np.linalg.norm(X, axis=1, keepdims=True)) @ W, 0)
    G = H.T @ H
    ridge = np.linalg.solve(G + np.trace(G) / 64 * np.eye(64), H.T @ np.eye(4)[y])
    np.testing.assert_allclose(clf.decision_function(X), H @ ridge, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("per_class, width, whole_kernel", [(30, 2560, True), (30, 2560, False), (60, 256, True)])
def test_ridge_folds_score_as_a_fit_per_fold_would(real_embeddings, monkeypatch, per_class, width, whole_kernel):
    """RanPAC's cross-validation scores every fold and ridge value from one projection of the support set (the
    dual form: blocks of one kernel; the primal form: the whole Gram matrix minus the held-out rows'): the held-out
    scores equal those of a head fitted on the fold's rows alone, for the partition prepared at once and for a fold
    asked for alone."""
    import imprint.stages.ridge_solve as ridge_solve
    from imprint.core.presets import PRESETS
    from imprint.core.sampling import stratified_folds
    from imprint.estimator.folds import FoldFitter

    if not whole_kernel:
        monkeypatch.setattr(ridge_solve, "KERNEL_BYTES", 0)
    Xs, ys, _, _ = real_embeddings("fashion_mnist")
    rows = np.concatenate([np.flatnonzero(ys == c)[:per_class] for c in range(10)])
    X, codes = Xs[rows], ys[rows]
    settings = {**PRESETS["ranpac"].settings, "projection_dim": width, "ridge_lambda": 0.1, "seed": 0}
    folds = FoldFitter(torch.device("cpu"), None, 0)
    shared = folds.shared(X, codes, settings)
    assert shared is not None
    assignment = stratified_folds(codes, 3, 0)
    lambdas = [1e-3, 1e-1, 10.0]
    assert ridge_solve.uses_dual(int((assignment != 0).sum()), width) == (per_class == 30)  # 200 rows < 2560
    for prepared in (True, False):
        if prepared:
            shared.prepare(assignment)
        for f in range(3):
            test = assignment == f
            present, scores = shared.scores(test, lambdas, (assignment, f) if prepared else None)
            for ridge, fold_scores in zip(lambdas, scores):
                model = folds.fit(X[~test], codes[~test], {**settings, "ridge_lambda": ridge})
                expected = model.class_scores(X[test])
                np.testing.assert_array_equal(present, model.present)
                np.testing.assert_allclose(fold_scores.numpy(), expected, rtol=1e-3,
                                           atol=1e-4 * float(np.abs(expected).max()))
                assert (fold_scores.numpy().argmax(1) == expected.argmax(1)).mean() >= 0.99
