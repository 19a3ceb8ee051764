"""Tests of ``imprint.stages.aggregation``: aGG stages: from a query's scores against every proxy to one score per
class."""
from __future__ import annotations

import numpy as np

from imprint import ImprintClassifier


def test_max_with_l2_everywhere_is_cosine_1nn(mixture):
    X, y = mixture
    Xs, ys, Xq = X[::2], y[::2], X[1::2]
    clf = ImprintClassifier(generation="all", aggregation="max").fit(Xs, ys)
    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    nearest = (unit(Xq) @ unit(Xs).T).argmax(1)
    np.testing.assert_array_equal(clf.predict(Xq), ys[nearest])


def test_mnn_with_m1_equals_max(mixture):
    X, y = mixture
    a = ImprintClassifier(generation="kmeans", k=5, aggregation="max").fit(X[::2], y[::2])
    b = ImprintClassifier(generation="kmeans", k=5, aggregation="mnn", m=1).fit(X[::2], y[::2])
    np.testing.assert_array_equal(a.predict(X[1::2]), b.predict(X[1::2]))


def test_mnn_votes_are_vote_shares(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="all", aggregation="mnn", m=5).fit(X[::2], y[::2])
    scores = clf.decision_function(X[1::2])
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-6)
    assert set(np.unique(np.round(scores * 5, 5))) <= {0, 1, 2, 3, 4, 5}
    weighted = ImprintClassifier(generation="all", aggregation="mnn", m=5, mnn_weights="distance").fit(X[::2], y[::2])
    assert (weighted.decision_function(X[1::2]).argmax(1) == y[1::2]).mean() > 0.8


def test_mean_aggregation_is_mean_of_proxy_scores(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="kmeans", k=4, aggregation="mean").fit(X, y)
    proxy_scores = (X[:10] / np.linalg.norm(X[:10], axis=1, keepdims=True)) @ clf.proxies_.T
    expected = np.stack([proxy_scores[:, clf.proxy_labels_ == c].mean(1) for c in clf.classes_], axis=1)
    np.testing.assert_allclose(clf.decision_function(X[:10]), expected, rtol=1e-5, atol=1e-6)
