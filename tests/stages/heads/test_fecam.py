"""Tests of ``imprint.stages.heads.fecam``: feCAM (Goswami, Liu, Twardowski, van de Weijer, NeurIPS 2023): one shrunk
covariance per class, normalised to a correlation; low-rank where a class has fewer samples than dimensions."""
from __future__ import annotations

import numpy as np

from imprint import ImprintClassifier

RAW = dict(norm_pre="none", norm_post="none", norm_inf="none")


def shrink(S, a):
    d = len(S)
    return (1 - a) * S + a * np.trace(S) / d * np.eye(d)


def test_fecam_scores_use_one_covariance_per_class(correlated):
    X, y = correlated
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


def test_the_fecam_preset_is_the_published_method(real_embeddings):
    """FeCAM as its authors compute it for a frozen pretrained encoder, from the formulas: L2-normalised features,
    per class S = cov (unbiased), S + mean(diag S) I, normalised to a correlation matrix C, and the distance
    (x - mu)' pinv(C) (x - mu), pinv(C) being C's inverse (it is positive definite). The preset gives the same
    scores and labels."""
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
        distances[:, c] = ((diff @ np.linalg.inv(cov)) * diff).sum(1)  # (x - mu)' C^-1 (x - mu), row by row
    clf = ImprintClassifier.from_preset("fecam").fit(Xs.astype(np.float32), ys)
    scores = clf.decision_function(Xq.astype(np.float32))
    np.testing.assert_allclose(scores, -distances, rtol=1e-3, atol=1e-3 * np.abs(distances).mean())
    assert (clf.predict(Xq.astype(np.float32)) == distances.argmin(1)).mean() >= 0.99
