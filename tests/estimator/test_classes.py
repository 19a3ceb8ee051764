"""Tests of ``imprint.estimator.classes``: classes added to and removed from a fitted classifier, and the labels it
answers with: ``add_classes`` imprints new classes with the fitted settings, ``add_examples`` teaches by example
(a class imprinted again from all its examples), ``remove_classes`` drops classes; the open set is fitted again to
the classes it then has."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.stages.heads.base import NotIncrementalError

RAW = dict(norm_pre="none", norm_post="none", norm_inf="none")


@pytest.mark.parametrize("settings", [
    dict(generation="mean", metric="mahalanobis", shrinkage="ledoit_wolf"),
    dict(generation="mean", metric="fecam", shrinkage="oas"),
    dict(generation="mean", metric="ridge", ridge_lambda=0.5),
])
def test_add_classes_gives_the_classifier_a_refit_on_the_union_would(correlated, settings):
    X, y = correlated
    old = y < 2
    grown = ImprintClassifier(**settings, **RAW).fit(X[old], y[old]).add_classes(X[~old], y[~old])
    refit = ImprintClassifier(**settings, **RAW).fit(X, y)
    np.testing.assert_allclose(grown.decision_function(X), refit.decision_function(X), rtol=1e-4, atol=1e-4)


def test_remove_classes_is_exact_or_says_it_cannot_be(correlated):
    X, y = correlated
    fecam = ImprintClassifier(generation="mean", metric="fecam", shrinkage=0.3, **RAW).fit(X, y).remove_classes([3])
    kept = y != 3
    refit = ImprintClassifier(generation="mean", metric="fecam", shrinkage=0.3, **RAW).fit(X[kept], y[kept])
    np.testing.assert_allclose(fecam.decision_function(X), refit.decision_function(X), rtol=1e-5, atol=1e-5)
    for metric, extra in (("mahalanobis", dict(shrinkage=0.3)), ("ridge", dict(ridge_lambda=1.0))):
        clf = ImprintClassifier(generation="mean", metric=metric, **extra, **RAW).fit(X, y)
        with pytest.raises(NotIncrementalError, match=f"metric='{metric}' .* cannot be taken out exactly; fit again") \
                as error:
            clf.remove_classes([3])
        assert "\n" not in str(error.value) and list(clf.classes_) == [0, 1, 2, 3]  # unchanged


def test_add_classes_leaves_existing_classes_untouched(mixture):
    X, y = mixture
    old = y < 4
    clf = ImprintClassifier(k=5, norm_post="quantile").fit(X[old], y[old])
    before = {c: clf.proxies_[clf.proxy_labels_ == c].copy() for c in clf.classes_}
    clf.add_classes(X[~old], y[~old])
    assert list(clf.classes_) == [0, 1, 2, 3, 4, 5]
    for c, proxies in before.items():
        np.testing.assert_array_equal(clf.proxies_[clf.proxy_labels_ == c], proxies)
    full = ImprintClassifier(k=5).fit(X, y)
    assert clf.score(X, y) > 0.9 and full.score(X, y) > 0.9
    with pytest.raises(ValueError, match="already imprinted"):
        clf.add_classes(X[:3], [0, 0, 0])


def test_add_classes_keeps_sorted_classes_with_string_labels(mixture):
    X, y = mixture
    names = np.array(["delta", "alpha", "echo", "bravo", "foxtrot", "charlie"])[y]
    first = np.isin(names, ["delta", "echo", "foxtrot"])
    clf = ImprintClassifier(k=4).fit(X[first], names[first]).add_classes(X[~first], names[~first])
    assert list(clf.classes_) == sorted(set(names))
    reference = ImprintClassifier(k=4).fit(X, names)
    assert (clf.predict(X) == reference.predict(X)).mean() > 0.95


def test_remove_classes(mixture):
    X, y = mixture
    clf = ImprintClassifier(k=5).fit(X, y)
    kept = clf.proxies_[clf.proxy_labels_ >= 2].copy()
    clf.remove_classes([0, 1])
    assert list(clf.classes_) == [2, 3, 4, 5]
    np.testing.assert_array_equal(clf.proxies_, kept)
    assert set(clf.predict(X)) <= {2, 3, 4, 5}
    with pytest.raises(ValueError, match="unknown class 9"):
        clf.remove_classes([9])
    with pytest.raises(ValueError, match="fewer than 2"):
        clf.remove_classes([2, 3, 4])
