"""Tests of ``imprint.analysis.collapse.metrics``: neural-collapse metrics (definitions in
shared/design/collapse.md), from streamed class statistics."""
from __future__ import annotations

import numpy as np
import pytest

from imprint.analysis import collapse as nc


def simplex_etf(K: int, d: int, seed: int = 0) -> np.ndarray:
    """K unit vectors in d >= K-1 dims with pairwise cosine -1/(K-1), randomly rotated."""
    E = np.eye(K) - 1.0 / K
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    basis = np.linalg.svd(E)[2][: K - 1]  # (K-1) x K orthonormal rows spanning the simplex
    return (E @ basis.T) @ Q[: K - 1]


def samples_around(means: np.ndarray, per_class: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(means)), per_class)
    return means[y] + noise * rng.normal(size=(len(y), means.shape[1])), y


def test_simplex_etf_with_tiny_noise_is_collapsed():
    K, d = 6, 20
    means = simplex_etf(K, d) + 3.0  # uncentred features: the shift must not matter
    X, y = samples_around(means, 50, 1e-4)
    report = nc.collapse_report(X.astype(np.float32), y, W=means - 3.0)
    assert report["nc1"] < 1e-5 and report["cdnv"] < 1e-5
    assert report["nc2_equinorm"] < 1e-3 and report["nc2_equiangularity"] < 1e-3
    cos = (means - 3.0) @ (means - 3.0).T
    assert np.allclose(cos[~np.eye(K, dtype=bool)], -1 / (K - 1), atol=1e-9)
    assert report["margin_1vr"] == pytest.approx(K / (K - 1), rel=1e-4)
    assert report["nc3"] < 1e-3 and report["welch_bound"] is None
    # NC4: with centred features the weights-as-linear-classifier and nearest-class-mean agree everywhere
    assert nc.nc4(X - 3.0, y, means - 3.0) == 1.0


@pytest.mark.parametrize("K", [3, 5, 8, 12])
def test_regular_polygon_margin(K):
    angles = 2 * np.pi * np.arange(K) / K
    W = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert nc.margin_1vr(W) == pytest.approx(1 - np.cos(2 * np.pi / K), rel=1e-4)
    assert nc.margin_1vr(W) <= nc.min_pairwise_distance(W) + 1e-9


def test_cross_polytope_subset_margin_is_one():
    d = 4
    W = np.vstack([np.eye(d), -np.eye(d)])[: d + 3]  # d+1 < K <= 2d
    assert nc.margin_1vr(W) == pytest.approx(1.0, rel=1e-4)
    assert nc.welch_bound(len(W), d) == pytest.approx(np.sqrt((len(W) - d) / (d * (len(W) - 1))))


def test_gaussian_classes_match_analytic_nc1_and_cdnv():
    """Isotropic noise sigma^2 I around simplex-ETF means of norm r: NC1 = sigma^2 (K-1)^2 / (r^2 K)."""
    K, d, sigma, r = 4, 12, 0.3, 2.0
    means = r * simplex_etf(K, d)
    X, y = samples_around(means, 20000, sigma, seed=1)
    # Sigma_W = sigma^2 I; Sigma_B = (r^2/(K-1)) P with P the projector on the (K-1)-dim span
    expected_nc1 = sigma ** 2 * (K - 1) * (K - 1) / r ** 2 / K
    assert nc.nc1(X, y) == pytest.approx(expected_nc1, rel=0.02)
    # Var_c = d sigma^2, ||mu_i - mu_j||^2 = 2 r^2 K/(K-1)
    expected_cdnv = d * sigma ** 2 / (2 * r ** 2 * K / (K - 1))
    assert nc.cdnv(X, y) == pytest.approx(expected_cdnv, rel=0.02)
    assert nc.nc1_quotient(X, y) == pytest.approx(d * sigma ** 2 / (r ** 2), rel=0.02)
    assert 0 < nc.vci(X, y) < 1


def test_float32_rank_deficient_case_that_broke_pinv():
    """Uncentred float32 features with K-1 < d: numpy's default pinv gave NC1 = -7.6e6 here."""
    rng = np.random.default_rng(3)
    K, d = 10, 256
    means = rng.normal(size=(K, d)) * 0.5 + 20.0
    X, y = samples_around(means, 40, 0.2, seed=4)
    X = X.astype(np.float32)
    ours = nc.nc1(X, y)
    Xd = X.astype(np.float64)
    mu = np.stack([Xd[y == c].mean(0) for c in range(K)])
    centred = Xd - mu[y]
    sigma_w = centred.T @ centred / len(Xd)
    M = mu - Xd.mean(0)
    sigma_b = M.T @ M / K
    U, S, Vt = np.linalg.svd(sigma_b)
    pinv = (Vt[: K - 1].T / S[: K - 1]) @ U[:, : K - 1].T
    reference = np.trace(sigma_w @ pinv) / K
    assert ours > 0 and ours == pytest.approx(reference, rel=1e-6)


def test_margin_never_exceeds_min_pairwise_distance():
    rng = np.random.default_rng(5)
    for K, d in [(5, 3), (12, 4), (30, 8)]:
        W = rng.normal(size=(K, d))
        assert nc.margin_1vr(W) <= nc.min_pairwise_distance(W) + 1e-9


def test_streaming_equals_in_memory_and_labels_can_be_strings():
    X, y = samples_around(simplex_etf(5, 16) * 2, 300, 0.5, seed=6)
    names = np.array(["a", "b", "c", "d", "e"])[y]
    order = np.random.default_rng(0).permutation(len(X))
    streamed = nc.CollapseStats.from_batches(((X[order[i:i + 97]], names[order[i:i + 97]])
                                           for i in range(0, len(X), 97)))
    assert nc.nc1(streamed) == pytest.approx(nc.nc1(X, y), rel=1e-9)
    assert nc.cdnv(streamed) == pytest.approx(nc.cdnv(X, y), rel=1e-9)
    assert nc.nc2_equinorm(streamed) == pytest.approx(nc.nc2_equinorm(X, y), abs=1e-9)
    assert nc.nc2_equiangularity(streamed) == pytest.approx(nc.nc2_equiangularity(X, y), abs=1e-9)


def test_centring_conventions_differ_only_for_imbalanced_classes():
    means = simplex_etf(4, 8) * 3
    X, y = samples_around(means, 100, 0.4, seed=7)
    assert nc.nc1(X, y, "weighted") == pytest.approx(nc.nc1(X, y, "unweighted"), rel=1e-9)
    keep = (y != 0) | (np.arange(len(y)) % 10 == 0)  # class 0 ten times smaller
    assert nc.nc1(X[keep], y[keep], "weighted") != pytest.approx(nc.nc1(X[keep], y[keep], "unweighted"), rel=1e-3)
    with pytest.raises(ValueError, match="unknown centring"):
        nc.nc1(X, y, "median")


def test_nc3_and_nc4_with_imprinted_proxies():
    from imprint import ImprintClassifier

    # Well-separated classes (distance 4.5 between means, noise 1.2 in norm): every k-means solution puts
    # the proxies near their class mean, so the answer does not hinge on which one k-means finds.
    means = simplex_etf(5, 16) * 4
    X, y = samples_around(means, 200, 0.3, seed=8)
    clf = ImprintClassifier(generation="kmeans", k=3, norm_pre="none", norm_post="none", norm_inf="none").fit(X, y)
    assert nc.nc3(X, y, clf.proxies_, clf.proxy_labels_, centred=False) < 0.05
    assert nc.nc4(X, y, clf.proxies_, clf.proxy_labels_) == 1.0
    wrong = np.roll(clf.proxy_labels_, 3)  # each proxy labelled with the next class: no agreement at all
    assert nc.nc4(X, y, clf.proxies_, wrong) == 0.0
    with pytest.raises(ValueError, match="no weight for class"):
        nc.nc3(X, y, clf.proxies_[:3], clf.proxy_labels_[:3])


def test_collapse_command_on_an_embeddings_file(tmp_path, capsys):
    import json

    from imprint.cli import main

    X, y = samples_around(simplex_etf(4, 10) * 2, 30, 0.2, seed=9)
    np.savez(tmp_path / "emb.npz", embeddings=X.astype(np.float32), labels=np.array(["a", "b", "c", "d"])[y])
    assert main(["collapse", str(tmp_path / "emb.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_classes"] == 4 and report["nc1"] == pytest.approx(nc.nc1(X, y), rel=1e-6)
    assert main(["collapse", str(tmp_path / "missing.npz")]) == 2
    assert "embeddings file not found" in capsys.readouterr().err
