"""Support images that look like no class: the rejection score of a classifier fitted on the support set, read
for every support row from models that did not see it (the calibration scores ``reject`` already computes); the
`rate` share of the support set with the highest scores is flagged (at least one image: the most outlying).
The default `knn` score of a classifier whose query space is the unit embeddings (``norm_inf`` l2, as for GDA)
is read from the inspection's one neighbour search instead of a second search of its own."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutlierFindings:
    """Per support row: its cross-fitted unknown score and whether it is above `threshold`."""

    score: np.ndarray
    flagged: np.ndarray
    threshold: float
    reject: str


def knn_width(preset: str, reject: str, codes: np.ndarray) -> int:
    """Neighbours per row the shared search must return for ``knn_scores`` (0 when it cannot serve: another
    score, or a query space other than the unit embeddings)."""
    from imprint.core.presets import preset_settings
    from imprint.openset.scores import auto_knn_k

    if reject != "knn" or preset_settings(preset).get("norm_inf") != "l2":
        return 0
    return auto_knn_k(np.bincount(codes)) + 1


def knn_scores(similarities: np.ndarray, width: int) -> np.ndarray:
    """The `knn` rejector's leave-one-out scores from every row's nearest unit rows (itself among them, best
    first): minus the cosine of the width-th nearest, i.e. the (width - 1)-th nearest other row."""
    return -similarities[:, width - 1].astype(np.float64)


def classifier_scores(X: np.ndarray, codes: np.ndarray, *, preset: str, reject: str, rate: float,
                      seed: int) -> np.ndarray:
    """Cross-fitted unknown scores of the support rows X (class codes `codes`) under the rejection score
    `reject` on top of `preset`: the calibration scores of the fitted classifier."""
    from imprint.estimator.classifier import ImprintClassifier

    model = ImprintClassifier.from_preset(preset, reject=reject, reject_rate=rate, seed=seed).fit(X, codes)
    return np.asarray(model.open_set_.scores, dtype=np.float64)


def flag_outliers(scores: np.ndarray, *, reject: str, rate: float) -> OutlierFindings:
    """The highest `rate` share of the finite `scores` (at least one) flagged."""
    finite = np.sort(scores[np.isfinite(scores)])
    if not len(finite):
        return OutlierFindings(scores, np.zeros(len(scores), dtype=bool), float("inf"), reject)
    threshold = float(finite[-max(1, int(round(rate * len(finite))))])
    return OutlierFindings(scores, np.isfinite(scores) & (scores >= threshold), threshold, reject)
