"""Tests of ``imprint.stages.heads.euclidean``: the Euclidean head: nearest class mean or proxy by squared distance
(SimpleShot, Janson et al.)."""
from __future__ import annotations

import numpy as np

from imprint import ImprintClassifier


def test_euclidean_mean_max_is_nearest_class_mean(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", norm_pre="none", norm_post="none", norm_inf="none",
                            metric="euclidean").fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(6)])
    d2 = ((X[:, None, :] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(clf.decision_function(X), -d2, rtol=1e-4, atol=1e-3)


def test_simpleshot_cl2n_centres_on_the_support_mean_then_normalises(correlated):
    X, y = correlated
    clf = ImprintClassifier.from_preset("simpleshot").fit(X, y)
    centred = X - X.mean(0)
    cl2n = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    means = np.stack([cl2n[y == c].mean(0) for c in range(4)])
    expected = -((cl2n[:, None] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-5)
