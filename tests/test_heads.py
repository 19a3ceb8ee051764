"""Closed-form heads as metrics: GDA, FeCAM, ridge (RanPAC), Tip-Adapter's kernel and CL2N, each checked against
its formula, incremental where the method allows, saved and exported with the same scores, and finite on the
inputs that break a naive implementation."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage, oas

from imprint import ImprintClassifier
from imprint.stages.covariance import Scatter, shrinkage_amount
from imprint.stages.heads.base import NotIncrementalError

RAW = dict(norm_pre="none", norm_post="none", norm_inf="none")


def pooled(X, y, dof_means=None):
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    residuals = X - means[np.searchsorted(classes, y)]
    return means, residuals, residuals.T @ residuals / (len(X) - (dof_means or len(classes)))


def shrink(S, a):
    d = len(S)
    return (1 - a) * S + a * np.trace(S) / d * np.eye(d)


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


def test_gda_scores_are_half_the_negative_mahalanobis_distance_plus_log_prior(data):
    X, y = data
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


def test_shrinkage_estimators_match_scikit_learn(data):
    X, y = data
    _, residuals, _ = pooled(X, y)
    stats = Scatter.of(torch.from_numpy(residuals), 4)
    assert shrinkage_amount(stats, "ledoit_wolf") == pytest.approx(ledoit_wolf_shrinkage(residuals,
                                                                                         assume_centered=True))
    assert shrinkage_amount(stats, "oas") == pytest.approx(oas(residuals, assume_centered=True)[1])
    assert shrinkage_amount(stats, "gda") == pytest.approx(X.shape[1] / (len(X) + X.shape[1]))


def test_fecam_scores_use_one_covariance_per_class(data):
    X, y = data
    for diagonal in (False, True):
        clf = ImprintClassifier(generation="mean", metric="fecam", shrinkage=0.5, fecam_diagonal=diagonal,
                                **RAW).fit(X, y)
        expected = []
        for c in range(4):
            Z = X[y == c]
            cov = shrink((Z - Z.mean(0)).T @ (Z - Z.mean(0)) / (len(Z) - 1), 0.5)
            P = np.diag(1 / np.diag(cov)) if diagonal else np.linalg.inv(cov)
            diff = X - Z.mean(0)
            expected.append(-np.einsum("nd,de,ne->n", diff, P, diff))
        np.testing.assert_allclose(clf.decision_function(X), np.stack(expected, 1), rtol=1e-4, atol=1e-3)


def test_ridge_is_the_regularised_least_squares_onto_one_hot_classes(data):
    X, y = data
    clf = ImprintClassifier(generation="mean", metric="ridge", ridge_lambda=0.1, **RAW).fit(X, y)
    G = X.T @ X
    Y = np.eye(4)[y]
    W = np.linalg.solve(G + 0.1 * np.trace(G) / X.shape[1] * np.eye(X.shape[1]), X.T @ Y)
    np.testing.assert_allclose(clf.decision_function(X), X @ W, rtol=1e-4, atol=1e-4)


def test_ranpac_is_ridge_on_random_relu_features(data):
    X, y = data
    clf = ImprintClassifier.from_preset("ranpac", projection_dim=64, ridge_lambda=1.0).fit(X, y)
    W = clf.pipeline_.norm_pre.parts[1].weight.numpy().astype(np.float64)
    H = np.maximum((X / np.linalg.norm(X, axis=1, keepdims=True)) @ W, 0)
    G = H.T @ H
    ridge = np.linalg.solve(G + np.trace(G) / 64 * np.eye(64), H.T @ np.eye(4)[y])
    np.testing.assert_allclose(clf.decision_function(X), H @ ridge, rtol=1e-3, atol=1e-3)


def test_tip_adapter_sums_an_exponential_kernel_over_every_support_sample(data):
    X, y = data
    clf = ImprintClassifier.from_preset("tip_adapter", beta=4.0).fit(X, y)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    affinity = np.exp(-4.0 * (1 - unit @ unit.T))
    expected = np.stack([affinity[:, y == c].sum(1) for c in range(4)], 1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-4)


def test_simpleshot_cl2n_centres_on_the_support_mean_then_normalises(data):
    X, y = data
    clf = ImprintClassifier.from_preset("simpleshot").fit(X, y)
    centred = X - X.mean(0)
    cl2n = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    means = np.stack([cl2n[y == c].mean(0) for c in range(4)])
    expected = -((cl2n[:, None] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(generation="mean", metric="mahalanobis", shrinkage="ledoit_wolf"),
    dict(generation="mean", metric="fecam", shrinkage="oas"),
    dict(generation="mean", metric="ridge", ridge_lambda=0.5),
])
def test_add_classes_gives_the_classifier_a_refit_on_the_union_would(data, settings):
    X, y = data
    old = y < 2
    grown = ImprintClassifier(**settings, **RAW).fit(X[old], y[old]).add_classes(X[~old], y[~old])
    refit = ImprintClassifier(**settings, **RAW).fit(X, y)
    np.testing.assert_allclose(grown.decision_function(X), refit.decision_function(X), rtol=1e-4, atol=1e-4)


def test_shared_covariance_with_kmeans_proxies_takes_residuals_about_the_nearest_own_proxy(data):
    X, y = data
    clf = ImprintClassifier(generation="kmeans", k=3, metric="mahalanobis", shrinkage=0.2, **RAW).fit(X, y)
    proxies, owner = clf.proxies_.astype(np.float64), np.repeat(np.arange(4), clf.proxy_counts_)
    d2 = ((X[:, None] - proxies[None]) ** 2).sum(-1) + np.where(owner[None] == y[:, None], 0, np.inf)
    residuals = X - proxies[d2.argmin(1)]
    P = np.linalg.inv(shrink(residuals.T @ residuals / (len(X) - len(proxies)), 0.2))
    diff = X[:, None] - proxies[None]
    per_proxy = -0.5 * np.einsum("npd,de,npe->np", diff, P, diff)
    expected = np.stack([per_proxy[:, owner == c].max(1) for c in range(4)], 1)
    np.testing.assert_allclose(clf.decision_function(X), expected, rtol=1e-4, atol=1e-3)


def test_remove_classes_is_exact_or_says_it_cannot_be(data):
    X, y = data
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


@pytest.mark.parametrize("preset", ["gda", "fecam", "ranpac", "tip_adapter", "simpleshot"])
def test_every_head_saves_loads_and_exports_with_the_same_scores(data, tmp_path, preset):
    X, y = data
    clf = ImprintClassifier.from_preset(preset).fit(X.astype(np.float32), y)
    path = tmp_path / f"{preset}.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert loaded.tuned_ == clf.tuned_ and loaded.get_params() == clf.get_params()
    with torch.inference_mode():
        exported = clf.to_torch()(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(exported, clf.decision_function(X), rtol=1e-5, atol=1e-4)


def test_auto_hyperparameters_are_chosen_on_the_support_set_and_recorded(data):
    X, y = data
    clf = ImprintClassifier.from_preset("gda").fit(X, y)
    assert set(clf.tuned_) == {"shrinkage"} and len(clf.tuning_.scores["shrinkage"]) == 7 and clf.temperature_ > 0
    tip = ImprintClassifier.from_preset("tip_adapter").fit(X, y)
    assert tip.tuned_["beta"] in (1.0, 3.0, 5.5, 8.0, 12.0, 20.0)


@pytest.mark.parametrize("preset", ["gda", "fecam", "ranpac", "tip_adapter", "simpleshot", "imprint"])
def test_degenerate_support_sets_give_finite_scores(preset):
    rng = np.random.default_rng(0)
    d = 64
    few = rng.normal(size=(9, d))  # fewer samples than dimensions
    cases = {
        "fewer samples than dimensions": (few, np.repeat([0, 1, 2], 3)),
        "duplicated samples": (np.repeat(few[:3], 4, axis=0), np.repeat([0, 1, 2], 4)),
        "constant features": (np.hstack([few[:, :32], np.ones((9, 32))]), np.repeat([0, 1, 2], 3)),
        "one sample in a class": (few[:7], np.array([0, 0, 0, 1, 1, 1, 2])),
        "a class with no variance": (np.vstack([few[:6], np.repeat(few[6:7], 3, axis=0)]), np.repeat([0, 1, 2], 3)),
    }
    queries = rng.normal(size=(5, d))
    for case, (X, y) in cases.items():
        tunes = preset in ("gda", "ranpac", "tip_adapter")  # fecam: the published fixed shrinkage
        with pytest.warns(UserWarning, match="too few support samples to tune") if case == "one sample in a class" \
                and tunes else nullcontext():
            clf = ImprintClassifier.from_preset(preset).fit(X, y)
        for inputs in (X, queries):
            scores = clf.decision_function(inputs)
            assert np.isfinite(scores).all(), (preset, case)
            assert np.isfinite(clf.predict_proba(inputs)).all(), (preset, case)


@pytest.mark.parametrize("metric, name, values, extra", [
    ("mahalanobis", "shrinkage", ["ledoit_wolf", "oas", "gda", 0.05, 0.5], {}),
    ("fecam", "shrinkage", ["ledoit_wolf", "oas", 0.05, 0.5], {}),
    ("fecam", "shrinkage", [0.2, 0.8], {"generation": "kmeans", "k": 3}),
    ("ridge", "ridge_lambda", [1e-3, 1e-1, 10.0], {}),
    ("kernel", "beta", [1.0, 5.5, 20.0], {}),
])
def test_tuning_shortcut_scores_every_value_as_a_separate_fit_would(data, metric, name, values, extra):
    """Cross-validation scores every candidate from one fit (one decomposition, one Gram matrix): those scores,
    asked for block after block of queries, are the scores of a classifier fitted with that value."""
    X, y = data
    settings = {"generation": "mean", "metric": metric, "aggregation": "max", **extra}
    first = ImprintClassifier(**settings, **{name: values[0]}).fit(X, y)
    queries = first.pipeline_.model.norm_inf(torch.as_tensor(X, dtype=torch.float32))
    for block in (queries[:70], queries[70:]):  # the second block reuses what the first computed
        shortcut = first.pipeline_.metric.candidate_scores(name, values, block)
        assert shortcut is not None
        shortcut = list(shortcut)  # one value's scores at a time (a generator) or all at once
        assert len(shortcut) == len(values)
        for value, scores in zip(values, shortcut):
            separate = ImprintClassifier(**settings, **{name: value}).fit(X, y)
            expected = separate.pipeline_.metric(block).double()
            np.testing.assert_allclose(scores.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4 * float(
                expected.abs().max()))


def test_the_fecam_preset_is_the_published_method(real_embeddings):
    """FeCAM as its authors compute it for a frozen pretrained encoder, from the formulas: L2-normalised features,
    per class S = cov (unbiased), S + mean(diag S) I, normalised to a correlation matrix C, and the distance
    (x - mu)' pinv(C) (x - mu). The preset gives the same scores and labels."""
    Xs, ys, Xq, _ = real_embeddings("fashion_mnist")
    support = np.concatenate([np.flatnonzero(ys == c)[:40] for c in range(10)])
    Xs, ys, Xq = Xs[support].astype(np.float64), ys[support], Xq[:300].astype(np.float64)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    S_, Q = unit(Xs), unit(Xq)
    distances = np.empty((len(Q), 10))
    for c in range(10):
        rows = S_[ys == c]
        mean = rows.mean(0)
        cov = np.cov(rows.T)
        cov = cov + np.mean(np.diagonal(cov)) * np.eye(len(cov))
        sd = np.sqrt(np.diagonal(cov))
        cov = cov / np.outer(sd, sd)
        diff = Q - mean
        distances[:, c] = np.einsum("nd,de,ne->n", diff, np.linalg.pinv(cov), diff)
    clf = ImprintClassifier.from_preset("fecam").fit(Xs.astype(np.float32), ys)
    scores = clf.decision_function(Xq.astype(np.float32))
    np.testing.assert_allclose(scores, -distances, rtol=1e-3, atol=1e-3 * np.abs(distances).mean())
    assert (clf.predict(Xq.astype(np.float32)) == distances.argmin(1)).mean() >= 0.99


@pytest.mark.parametrize("per_class, width, whole_kernel", [(30, 2560, True), (30, 2560, False), (60, 256, True)])
def test_ridge_folds_score_as_a_fit_per_fold_would(real_embeddings, monkeypatch, per_class, width, whole_kernel):
    """RanPAC's cross-validation scores every fold and ridge value from one projection of the support set (the
    dual form: blocks of one kernel; the primal form: the whole Gram matrix minus the held-out rows'): the held-out
    scores equal those of a head fitted on the fold's rows alone, for the partition prepared at once and for a fold
    asked for alone."""
    import imprint.stages.ridge_solve as ridge_solve
    from imprint.core.presets import PRESETS
    from imprint.core.sampling import stratified_folds
    from imprint.estimator.folds import FoldFitter

    if not whole_kernel:
        monkeypatch.setattr(ridge_solve, "KERNEL_BYTES", 0)
    Xs, ys, _, _ = real_embeddings("fashion_mnist")
    rows = np.concatenate([np.flatnonzero(ys == c)[:per_class] for c in range(10)])
    X, codes = Xs[rows], ys[rows]
    settings = {**PRESETS["ranpac"].settings, "projection_dim": width, "ridge_lambda": 0.1, "seed": 0}
    folds = FoldFitter(torch.device("cpu"), None, 0)
    shared = folds.shared(X, codes, settings)
    assert shared is not None
    assignment = stratified_folds(codes, 3, 0)
    lambdas = [1e-3, 1e-1, 10.0]
    assert ridge_solve.uses_dual(int((assignment != 0).sum()), width) == (per_class == 30)  # 200 rows < 2560
    for prepared in (True, False):
        if prepared:
            shared.prepare(assignment)
        for f in range(3):
            test = assignment == f
            present, scores = shared.scores(test, lambdas, (assignment, f) if prepared else None)
            for ridge, fold_scores in zip(lambdas, scores):
                model = folds.fit(X[~test], codes[~test], {**settings, "ridge_lambda": ridge})
                expected = model.class_scores(X[test])
                np.testing.assert_array_equal(present, model.present)
                np.testing.assert_allclose(fold_scores.numpy(), expected, rtol=1e-3,
                                           atol=1e-4 * float(np.abs(expected).max()))
                assert (fold_scores.numpy().argmax(1) == expected.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("preset, shrinkage", [("gda", "gda"), ("tukey_gda", 0.2), ("gda", "ledoit_wolf")])
def test_a_fold_scores_its_held_out_rows_from_the_residual_spectrum_as_its_solved_head(real_embeddings, preset,
                                                                                      shrinkage):
    """A cross-fitting fold scores its held-out rows without the d x d precision, with the scores the solved head
    gives: from the n x n spectrum of its residuals with few rows, else by triangular solves with a Cholesky
    factor."""
    from imprint.core.presets import PRESETS
    from imprint.estimator.folds import FoldFitter

    Xs, ys, Xq, _ = real_embeddings("fashion_mnist")
    folds = FoldFitter(torch.device("cpu"), None, 0)
    settings = {**PRESETS[preset].settings, "shrinkage": shrinkage, "seed": 0}
    for per_class, thin in ((16, True), (100, False), (150, False)):
        rows = np.concatenate([np.flatnonzero(ys == c)[:per_class] for c in range(10)])
        model = folds.fit(Xs[rows], ys[rows], settings)
        held_out = model.held_out_scores(Xq[:300])
        metric = model.pipeline.metric
        assert metric.precision_matrix is None and (metric.factor is None) == thin
        expected = model.class_scores(Xq[:300])
        np.testing.assert_allclose(held_out, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))
        assert (held_out.argmax(1) == expected.argmax(1)).mean() >= 0.99


def test_folds_share_statistics_only_where_every_fold_would_see_the_same_rows(data):
    """Folds share one transformed support set only where the transformation learns nothing from its rows, the
    queries go through it too, each class has one proxy scored as it is and no zero-shot text is blended."""
    from imprint.core.presets import PRESETS
    from imprint.estimator.folds import FoldFitter

    X, y = data
    ranpac = {**PRESETS["ranpac"].settings, "projection_dim": 64, "ridge_lambda": 0.1, "seed": 0}
    folds = FoldFitter(torch.device("cpu"), None, 0)
    assert folds.shared(X, y, ranpac) is not None
    for change in ({"norm_pre": "center+random_relu", "norm_inf": "center+random_relu"},
                   {"norm_inf": "l2"}, {"generation": "kmeans", "k": 3},
                   {"metric": "mahalanobis", "shrinkage": 0.5}):
        assert folds.shared(X, y, {**ranpac, **change}) is None, change
    with_text = FoldFitter(torch.device("cpu"), np.eye(4, X.shape[1], dtype=np.float32), 0)
    assert with_text.shared(X, y, ranpac) is None
