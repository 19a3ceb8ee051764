"""Tests of ``imprint.stages.norm``: nORM stages: applied to support embeddings (norm_pre), generated weights
(norm_post) and queries (norm_inf)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier
from imprint.stages.norm import make_norm


def sorted_by_class(X, y):
    order = np.argsort(y, kind="stable")
    return torch.from_numpy(X[order]), torch.from_numpy(np.bincount(y[order]))


@pytest.mark.parametrize("reference", ["pooled", "sequential"])
def test_quantile_rows_share_one_value_multiset(mixture, reference):
    X, y = mixture
    Xs, counts = sorted_by_class(X, y)
    groups = torch.repeat_interleave(torch.arange(len(counts)), counts)
    norm = make_norm("quantile", {"quantile_reference": reference})
    out = norm.fit_transform(Xs, groups).numpy()
    rows = np.sort(out, axis=1)
    if reference == "pooled":
        np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
    else:  # the paper's: the first class unchanged, every later row on one multiset
        first = int(counts[0])
        np.testing.assert_array_equal(out[:first], Xs[:first].numpy())
        np.testing.assert_array_equal(rows[first + 1:], np.broadcast_to(rows[first], rows[first + 1:].shape))
    # ranks are kept: the order of entries within a row does not change
    np.testing.assert_array_equal(np.argsort(out[-1]), np.argsort(Xs[-1].numpy()))
    # new rows (queries) map onto the fitted reference
    query = norm(torch.randn(3, X.shape[1])).numpy()
    np.testing.assert_array_equal(np.sort(query, axis=1)[0], norm.values.numpy())


def test_quantile_pooled_is_independent_of_class_order(mixture):
    X, y = mixture
    a = ImprintClassifier(generation="mean", norm_pre="none", norm_post="quantile", norm_inf="none").fit(X, y)
    relabel = 5 - y  # reverses class order
    b = ImprintClassifier(generation="mean", norm_pre="none", norm_post="quantile", norm_inf="none").fit(X, relabel)
    np.testing.assert_allclose(a.proxies_, b.proxies_[::-1], rtol=1e-6)
