"""Likely wrong labels by confident learning (Northcutt, Jiang, Chuang. JAIR 2021) on cross-fitted
probabilities: a class's threshold is the mean probability its own rows get for it; a row is flagged when its most
likely class among those it clears is not its given one and is more probable than it; rows are ranked by how
little probability their given class gets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabelFindings:
    """Per support row: flagged as a likely wrong label, its score (1 - probability of the given class: the
    higher the likelier wrong), the suggested class code, and the per-class thresholds used."""

    flagged: np.ndarray
    score: np.ndarray
    suggested: np.ndarray
    thresholds: np.ndarray


def find_label_issues(proba: np.ndarray, codes: np.ndarray) -> LabelFindings:
    """Confident-learning findings from cross-fitted `proba` (NaN rows are not judged) and the given `codes`."""
    n_classes = proba.shape[1]
    judged = ~np.isnan(proba).any(axis=1)
    own = np.where(judged, proba[np.arange(len(codes)), codes], np.nan)
    sums = np.bincount(codes[judged], weights=own[judged], minlength=n_classes)
    counts = np.bincount(codes[judged], minlength=n_classes)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    filled = np.where(judged[:, None], proba, 0.0)
    clears = filled >= thresholds[None, :]
    suggested = np.where(clears, filled, -1.0).argmax(axis=1)
    rows = np.arange(len(codes))
    flagged = judged & clears.any(axis=1) & (suggested != codes) & (filled[rows, suggested] > filled[rows, codes])
    suggested = np.where(clears.any(axis=1), suggested, filled.argmax(axis=1))
    score = np.where(judged, 1.0 - own, np.nan)
    return LabelFindings(flagged, score, suggested, thresholds)
