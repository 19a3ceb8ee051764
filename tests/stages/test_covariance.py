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
