"""Tests of ``imprint.stages.heads.mahalanobis``: gDA / LDA (Wang, Lu, Ke, Wang, ICLR 2024): one within-class
covariance shared by every class, shrunk; with class means as proxies, the hard-to-beat linear discriminant of
frozen embeddings."""
from __future__ import annotations

import numpy as np

from imprint import ImprintClassifier

RAW = dict(norm_pre="none", norm_post="none", norm_inf="none")


def pooled(X, y, dof_means=None):
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    residuals = X - means[np.searchsorted(classes, y)]
    return means, residuals, residuals.T @ residuals / (len(X) - (dof_means or len(classes)))


def shrink(S, a):
    d = len(S)
    return (1 - a) * S + a * np.trace(S) / d * np.eye(d)


def test_gda_scores_are_half_the_negative_mahalanobis_distance_plus_log_prior(correlated):
    X, y = correlated
    for prior in ("uniform", "empirical"):
        clf = ImprintClassifier(generation="mean", metric="mahalanobis", shrinkage=0.3, prior=prior, **RAW).fit(X, y)
        means, _, S = pooled(X, y)
        P = np.linalg.inv(shrink(S, 0.3))
        diff = X[:, None, :] - means[None]
        expected = -0.5 * np.einsum("nkd,de,nke->nk", diff, P, diff)
        if prior == "empirical":
            expected += np.log(np.bincount(y) / len(y))
        np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(clf.predict(X), expected.argmax(1))


def test_shared_covariance_with_kmeans_proxies_takes_residuals_about_the_nearest_own_proxy(correlated):
    X, y = correlated
    clf = ImprintClassifier(generation="kmeans", k=3, metric="mahalanobis", shrinkage=0.2, **RAW).fit(X, y)
    proxies, owner = clf.proxies_.astype(np.float64), np.repeat(np.arange(4), clf.proxy_counts_)
    d2 = ((X[:, None] - proxies[None]) ** 2).sum(-1) + np.where(owner[None] == y[:, None], 0, np.inf)
    residuals = X - proxies[d2.argmin(1)]
    P = np.linalg.inv(shrink(residuals.T @ residuals / (len(X) - len(proxies)), 0.2))
    diff = X[:, None] - proxies[None]
    per_proxy = -0.5 * np.einsum("npd,de,npe->np", diff, P, diff)
    expected = np.stack([per_proxy[:, owner == c].max(1) for c in range(4)], 1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-3)
