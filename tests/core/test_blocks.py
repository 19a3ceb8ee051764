"""Tests of ``imprint.core.blocks``: queries in fixed-shape blocks: memory-bounded and batch-invariant to the last
bit."""
from __future__ import annotations

import numpy as np
import pytest

import imprint.core.blocks as blocks
from imprint import ImprintClassifier


def reference_scores(clf, X):
    """Plain matrix-product reference for L2-normalised dot scores with max aggregation."""
    queries = X / np.linalg.norm(X, axis=1, keepdims=True)
    scores = queries @ clf.proxies_.T
    return np.stack([scores[:, clf.proxy_labels_ == c].max(1) for c in clf.classes_], axis=1)


def test_chunked_prediction_equals_the_matrix_product(mixture, monkeypatch):
    X, y = mixture
    for settings in (dict(generation="kmeans", k=8), dict(generation="all")):  # equal and unequal proxy counts
        rows = np.concatenate([np.flatnonzero(y == c)[: 30 + 10 * c] for c in range(6)])
        clf = ImprintClassifier(**settings).fit(X[rows], y[rows])
        whole = clf.decision_function(X)
        monkeypatch.setattr(blocks, "CHUNK_BYTES", 4 * len(clf.proxies_) * 7)  # blocks of 4 queries
        np.testing.assert_allclose(clf.decision_function(X), whole, rtol=0, atol=1e-6)
        monkeypatch.undo()
        np.testing.assert_allclose(whole, reference_scores(clf, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(generation="kmeans", k=3),
    dict(generation="mean"),
    dict(generation="all", aggregation="mnn", m=7, mnn_weights="distance", metric="euclidean",
         norm_pre="none", norm_post="none", norm_inf="none"),
    dict(generation="kmeans", k=4, aggregation="mean", norm_post="quantile", norm_inf="quantile"),
])
def test_scores_of_a_query_do_not_depend_on_the_batch_it_comes_in(mixture, settings):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[: 20 + 7 * c] for c in range(6)])  # unequal classes
    clf = ImprintClassifier(**settings).fit(X[rows], y[rows])
    queries = X[1::3]
    whole = clf.decision_function(queries)
    alone = np.concatenate([clf.decision_function(queries[i:i + 1]) for i in range(0, len(queries), 17)])
    np.testing.assert_array_equal(alone, whole[::17])  # bit for bit, not merely close
    np.testing.assert_array_equal(clf.decision_function(queries[5:40]), whole[5:40])
    np.testing.assert_array_equal(np.concatenate([clf.predict(queries[i:i + 1]) for i in range(len(queries))]),
                                  clf.predict(queries))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)  # a unit row among raw rows
    mixed = np.concatenate([unit[:1], queries[1:9]])
    np.testing.assert_array_equal(clf.decision_function(mixed)[:1], clf.decision_function(unit[:1]))
