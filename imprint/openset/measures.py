"""Open-set metrics from unknown-scores (higher = more likely unknown) of known-class and unknown images."""
from __future__ import annotations

import numpy as np


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Probability that an unknown image scores higher than a known one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    if not len(known) or not len(unknown):
        return float("nan")
    labels = np.concatenate([np.zeros(len(known)), np.ones(len(unknown))])
    return float(roc_auc_score(labels, np.concatenate([known, unknown])))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown images accepted when the threshold accepts `tpr` of the known ones (FPR95)."""
    if not len(known) or not len(unknown):
        return float("nan")
    cut = np.quantile(known, tpr, method="higher")
    return float((unknown <= cut).mean())
