"""Closed-form checks of the NORM, GEN and AGG stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier, UnknownStageError
from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS
from imprint.stages.generation import generate
from imprint.stages.norm import make_norm


def sorted_by_class(X, y):
    order = np.argsort(y, kind="stable")
    return torch.from_numpy(X[order]), torch.from_numpy(np.bincount(y[order]))


def test_registries_name_every_stage_of_the_paper_and_the_heads_beyond_it():
    assert {"none", "l2", "quantile", "center", "tukey", "random_relu"} <= set(NORMS.names())
    assert {"mean", "kmeans", "all", "kmedoids", "random", "fps", "ls", "kls"} <= set(GENERATORS.names())
    assert {"max", "mean", "mnn", "sum"} <= set(AGGREGATIONS.names())
    assert {"dot", "euclidean", "mahalanobis", "fecam", "ridge", "kernel"} <= set(METRICS.names())
    assert [name for name in GENERATORS.names() if GENERATORS.entry(name).oracle] == ["kls", "ls"]


@pytest.mark.parametrize("setting, value, valid", [("generation", "kmean", "kmeans"), ("norm_pre", "L2", "l2"),
                                                   ("aggregation", "knn", "mnn"), ("metric", "cosine", "euclidean")])
def test_unknown_stage_names_list_the_valid_ones(mixture, setting, value, valid):
    X, y = mixture
    with pytest.raises(UnknownStageError, match=f"unknown .*'{value}'; valid: .*{valid}") as err:
        ImprintClassifier(**{setting: value}).fit(X, y)
    assert "\n" not in str(err.value)


def test_mean_proxies_are_class_means(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", norm_pre="none", norm_post="none").fit(X, y)
    expected = np.stack([X[y == c].astype(np.float64).mean(0) for c in clf.classes_])
    np.testing.assert_allclose(clf.proxies_, expected, rtol=1e-5, atol=1e-5)
    assert list(clf.proxy_counts_) == [1] * len(clf.classes_)


def test_kmeans_with_k_at_least_n_equals_all(mixture):
    X, y = mixture
    small = np.concatenate([np.flatnonzero(y == c)[:7] for c in range(4)])
    everything = ImprintClassifier(generation="all").fit(X[small], y[small])
    for k in (7, 20):
        clf = ImprintClassifier(generation="kmeans", k=k).fit(X[small], y[small])
        np.testing.assert_array_equal(clf.proxies_, everything.proxies_)


def test_classes_smaller_than_k_use_all_their_samples(mixture):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:50]])
    for generation in ("kmeans", "random", "fps", "kmedoids", "kls"):
        clf = ImprintClassifier(generation=generation, k=10).fit(X[rows], y[rows])
        assert list(clf.proxy_counts_) == [3, 10], generation


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


def test_euclidean_mean_max_is_nearest_class_mean(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", norm_pre="none", norm_post="none", norm_inf="none",
                            metric="euclidean").fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(6)])
    d2 = ((X[:, None, :] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(clf.decision_function(X), -d2, rtol=1e-4, atol=1e-3)


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


def test_sampling_generators_pick_real_samples(mixture):
    X, y = mixture
    Xs, counts = sorted_by_class(X, y)
    rows = {tuple(r) for r in Xs.numpy()}
    for name in ("random", "fps", "kmedoids"):
        proxies, proxy_counts = generate(name, Xs, counts, {"k": 5, "seed": 3})
        assert proxy_counts.tolist() == [5] * 6
        assert all(tuple(p) in rows for p in proxies.numpy()), name
        again, _ = generate(name, Xs, counts, {"k": 5, "seed": 3})
        assert torch.equal(proxies, again), f"{name} is not deterministic for a fixed seed"


def test_fps_spreads_proxies_more_than_random(mixture):
    X, y = mixture
    Xs, counts = sorted_by_class(X, y)

    def min_gap(name):
        proxies, _ = generate(name, Xs, counts, {"k": 6, "seed": 0})
        p = proxies.numpy().reshape(6, 6, -1)
        d = np.linalg.norm(p[:, :, None] - p[:, None, :], axis=-1) + np.eye(6) * 1e9
        return d.min(axis=(1, 2)).mean()

    assert min_gap("fps") > min_gap("random")


def test_ls_oracle_matches_its_closed_form(mixture):
    X, y = mixture
    Xs, counts = sorted_by_class(X, y)
    lam = 1e-2
    proxies, _ = generate("ls", Xs, counts, {"ls_lambda": lam})
    data = Xs.numpy().astype(np.float64)
    mu = data.mean(0)
    sigma_t = np.cov(data.T, bias=True)
    means = np.stack([X[y == c].astype(np.float64).mean(0) for c in range(6)])
    expected = means @ np.linalg.inv(sigma_t + np.outer(mu, mu) + lam * np.eye(X.shape[1])) / 6
    np.testing.assert_allclose(proxies.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_oracles_are_flagged(mixture):
    X, y = mixture
    assert ImprintClassifier(generation="ls").is_oracle
    assert not ImprintClassifier(generation="kmeans").is_oracle
    clf = ImprintClassifier(generation="ls", norm_pre="none", norm_post="none", norm_inf="none").fit(X, y)
    with pytest.raises(ValueError, match="oracle"):
        clf.add_classes(X[:5], ["new"] * 5)
