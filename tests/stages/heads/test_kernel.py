"""Tests of ``imprint.stages.heads.kernel``: tip-Adapter's cache affinity (Zhang et al., ECCV 2022): with every
support sample a proxy and sum aggregation, its training-free cache logits."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    d, K = 12, 4
    means = rng.normal(size=(K, d)) * 1.5
    A = rng.normal(size=(d, d)) * 0.4  # a shared, correlated within-class covariance
    y = np.repeat(np.arange(K), [40, 25, 30, 35])
    X = means[y] + rng.normal(size=(len(y), d)) @ A
    order = rng.permutation(len(y))  # labels in any order
    return X[order].astype(np.float64), y[order]


def test_tip_adapter_sums_an_exponential_kernel_over_every_support_sample(data):
    X, y = data
    clf = ImprintClassifier.from_preset("tip_adapter", beta=4.0).fit(X, y)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    affinity = np.exp(-4.0 * (1 - unit @ unit.T))
    expected = np.stack([affinity[:, y == c].sum(1) for c in range(4)], 1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-4)
