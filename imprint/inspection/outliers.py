"""Support images that look like no class: the rejection score of a classifier fitted on the support set, read
for every support row from models that did not see it (the calibration scores ``reject`` already computes); the
`rate` share of the support set with the highest scores is flagged (at least one image: the most outlying)."""
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


def find_outliers(X: np.ndarray, codes: np.ndarray, *, preset: str, reject: str, rate: float,
                  seed: int) -> OutlierFindings:
    """Cross-fitted unknown scores of the support rows X (class codes `codes`) under the rejection score
    `reject` on top of `preset`; the highest `rate` share of them flagged."""
    from imprint.classifier import ImprintClassifier

    model = ImprintClassifier.from_preset(preset, reject=reject, reject_rate=rate, seed=seed).fit(X, codes)
    scores = np.asarray(model.open_set_.scores, dtype=np.float64)
    finite = np.sort(scores[np.isfinite(scores)])
    if not len(finite):
        return OutlierFindings(scores, np.zeros(len(scores), dtype=bool), float("inf"), reject)
    threshold = float(finite[-max(1, int(round(rate * len(finite))))])
    return OutlierFindings(scores, np.isfinite(scores) & (scores >= threshold), threshold, reject)
