"""Evaluate one grid cell: imprint (or fit a baseline) on its support set and score it on the test set."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from imprint.classifier import ImprintClassifier
from imprint.collapse import CollapseStats, cdnv, nc1
from imprint.grid.expand import Cell
from imprint.grid.protocol import EmbeddedDataset, split
from imprint.openset.metrics import auroc, fpr_at_tpr
from imprint.settings import SETTINGS

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
    """One results row: the cell's settings, accuracy, macro-F1, validation accuracy, fit and predict times,
    and for the open-set protocol the rejection metrics."""
    rows = split(data, cell.dataset, cell.task, cell.shots, cell.seed)
    Xs, ys = data.X[rows.support], rows.labels[rows.support]
    Xv, yv = data.X[rows.val], rows.labels[rows.val]
    Xt, yt = data.X[rows.test], rows.labels[rows.test]
    start = time.perf_counter()
    incremental = {}
    if "baseline" in cell.method:
        model = LinearProbe(seed=cell.seed).fit(Xs, ys, Xv, yv)
    elif cell.protocol == "incremental":
        model, incremental = fit_incrementally(cell, Xs, ys, Xt, yt, data.text, rows.classes)
    else:
        model = ImprintClassifier(**cell.method, seed=cell.seed, device="cpu").fit(
            Xs, ys, **class_text(data.text, rows.classes, np.unique(ys)))
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    predicted = model.predict(Xt)
    predict_time = time.perf_counter() - start
    open_set = {}
    if cell.protocol == "open_set" and getattr(model, "reject", None) is not None:
        open_set = open_set_metrics(model, Xt, yt, predicted, data.X[rows.near], data.far)
        predicted = model.classes_[model.predict_proba(Xt).argmax(1)]  # closed-set accuracy below
    val_accuracy = float((model.predict(Xv) == yv).mean()) if len(yv) else float("nan")
    collapse = _collapse_of_support.get(cell.support_key)
    if collapse is None:
        collapse = _collapse_of_support[cell.support_key] = support_collapse(Xs, ys)
    used = {f"{name}_used": value for name, value in cell.method.items() if name in SETTINGS
            and SETTINGS[name].capped}  # as run: capped at the shots
    tuned = {f"{name}_tuned": value for name, value in getattr(model, "tuned_", {}).items()}
    return {"key": cell.key, "encoder": cell.encoder, "dataset": cell.dataset.label, "task": cell.group[2],
            "shots": cell.shots, "seed": cell.seed, **cell.requested, **used, **tuned,
            "accuracy": float((predicted == yt).mean()),
            "macro_f1": float(f1_score(yt, predicted, average="macro", labels=np.unique(ys), zero_division=0)),
            "val_accuracy": val_accuracy, "fit_time_s": fit_time, "predict_time_s": predict_time,
            "n_classes": len(np.unique(ys)), "n_support": len(ys), "n_test": len(yt),
            **collapse, **open_set, **incremental}


def class_text(text: np.ndarray | None, dataset_class: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """fit's zero-shot arguments for the task labels `labels` (none without text embeddings)."""
    if text is None:
        return {}
    return {"text_embeddings": text[dataset_class[labels]], "text_labels": labels}


def fit_incrementally(cell: Cell, Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, yt: np.ndarray,
                      text: np.ndarray | None = None, dataset_class: np.ndarray | None = None
                      ) -> tuple[ImprintClassifier, dict[str, float]]:
    """Classes arrive in `cell.steps` steps (the task's classes in a seeded random order, split as evenly as
    possible): fit on the first step's classes, add each next step's with add_classes, and after every step
    score the test images of the classes seen so far. Returns the final classifier and the mean of the
    step accuracies (the last step's is the cell's accuracy), as SimpleCIL and RanPAC report."""
    classes = np.random.default_rng(cell.seed).permutation(np.unique(ys))
    arrivals = np.array_split(classes, min(cell.steps, len(classes) // 2))
    model, accuracies = None, []
    for step, arriving in enumerate(arrivals):
        rows = np.isin(ys, arriving)
        texts = class_text(text, dataset_class, np.sort(arriving))
        if model is None:
            model = ImprintClassifier(**cell.method, seed=cell.seed, device="cpu").fit(Xs[rows], ys[rows], **texts)
        else:
            model.add_classes(Xs[rows], ys[rows], **texts)
        seen = np.isin(yt, np.concatenate(arrivals[:step + 1]))
        accuracies.append(float((model.predict(Xt[seen]) == yt[seen]).mean()))
    return model, {"average_accuracy": float(np.mean(accuracies)), "first_step_accuracy": accuracies[0]}


def open_set_metrics(model: ImprintClassifier, known: np.ndarray, known_labels: np.ndarray,
                     known_predicted: np.ndarray, near: np.ndarray, far: np.ndarray | None) -> dict[str, float]:
    """Realised rejection of known test images (against the target rate), coverage and size of the conformal
    label sets at the same rate, and AUROC, FPR at 95% TPR and rejection rate for near (the dataset's other
    classes) and far (other datasets) unknown images."""
    label = model.unknown_label_
    rejected = known_predicted == label
    known_scores = model.score_unknown(known)
    sets = model.predict_set(known, float(model.reject_rate))  # conformal sets at alpha = the target rate
    truth = np.searchsorted(model.classes_, known_labels)
    out = {"target_rate": float(model.reject_rate), "known_rejected": float(rejected.mean()),
           "set_coverage": float(sets[np.arange(len(sets)), truth].mean()), "set_size": float(sets.sum(1).mean()),
           "n_near": len(near), "n_far": 0 if far is None else len(far)}
    for name, unknown in (("near", near), ("far", far)):
        if unknown is None or not len(unknown):
            out.update({f"auroc_{name}": float("nan"), f"fpr95_{name}": float("nan"),
                        f"unknown_rejected_{name}": float("nan")})
            continue
        scores = model.score_unknown(unknown)
        out.update({f"auroc_{name}": auroc(known_scores, scores), f"fpr95_{name}": fpr_at_tpr(known_scores, scores),
                    f"unknown_rejected_{name}": float((scores > model.threshold_).mean())})
    return out
