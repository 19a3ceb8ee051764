"""Class-incremental: the task's classes arrive in steps, each added to the fitted classifier (no refit)."""
from __future__ import annotations

from typing import Any

import numpy as np

from imprint.grid.protocols.base import PROTOCOLS, Protocol, Task


@PROTOCOLS.register("incremental")
class Incremental(Protocol):
    """Classes arrive in `steps` steps (the task's classes in a seeded random order, split as evenly as possible):
    fit on the first step's classes, add each next step's with add_classes, and after every step score the test
    images of the classes seen so far. The last step's accuracy is the cell's; the mean of the step accuracies
    is reported beside it, as SimpleCIL and RanPAC report."""

    uses_steps = True
    allows_baselines = False

    def fit(self, cell: Any, task: Task) -> tuple[Any, dict[str, float]]:
        from imprint.estimator.classifier import ImprintClassifier

        classes = np.random.default_rng(cell.seed).permutation(np.unique(task.ys))
        arrivals = np.array_split(classes, min(cell.steps, len(classes) // 2))
        model, accuracies = None, []
        for step, arriving in enumerate(arrivals):
            rows = np.isin(task.ys, arriving)
            texts = task.text_of(np.sort(arriving))
            if model is None:
                model = ImprintClassifier(**cell.method, seed=cell.seed, device="cpu").fit(
                    task.Xs[rows], task.ys[rows], **texts)
            else:
                model.add_classes(task.Xs[rows], task.ys[rows], **texts)
            seen = np.isin(task.yt, np.concatenate(arrivals[:step + 1]))
            accuracies.append(float((model.predict(task.Xt[seen]) == task.yt[seen]).mean()))
        return model, {"average_accuracy": float(np.mean(accuracies)), "first_step_accuracy": accuracies[0]}
