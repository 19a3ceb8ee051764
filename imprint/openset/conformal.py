"""Split-conformal thresholds and prediction sets from calibration scores of in-distribution data alone.

With n calibration scores of samples exchangeable with the future known-class queries, rejecting a query
whose score exceeds the ceil((n + 1)(1 - a))-th smallest calibration score rejects a known-class query with
probability at most a. The same rule on the nonconformity of the true class (here: the gap between the best
class score and the true class's) gives label sets that hold the true class with probability at least 1 - a.
"""
from __future__ import annotations

import math

import numpy as np


def minimum_samples(rate: float) -> int:
    """Fewest calibration samples for which a threshold at `rate` exists: n >= 1/rate - 1."""
    return math.ceil(1.0 / rate - 1.0 - 1e-9)


def threshold(scores: np.ndarray, rate: float) -> float:
    """The conformal threshold for rejecting at most `rate` of known-class queries (inf when too few scores)."""
    n = len(scores)
    level = math.ceil((n + 1) * (1.0 - rate) - 1e-9)
    if level > n or n == 0:
        return math.inf
    return float(np.sort(scores)[level - 1])


def margins(class_scores: np.ndarray, true_columns: np.ndarray) -> np.ndarray:
    """Nonconformity of the true class: best class score minus the true class's (inf where it is unknown)."""
    out = np.full(len(class_scores), np.inf)
    known = true_columns >= 0
    rows = np.flatnonzero(known)
    out[rows] = class_scores[rows].max(axis=1) - class_scores[rows, true_columns[rows]]
    return out


def prediction_sets(class_scores: np.ndarray, calibration_margins: np.ndarray, alpha: float) -> np.ndarray:
    """Boolean (n_queries, n_classes): the classes whose gap to the best score is within the conformal quantile."""
    cut = threshold(calibration_margins, alpha)
    return (class_scores.max(axis=1, keepdims=True) - class_scores) <= cut
