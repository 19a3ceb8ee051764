"""Evaluate one grid cell: draw its task's rows, hand them to its protocol (``imprint.grid.protocols``) with the
classifier or a baseline, and add the support set's neural collapse."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from imprint.analysis.collapse import CollapseStats, cdnv, nc1
from imprint.core.settings import SETTINGS
from imprint.grid.data import EmbeddedDataset, split
from imprint.grid.expand import Cell
from imprint.grid.protocols import PROTOCOLS, Task

PROBE_C = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse regularisation strengths tried on validation data


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class LinearProbe:
    """Baseline: multinomial logistic regression on L2-normalised embeddings, C chosen on validation data."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> LinearProbe:
        X, X_val = _unit(X), _unit(X_val)
        best = -1.0
        for C in PROBE_C:
            model = LogisticRegression(C=C, max_iter=2000, random_state=self.seed).fit(X, y)
            accuracy = float((model.predict(X_val) == y_val).mean())
            if accuracy > best:
                best, self.model_, self.C_ = accuracy, model, C
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(_unit(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(_unit(X))

    @property
    def classes_(self) -> np.ndarray:
        return self.model_.classes_


def support_collapse(X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """NC1 and CDNV of the L2-normalised support set (scale-free, so encoders compare); undefined (NaN) when a
    class has a single sample, as there is no within-class spread to measure."""
    if np.bincount(y).min() < 2:
        return {"nc1": float("nan"), "cdnv": float("nan")}
    stats = CollapseStats.from_arrays(_unit(X), y)
    return {"nc1": float(nc1(stats)), "cdnv": float(cdnv(stats))}


# Every variant of a group shares its support set: its NC1/CDNV (0.17 s at 2000 x 1280) is computed once
# per worker process, not once per cell.
_collapse_of_support: dict[tuple, dict[str, float]] = {}


def evaluate_cell(cell: Cell, data: EmbeddedDataset) -> dict[str, Any]:
    """One results row: the cell's settings, what its protocol measures (accuracy, macro-F1, validation accuracy,
    fit and predict times, its own metrics) and the support set's neural collapse."""
    rows = split(data, cell.dataset, cell.task, cell.shots, cell.seed)
    task = Task(data.X[rows.support], rows.labels[rows.support], data.X[rows.val], rows.labels[rows.val],
                data.X[rows.test], rows.labels[rows.test], data.X[rows.near], data.far, data.text, rows.classes)
    protocol = PROTOCOLS.get(cell.protocol)()
    baseline = None
    if "baseline" in cell.method:
        def baseline(cell: Cell, task: Task) -> tuple[LinearProbe, dict]:
            return LinearProbe(seed=cell.seed).fit(task.Xs, task.ys, task.Xv, task.yv), {}
    measured = protocol.measure(cell, task, fit=baseline)
    collapse = _collapse_of_support.get(cell.support_key)
    if collapse is None:
        collapse = _collapse_of_support[cell.support_key] = support_collapse(task.Xs, task.ys)
    used = {f"{name}_used": value for name, value in cell.method.items() if name in SETTINGS
            and SETTINGS[name].capped}  # as run: capped at the shots
    return {"key": cell.key, "encoder": cell.encoder, "dataset": cell.dataset.label, "task": cell.group[2],
            "shots": cell.shots, "seed": cell.seed, **cell.requested, **used, **measured,
            "n_classes": len(np.unique(task.ys)), "n_support": len(task.ys), "n_test": len(task.yt), **collapse}
