"""``"auto"`` settings chosen on the support set alone, by stratified cross-validation. Never on test images.

Each setting that accepts "auto" declares its candidates (``Setting.tunable``). The settings left at "auto"
are chosen one after another, in the order they are declared: for each candidate, copies of the classifier
are fitted on all folds but one and scored on the held-out fold; the candidate with the best mean accuracy
wins (the earliest on ties). While one setting is tuned, the ones not yet chosen take their middle
candidate, so no fit inside the search searches again.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from imprint.sampling import stratified_folds
from imprint.settings import AUTO, SETTINGS

FOLDS = 3


def candidates(name: str, n_samples: int, n_features: int, n_classes: int) -> list[Any]:
    """The values tried for setting `name` on a support set of this shape."""
    return list(SETTINGS[name].tunable(n_samples=n_samples, n_features=n_features, n_classes=n_classes))


def provisional(name: str, n_samples: int, n_features: int, n_classes: int) -> Any:
    """The value a setting takes while others are tuned (and when there is too little data to tune)."""
    values = candidates(name, n_samples, n_features, n_classes)
    return values[len(values) // 2]


Scorer = Callable[[str, list[Any], dict[str, Any], np.ndarray, np.ndarray], list[float]]


def tune(names: list[str], codes: np.ndarray, n_features: int, score: Scorer,
         seed: int = 0) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Values for the settings `names` (all at "auto") and the mean cross-validated accuracy of every candidate.

    `score(name, candidates, values, train_mask, test_mask)` fits with the given setting values (`name` taking
    each of `candidates` in turn) on the train rows and returns the accuracy of each on the test rows: one call
    per fold, so a stage that can score all candidates from one fit (a covariance decomposed once, a Gram
    matrix computed once) does. With fewer than two samples in some class, nothing can be held out: the
    settings take their middle candidate and a warning says so.
    """
    shape = dict(n_samples=len(codes), n_features=n_features, n_classes=int(codes.max()) + 1)
    chosen = {name: provisional(name, **shape) for name in names}
    smallest = int(np.bincount(codes).min())
    if smallest < 2:
        warnings.warn(f"too few support samples to tune {', '.join(names)} (a class has {smallest}); using "
                      + ", ".join(f"{n}={v!r}" for n, v in chosen.items()), stacklevel=3)
        return chosen, {}
    folds = stratified_folds(codes, min(FOLDS, smallest), seed)
    trace: dict[str, list[float]] = {}
    for name in names:
        values = candidates(name, **shape)
        accuracies = np.mean([score(name, values, chosen, folds != f, folds == f) for f in np.unique(folds)], axis=0)
        chosen[name] = values[int(np.argmax(accuracies))]
        trace[name] = [float(a) for a in accuracies]
    return chosen, trace


def auto_settings(params: dict[str, Any], active: list[str]) -> list[str]:
    """The active settings left at "auto" that the generic tuner chooses (k has its own rule)."""
    return SETTINGS.in_pipeline_order(name for name in active if params.get(name) == AUTO and name != "k"
                                      and SETTINGS[name].tunable)
