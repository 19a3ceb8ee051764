"""Tests of ``imprint.stages.heads.kernel``: tip-Adapter's cache affinity (Zhang et al., ECCV 2022): with every
support sample a proxy and sum aggregation, its training-free cache logits."""
from __future__ import annotations

import numpy as np

from imprint import ImprintClassifier


def test_tip_adapter_sums_an_exponential_kernel_over_every_support_sample(correlated):
    X, y = correlated
    clf = ImprintClassifier.from_preset("tip_adapter", beta=4.0).fit(X, y)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    affinity = np.exp(-4.0 * (1 - unit @ unit.T))
    expected = np.stack([affinity[:, y == c].sum(1) for c in range(4)], 1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-4)
