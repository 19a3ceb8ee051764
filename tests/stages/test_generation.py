"""Tests of ``imprint.stages.generation``: gEN stages: turn each class's (normalised) support embeddings into
proxies."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier
from imprint.stages.generation import generate


def sorted_by_class(X, y):
    order = np.argsort(y, kind="stable")
    return torch.from_numpy(X[order]), torch.from_numpy(np.bincount(y[order]))


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
