"""Tests of ``imprint.stages.kmeans``: k-means for many classes at once."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mixture_embeddings
from sklearn.cluster import KMeans

from imprint.stages.kmeans import batched_kmeans, faiss_kmeans, size_buckets


def class_sorted(n_classes=8, per_class=300, dim=24, modes=5, seed=1):
    X, y = mixture_embeddings(n_classes, per_class, dim, modes, seed)
    return torch.from_numpy(X), torch.full((n_classes,), per_class), X, y


def sklearn_inertia(X, y, k):
    return sum(KMeans(k, n_init=1, random_state=0).fit(X[y == c]).inertia_ for c in np.unique(y))


def test_batched_kmeans_matches_sklearn_quality():
    Xt, counts, X, y = class_sorted()
    ours = batched_kmeans(Xt, counts, k=10, seed=0)
    assert ours.centroids.shape == (80, 24)
    assert float(ours.inertia.sum()) <= 1.02 * sklearn_inertia(X, y, 10)


def test_batched_kmeans_inertia_is_the_within_cluster_sum_of_squares():
    Xt, counts, X, y = class_sorted(n_classes=3)
    ours = batched_kmeans(Xt, counts, k=4, seed=0)
    for c in range(3):
        centres = ours.centroids[4 * c: 4 * c + 4].numpy()
        points = X[y == c]
        d2 = ((points[:, None, :] - centres[None]) ** 2).sum(-1).min(1).sum()
        assert float(ours.inertia[c]) == pytest.approx(d2, rel=1e-4)


def test_batched_kmeans_is_seeded_and_deterministic():
    Xt, counts, _, _ = class_sorted(n_classes=3)
    a = batched_kmeans(Xt, counts, k=6, seed=7).centroids
    b = batched_kmeans(Xt, counts, k=6, seed=7).centroids
    c = batched_kmeans(Xt, counts, k=6, seed=8).centroids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unequal_class_sizes_and_tiny_classes():
    rng = np.random.default_rng(0)
    sizes = [1, 3, 20, 45, 700]
    X = torch.from_numpy(rng.normal(size=(sum(sizes), 8)).astype(np.float32))
    result = batched_kmeans(X, torch.tensor(sizes), k=20, seed=0)
    assert result.counts.tolist() == [1, 3, 20, 20, 20]
    np.testing.assert_array_equal(result.centroids[:4].numpy(), X[:4].numpy())
    assert torch.isfinite(result.centroids).all()


def test_duplicate_points_give_no_empty_clusters():
    X = torch.cat([torch.zeros(30, 4), torch.ones(30, 4)])
    result = batched_kmeans(X, torch.tensor([30, 30]), k=5, seed=0)
    assert torch.isfinite(result.centroids).all()
    assert float(result.inertia.sum()) == pytest.approx(0.0, abs=1e-6)


def test_size_buckets_cover_every_class_once_with_bounded_padding():
    sizes = np.array([5, 500, 260, 240, 6, 7, 1000, 3])
    buckets = list(size_buckets(np.arange(len(sizes)), sizes, d=16, budget=16 * 1200))
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(sizes)))
    for bucket in buckets:
        assert sizes[bucket].max() <= 2 * sizes[bucket].min() or len(bucket) == 1


def test_faiss_backend_no_subsampling_no_warnings(capfd):
    Xt, counts, X, y = class_sorted(n_classes=3, per_class=300)
    result = faiss_kmeans(Xt, counts, k=20, seed=0)  # 300 < 39 * 20: faiss would warn by default
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err + captured.out
    assert result.centroids.shape == (60, 24)
    assert float(result.inertia.sum()) <= 1.05 * sklearn_inertia(X, y, 20)
    tiny = faiss_kmeans(Xt[:5], torch.tensor([2, 3]), k=4, seed=0)  # n < k: faiss alone would fail
    np.testing.assert_array_equal(tiny.centroids.numpy(), X[:5])


def test_faiss_backend_clusters_a_large_class_from_a_seeded_sample(monkeypatch):
    """A class of more than SAMPLE_ROWS rows: FAISS clusters a seeded sample of them, as the batched backend does
    (memory bounded: a class of a million rows was copied whole as float32), and the same rows each time."""
    from imprint.stages import kmeans

    monkeypatch.setattr(kmeans, "SAMPLE_ROWS", 200)
    Xt, counts, X, y = class_sorted(n_classes=3, per_class=300)
    sampled = faiss_kmeans(Xt, counts, 5, seed=0)  # each class from a seeded 200 of its 300 rows
    rows = np.sort(np.random.default_rng(2).choice(np.arange(600, 900), 200, replace=False))  # class 2's (seed 0 + 2)
    alone = faiss_kmeans(Xt[rows], torch.tensor([200]), 5, seed=0)
    np.testing.assert_array_equal(sampled.centroids[10:].numpy(), alone.centroids.numpy())
    np.testing.assert_array_equal(faiss_kmeans(Xt, counts, 5, seed=0).centroids.numpy(), sampled.centroids.numpy())
