"""What every grid protocol shares: the task a cell sees, the registry, and the closed-set way of measuring."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from imprint.core.errors import UserError
from imprint.core.settings import Registry
from imprint.workflows.evaluate import expected_calibration_error

PROTOCOLS: Registry[type["Protocol"]] = Registry("protocol")


@dataclass
class Task:
    """A cell's data: support, validation and test rows with task labels 0..C-1, the test images of the
    dataset's other classes (`near`) and of other datasets (`far`), and the class names' text embeddings."""

    Xs: np.ndarray
    ys: np.ndarray
    Xv: np.ndarray
    yv: np.ndarray
    Xt: np.ndarray
    yt: np.ndarray
    near: np.ndarray
    far: np.ndarray | None
    text: np.ndarray | None
    dataset_class: np.ndarray  # the dataset's class index of each task label

    def text_of(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """fit's zero-shot arguments for the task labels `labels` (none without text embeddings)."""
        if self.text is None:
            return {}
        return {"text_embeddings": self.text[self.dataset_class[labels]], "text_labels": labels}


class Protocol:
    """Closed-set evaluation: fit on the support set, predict the test images of the task's classes."""

    #: the config's `steps` axis applies (classes arriving in steps)
    uses_steps = False
    #: the config's `unknown_datasets` apply (images of none of the classes)
    uses_unknown_datasets = False
    #: a trained baseline (linear probe) can be compared under it
    allows_baselines = True

    def check(self, config: Any) -> None:
        """Refuse, in one line, a config this protocol cannot run."""
        if config.unknown_datasets and not self.uses_unknown_datasets:
            takers = [name for name in PROTOCOLS.names() if PROTOCOLS.get(name).uses_unknown_datasets]
            raise UserError(f"'unknown_datasets' are for protocol: {', '.join(takers)}")
        if config.baselines and not self.allows_baselines:
            raise UserError(f"protocol {config.protocol} cannot compare the linear_probe baseline: leave 'baselines' "
                            "out")

    def fit(self, cell: Any, task: Task) -> tuple[Any, dict[str, float]]:
        """The classifier of the cell, fitted on the support set, and any metrics gathered while fitting."""
        from imprint.estimator.classifier import ImprintClassifier

        model = ImprintClassifier(**cell.method, seed=cell.seed, device="cpu").fit(
            task.Xs, task.ys, **task.text_of(np.unique(task.ys)))
        return model, {}

    def scored(self, model: Any, task: Task, predicted: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """The predictions the accuracy is measured on, and this protocol's own metrics of the test images."""
        return predicted, {}

    def measure(self, cell: Any, task: Task, fit: Any = None) -> dict[str, Any]:
        """Accuracy, macro-F1, validation accuracy, fit and predict times, the values tuned and the protocol's
        own metrics; `fit` replaces the protocol's fit (a baseline)."""
        start = time.perf_counter()
        model, extra = (fit or self.fit)(cell, task)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        predicted = model.predict(task.Xt)
        predict_time = time.perf_counter() - start
        predicted, scores = self.scored(model, task, predicted)
        val_accuracy = float((model.predict(task.Xv) == task.yv).mean()) if len(task.yv) else float("nan")
        known = np.isin(task.yt, model.classes_)
        ece = expected_calibration_error(model.predict_proba(task.Xt[known]),
                                         np.searchsorted(model.classes_, task.yt[known])) if known.any() else np.nan
        return {**{f"{name}_tuned": value for name, value in getattr(model, "tuned_", {}).items()},
                "accuracy": float((predicted == task.yt).mean()),
                "macro_f1": float(f1_score(task.yt, predicted, average="macro", labels=np.unique(task.ys),
                                           zero_division=0)),
                "val_accuracy": val_accuracy, "ece": ece, "fit_time_s": fit_time, "predict_time_s": predict_time,
                **scores, **extra}
