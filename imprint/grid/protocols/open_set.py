"""Open set: the classifier says "unknown" for images of none of its classes, at the rate the variant sets."""
from __future__ import annotations

from typing import Any

import numpy as np

from imprint.core.errors import UserError
from imprint.grid.protocols.base import PROTOCOLS, Protocol, Task
from imprint.openset.measures import auroc, fpr_at_tpr


@PROTOCOLS.register("open_set")
class OpenSet(Protocol):
    """Realised rejection of known test images (against the target rate), coverage and size of the conformal
    label sets at the same rate, and AUROC, FPR at 95% TPR and rejection rate for near (the dataset's other
    classes) and far (other datasets' test images) unknown images; accuracy is the closed-set accuracy."""

    uses_unknown_datasets = True

    def check(self, config: Any) -> None:
        super().check(config)
        for name, values in config.per_variant("reject"):
            if None in values:
                raise UserError(f"protocol open_set scores rejection: set reject (e.g. [max_score, mahalanobis]) "
                                f"at the top level or in every variant; {name} has none")

    def scored(self, model: Any, task: Task, predicted: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        if getattr(model, "reject", None) is None:  # a baseline
            return predicted, {}
        label = model.unknown_label_
        rejected = predicted == label
        known_scores = model.score_unknown(task.Xt)
        sets = model.predict_set(task.Xt, float(model.reject_rate))  # conformal sets at alpha = the target rate
        truth = np.searchsorted(model.classes_, task.yt)
        out = {"target_rate": float(model.reject_rate), "known_rejected": float(rejected.mean()),
               "set_coverage": float(sets[np.arange(len(sets)), truth].mean()), "set_size": float(sets.sum(1).mean()),
               "n_near": len(task.near), "n_far": 0 if task.far is None else len(task.far)}
        for name, unknown in (("near", task.near), ("far", task.far)):
            if unknown is None or not len(unknown):
                out.update({f"auroc_{name}": float("nan"), f"fpr95_{name}": float("nan"),
                            f"unknown_rejected_{name}": float("nan")})
                continue
            scores = model.score_unknown(unknown)
            out.update({f"auroc_{name}": auroc(known_scores, scores),
                        f"fpr95_{name}": fpr_at_tpr(known_scores, scores),
                        f"unknown_rejected_{name}": float((scores > model.threshold_).mean())})
        return model.classes_[model.predict_proba(task.Xt).argmax(1)], out  # closed-set accuracy
