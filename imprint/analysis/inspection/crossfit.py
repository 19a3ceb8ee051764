"""Class probabilities of every support row from models that did not see it: stratified folds, one classifier
of a preset per fold (the confusions of ``health``), and the labels of its nearest other rows (leave-one-out
k-NN votes). Their mean is what ``labels`` judges: on real embeddings it beat either alone (docs/inspect.md)."""
from __future__ import annotations

import numpy as np

from imprint.core.sampling import stratified_folds


def cross_fitted_proba(X: np.ndarray, codes: np.ndarray, n_classes: int, *, preset: str, n_folds: int,
                       seed: int) -> np.ndarray:
    """(n_rows, n_classes) probabilities, row i from the fold model fitted without it; NaN rows where a row's
    class has no other member to learn from (nothing can judge its label)."""
    from imprint.estimator.classifier import ImprintClassifier

    counts = np.bincount(codes, minlength=n_classes)
    n_folds = int(min(n_folds, max(2, counts.max())))
    assignment = stratified_folds(codes, n_folds, seed)
    proba = np.full((len(codes), n_classes), np.nan)
    for fold in range(n_folds):
        train, test = np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)
        present = np.unique(codes[train])
        if len(present) < 2 or not len(test):
            continue
        model = ImprintClassifier.from_preset(preset, seed=seed).fit(X[train], codes[train])
        rows = np.zeros((len(test), n_classes))
        rows[:, model.classes_] = model.predict_proba(X[test])
        judged = np.isin(codes[test], present)
        proba[test[judged]] = rows[judged]
    return proba


NEIGHBOUR_VOTES = 15  # neighbours whose labels vote in the k-NN probabilities


def neighbour_votes(indices: np.ndarray, codes: np.ndarray, n_classes: int, k: int = NEIGHBOUR_VOTES) -> np.ndarray:
    """(n_rows, n_classes) share of each class among the labels of every row's k nearest other rows, from
    `indices` (n_rows x at least k + 1 nearest rows, best first, the row itself usually among them)."""
    n = len(indices)
    others = indices != np.arange(n)[:, None]
    others &= indices >= 0
    keep = others & (np.cumsum(others, axis=1) <= k)  # the first k that are not the row itself
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    votes = np.zeros((n, n_classes))
    np.add.at(votes, (rows, codes[indices[keep]]), 1.0)
    return votes / np.maximum(votes.sum(axis=1, keepdims=True), 1.0)
