"""Few-shot episodes (the SimpleShot / easyfsl protocol): many small n-way k-shot problems drawn from a task."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from imprint.core.errors import UserError
from imprint.grid.protocols.base import PROTOCOLS, Protocol, Task


@PROTOCOLS.register("episodes")
class Episodes(Protocol):
    """Each episode draws `ways` of the task's classes, takes their images in the cell's support set (`shots` per
    class) as support and `queries` random test images of each as queries, imprints and scores; the cell's
    accuracy is the mean over `count` episodes, reported with its 95% confidence half-width (1.96 std /
    sqrt(episodes)). Config: ``protocol: episodes`` and ``episodes: {ways: 5, queries: 15, count: 100}``."""

    allows_baselines = False
    DEFAULTS = {"ways": 5, "queries": 15, "count": 100}

    def check(self, config: Any) -> None:
        super().check(config)
        options = self.options(config)
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"episodes.{name} must be a positive integer; got {value!r}")
        if options["ways"] < 2:
            raise UserError("episodes.ways must be at least 2 (an episode tells classes apart)")

    def options(self, config: Any) -> dict[str, int]:
        """The episode sizes of a config (its `episodes` key over the defaults)."""
        return {**self.DEFAULTS, **(config.episodes or {})}

    def measure(self, cell: Any, task: Task, fit: Any = None) -> dict[str, Any]:
        from imprint.estimator.classifier import ImprintClassifier

        options = dict(cell.protocol_options)
        classes = np.unique(task.ys)
        if len(classes) < options["ways"]:
            raise UserError(f"episodes of {options['ways']} ways need as many classes; the task has {len(classes)}")
        rng = np.random.default_rng(cell.seed)
        accuracies, fit_time, predict_time = [], 0.0, 0.0
        for _ in range(options["count"]):
            chosen = np.sort(rng.choice(classes, options["ways"], replace=False))
            support = np.flatnonzero(np.isin(task.ys, chosen))
            queries = np.concatenate([rng.choice(np.flatnonzero(task.yt == c), min(options["queries"],
                                                                                    int((task.yt == c).sum())),
                                                 replace=False) for c in chosen])
            start = time.perf_counter()
            model = ImprintClassifier(**cell.method, seed=cell.seed, device="cpu").fit(
                task.Xs[support], task.ys[support], **task.text_of(chosen))
            fit_time += time.perf_counter() - start
            start = time.perf_counter()
            accuracies.append(float((model.predict(task.Xt[queries]) == task.yt[queries]).mean()))
            predict_time += time.perf_counter() - start
        accuracies = np.asarray(accuracies)
        ci95 = float(1.96 * accuracies.std(ddof=1) / np.sqrt(len(accuracies))) if len(accuracies) > 1 else 0.0
        return {"accuracy": float(accuracies.mean()), "accuracy_ci95": ci95, "macro_f1": float("nan"),
                "val_accuracy": float("nan"), "fit_time_s": fit_time / len(accuracies),
                "predict_time_s": predict_time / len(accuracies), "episodes": len(accuracies),
                "ways": options["ways"], "queries": options["queries"]}
