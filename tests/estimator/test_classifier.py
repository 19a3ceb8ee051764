"""Tests of ``imprint.estimator.classifier``: ``ImprintClassifier``: a training-free classifier imprinted from
support embeddings (scikit-learn API)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import one_line_error
from sklearn.utils.estimator_checks import parametrize_with_checks

from imprint import ImprintClassifier


@parametrize_with_checks([ImprintClassifier(k=3, device="cpu"), ImprintClassifier(generation="mean", device="cpu")])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_huge_finite_embeddings_are_refused_not_scored_as_zero(mixture):
    X, y = mixture
    huge = X.copy()
    huge[3] *= 1e19
    with pytest.raises(ValueError, match="rescale the embeddings") as info:
        ImprintClassifier().fit(huge, y)
    assert "row 3" in str(info.value)
    clf = ImprintClassifier(generation="mean").fit(X, y)
    with pytest.raises(ValueError, match="rescale"):
        clf.predict(huge)


def test_binary_problems_follow_scikit_learn_so_binary_scorers_work(mixture):
    from sklearn.metrics import average_precision_score, get_scorer, roc_auc_score

    X, y = mixture
    two = y < 2
    clf = ImprintClassifier(generation="mean").fit(X[two][::2], y[two][::2])
    scores = clf.decision_function(X[two][1::2])
    assert scores.shape == (two.sum() // 2,)
    assert np.array_equal(clf.classes_[(scores > 0).astype(int)], clf.predict(X[two][1::2]))
    assert roc_auc_score(y[two][1::2], scores) > 0.9
    assert np.isfinite(get_scorer("roc_auc")(clf, X[two][1::2], y[two][1::2]))
    assert np.isfinite(average_precision_score(y[two][1::2], scores))


def test_labels_keep_their_type(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="max_score", unknown_label="none of these").fit(X, y)
    predicted = clf.predict(X[:50])
    assert predicted.dtype == object and all(isinstance(p, (int, np.integer)) for p in predicted
                                             if p != "none of these")
    with pytest.raises(ValueError, match="labels of the same type"):
        ImprintClassifier(generation="mean").fit(X, y).add_classes(X[:10], np.array(["new"] * 10))


def test_the_api_refuses_queries_from_another_encoder_and_exports_class_names(mixture):
    from imprint.core.embedded import tagged

    X, y = mixture
    names = np.array([f"c{c}" for c in y])
    clf = ImprintClassifier(generation="mean").fit(tagged(X, "timm:tf_efficientnet_lite0"), names)
    assert clf.encoder_id_ == "timm:tf_efficientnet_lite0"
    with pytest.raises(ValueError, match="these embeddings come from timm:tf_efficientnet_lite1 but the classifier "
                                         "was fitted on timm:tf_efficientnet_lite0 embeddings"):
        clf.predict(tagged(X, "timm:tf_efficientnet_lite1"))
    assert (clf.predict(X) == clf.predict(tagged(X, "timm:tf_efficientnet_lite0"))).all()  # plain arrays pass
    assert clf.to_torch().classes == sorted(set(names))


def test_fit_returns_self_with_fitted_attributes(fitted):
    clf, X, labels = fitted
    assert list(clf.classes_) == sorted(set(labels))
    assert clf.proxies_.shape == (30, X.shape[1]) and clf.proxies_.dtype == np.float32
    assert list(clf.proxy_labels_) == [c for c in clf.classes_ for _ in range(5)]
    assert clf.decision_function(X).shape == (len(X), 6)
    assert clf.score(X[1::2], labels[1::2]) > 0.9
    assert set(clf.predict(X)) <= set(clf.classes_)


def test_predict_proba_is_a_tempered_softmax(fitted):
    clf, X, _ = fitted
    proba = clf.predict_proba(X[:20])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), clf.decision_function(X[:20]).argmax(1))
    flat = ImprintClassifier(generation="kmeans", k=5, temperature=1.0).fit(X[::2], fitted[2][::2])
    assert flat.predict_proba(X[:20]).max(1).mean() < proba.max(1).mean()


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64])
def test_other_dtypes_work(mixture, dtype):
    X, y = mixture
    clf = ImprintClassifier(k=3).fit(X.astype(dtype), y)
    assert clf.score(X.astype(dtype), y) > 0.9
    assert clf.proxies_.dtype == np.float32


def test_torch_tensor_input(mixture):
    X, y = mixture
    clf = ImprintClassifier(k=3).fit(torch.from_numpy(X), torch.from_numpy(y))
    np.testing.assert_array_equal(clf.predict(torch.from_numpy(X)), clf.predict(X))


def test_bad_input_gets_one_line_errors(mixture, fitted):
    X, y = mixture
    clf, _, _ = fitted
    nan = X.copy()
    nan[7, 3] = np.nan
    inf = X.copy()
    inf[2, 0] = np.inf
    new = ImprintClassifier()
    one_line_error(lambda: new.fit(nan, y), "NaN or infinity .* first at row 7")
    one_line_error(lambda: new.fit(inf, y), "NaN or infinity")
    one_line_error(lambda: new.fit(np.float64(1e300) * np.ones((4, 3)), [0, 0, 1, 1]), "too large for float32")
    one_line_error(lambda: new.fit(X[0], y[:1]), "must be 2-D .* Reshape your data")
    one_line_error(lambda: new.fit(X, y[:-1]), "different lengths: 720 embeddings but 719 labels")
    one_line_error(lambda: new.fit(np.empty((0, 4)), []), "empty")
    one_line_error(lambda: new.fit(X, np.zeros(len(X))), "at least 2 classes")
    one_line_error(lambda: ImprintClassifier(k=0).fit(X, y), "k must be an integer >= 1")
    one_line_error(lambda: ImprintClassifier(aggregation="mnn", m=0).fit(X, y), "m must be an integer >= 1")
    one_line_error(lambda: ImprintClassifier(m=3).fit(X, y), "only used by aggregation='mnn'")
    one_line_error(lambda: ImprintClassifier(temperature=0).fit(X, y), "temperature must be")
    one_line_error(lambda: clf.predict(X[:, :5]), "X has 5 features, but ImprintClassifier is expecting 32")
    one_line_error(lambda: clf.predict(nan), "NaN")
    one_line_error(lambda: clf.predict([["a", "b"]]), "must hold numbers")


@pytest.mark.parametrize("scale", [1e-15, 1e-40])
def test_embeddings_of_tiny_magnitude_are_refused_as_huge_ones_are(mixture, fitted, scale):
    """At 1e-15 Tip-Adapter scored 70% of its own support set; at 1e-40 every head named one class and RanPAC's
    scores were NaN. 1e-12 still fits every head exactly (the bound leaves a 100x margin)."""
    X, y = mixture
    clf, _, _ = fitted
    one_line_error(lambda: ImprintClassifier.from_preset("tip_adapter").fit(X * scale, y), "below 1e-10 .* rescale")
    one_line_error(lambda: clf.add_classes(X[:5] * scale, np.full(5, 99)), "below 1e-10")
    tiny = X[:4].copy()
    tiny[2] *= scale
    one_line_error(lambda: clf.predict(tiny), "first at row 2")
    zero = X[:4].copy()
    zero[1] = 0.0  # an all-zero row is exact, and accepted as before
    assert len(clf.predict(zero)) == 4
    small = ImprintClassifier.from_preset("tip_adapter").fit(X * 1e-10, y)
    assert (small.predict(X * 1e-10) == ImprintClassifier.from_preset("tip_adapter").fit(X, y).predict(X)).mean() > 0.99


def test_unfitted_classifier_says_so(mixture):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ImprintClassifier().predict(mixture[0])


def test_the_classifier_owns_its_proxies_even_when_no_copy_was_needed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # unit rows: l2 leaves them as they are
    y = np.repeat([0, 1], 20)
    clf = ImprintClassifier(generation="all", device="cpu").fit(X, y)
    before = clf.proxies_.copy()
    X[:] = 0.0
    assert np.array_equal(clf.proxies_, before)


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
def test_predict_by_the_best_proxy_agrees_with_the_class_scores(metric):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 16)).astype(np.float32)
    y = rng.integers(0, 40, size=6000)
    clf = ImprintClassifier(generation="all", metric=metric, device="cpu").fit(X, y)
    assert len(clf.proxies_) >= 4096  # blocks of fewer than 1024 queries
    queries = rng.normal(size=(500, 16)).astype(np.float32)
    expected = clf.classes_[clf.decision_function(queries).argmax(axis=1)]
    np.testing.assert_array_equal(clf.predict(queries), expected)


def test_a_preset_with_its_own_stage_changed_runs_that_stage_as_a_custom_method(mixture):
    X, y = mixture
    changed = ImprintClassifier.from_preset("gda", generation="kmeans", k=3).fit(X, y)
    assert changed.get_params()["method"] == "custom" and changed.get_params()["metric"] == "mahalanobis"
    assert changed.proxy_counts_.tolist() == [3] * 6  # generation="kmeans" is the default stage, yet it runs
    same = ImprintClassifier.from_preset("gda", seed=1)
    assert same.get_params()["method"] == "gda"  # a setting the preset does not set keeps its name
