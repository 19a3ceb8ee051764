"""Tests of ``imprint.stages.covariance``: within-class covariance from streamed sufficient statistics, shrunk so it
can always be inverted."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage, oas

from imprint.stages.covariance import Scatter, shrinkage_amount


def pooled(X, y, dof_means=None):
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    residuals = X - means[np.searchsorted(classes, y)]
    return means, residuals, residuals.T @ residuals / (len(X) - (dof_means or len(classes)))


def test_shrinkage_estimators_match_scikit_learn(correlated):
    X, y = correlated
    _, residuals, _ = pooled(X, y)
    stats = Scatter.of(torch.from_numpy(residuals), 4)
    assert shrinkage_amount(stats, "ledoit_wolf") == pytest.approx(ledoit_wolf_shrinkage(residuals,
                                                                                         assume_centered=True))
    assert shrinkage_amount(stats, "oas") == pytest.approx(oas(residuals, assume_centered=True)[1])
    assert shrinkage_amount(stats, "gda") == pytest.approx(X.shape[1] / (len(X) + X.shape[1]))


def test_fewer_residuals_than_dimensions_shrink_as_scikit_learn_without_the_d_by_d_scatter(correlated):
    """With fewer residuals than dimensions the statistics keep the rows, and the shrinkage, trace and spectrum
    come from their n x n Gram matrix: the same numbers as from sum r r', which is formed only when asked for."""
    from imprint.stages.heads.base import spectrum

    X, y = correlated
    _, residuals, _ = pooled(X, y)
    rng = np.random.default_rng(0)
    wide = np.concatenate([residuals, rng.normal(size=(len(residuals), 3 * len(residuals)))], axis=1)[:40]
    stats = Scatter.of(torch.from_numpy(wide).float(), 4)
    residuals32 = stats.rows.double().numpy()
    assert shrinkage_amount(stats, "ledoit_wolf") == pytest.approx(
        ledoit_wolf_shrinkage(residuals32, assume_centered=True), rel=1e-6)
    assert shrinkage_amount(stats, "oas") == pytest.approx(oas(residuals32, assume_centered=True)[1], rel=1e-6)
    values, vectors, mu = spectrum(stats)
    assert stats._outer is None  # nothing above needed the d x d matrix
    covariance = stats.covariance()  # formed now, on demand
    assert covariance.shape == (wide.shape[1],) * 2
    assert stats.trace() == pytest.approx(float((residuals32 ** 2).sum()))
    assert torch.allclose((vectors * values) @ vectors.T, covariance, atol=1e-6 * float(covariance.abs().max()))
    assert mu == pytest.approx(float(torch.diagonal(covariance).mean()))
    merged = stats + stats  # rows kept while they stay fewer than the dimensions
    assert merged.rows is not None and merged.n == 80
    assert torch.allclose(merged.outer, 2 * stats.outer, rtol=1e-5, atol=1e-6 * float(stats.outer.abs().max()))
