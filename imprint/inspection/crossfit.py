"""Class probabilities of every support row from a model that did not see it: stratified folds, one classifier
of a preset per fold (the confident-learning input of ``labels`` and the confusions of ``health``)."""
from __future__ import annotations

import numpy as np

from imprint.sampling import stratified_folds


def cross_fitted_proba(X: np.ndarray, codes: np.ndarray, n_classes: int, *, preset: str, n_folds: int,
                       seed: int) -> np.ndarray:
    """(n_rows, n_classes) probabilities, row i from the fold model fitted without it; NaN rows where a row's
    class has no other member to learn from (nothing can judge its label)."""
    from imprint.classifier import ImprintClassifier

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
