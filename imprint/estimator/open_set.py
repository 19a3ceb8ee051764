"""The open-set component of a classifier: a rejection score fitted on the support set, its conformal threshold
at the chosen rate, and the conformal margins of the label sets, all calibrated on scores of support samples from
models that did not see them (cross-fitted folds, or leave-one-out where that is exact).

It works in class codes on a fitted ``imprint.estimator.pipeline.Pipeline``; the estimator maps labels. It keeps the
support set, so it can be calibrated again when classes are added or removed, and it owns its part of a
classifier file (``state`` / ``restore``).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from imprint.core.sampling import stratified_folds
from imprint.estimator.folds import FoldFitter
from imprint.estimator.pipeline import Pipeline, stage_records, stage_states
from imprint.openset import REJECTORS
from imprint.openset.conformal import margins as true_margins
from imprint.openset.conformal import minimum_samples, prediction_sets, threshold
from imprint.openset.scores import Rejector, make_rejector

CALIBRATION_FOLDS = 10  # cross-fitted calibration: every support sample scored by a model that did not see it


class OpenSet:
    """A fitted rejection score (or none: conformal label sets only) with its calibration."""

    def __init__(self, rejector: Rejector | None, rate: float, margins: np.ndarray | None = None) -> None:
        self.rejector, self.rate = rejector, float(rate)
        self.margins = margins  # nonconformity of the true class, for predict_set
        self.scores: np.ndarray | None = None  # calibration rejection scores
        self.threshold = float("inf")
        self.support: np.ndarray | None = None
        self.support_codes: np.ndarray | None = None

    @classmethod
    def fit(cls, reject: str, settings: dict[str, Any], X: np.ndarray, codes: np.ndarray, pipeline: Pipeline,
            folds: FoldFitter, fold_settings: Callable[[np.ndarray, int], dict[str, Any]], seed: int) -> OpenSet:
        """Fit the rejection score `reject` on the support rows X (float32, codes `codes`) and calibrate its
        threshold (and the conformal sets) on scores of support samples from models that did not see them;
        `fold_settings(counts, n_folds)` gives the settings of those models."""
        open_set = cls(None, settings["reject_rate"])
        open_set.support, open_set.support_codes = X, codes  # kept: recalibration when classes change
        X_t, codes_t = torch.from_numpy(X).to(pipeline.device), torch.from_numpy(codes).to(pipeline.device)
        open_set.rejector = make_rejector(reject, settings).fit(X_t, codes_t, pipeline.model)
        fold_scores, open_set.margins = open_set._cross_fitted(reject, settings, X, codes, folds, fold_settings, seed)
        rejector = open_set.rejector
        scores = rejector.leave_one_out_scores(X_t, codes_t, pipeline.model) if rejector.leave_one_out else fold_scores
        open_set.scores = np.asarray(scores.cpu().numpy() if hasattr(scores, "cpu") else scores, dtype=np.float64)
        open_set.threshold = threshold(open_set.scores[np.isfinite(open_set.scores)], open_set.rate)
        if not np.isfinite(open_set.threshold):
            warnings.warn(f"{len(codes)} support samples are too few to reject at most {open_set.rate} of known "
                          f"images (it needs at least {minimum_samples(open_set.rate)}); nothing will be rejected",
                          stacklevel=4)
        return open_set

    def _cross_fitted(self, reject: str, settings: dict[str, Any], X: np.ndarray, codes: np.ndarray,
                      folds: FoldFitter, fold_settings: Callable[[np.ndarray, int], dict[str, Any]],
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Rejection scores and true-class margins of every support sample from fold models fitted without it."""
        counts = np.bincount(codes)
        n_folds = int(min(CALIBRATION_FOLDS, max(2, counts.max())))
        assignment = stratified_folds(codes, n_folds, seed)
        scores, margins = np.full(len(codes), np.inf), np.full(len(codes), np.inf)
        fixed = fold_settings(counts, n_folds)
        for f in range(n_folds):
            train, test = assignment != f, assignment == f
            present = np.unique(codes[train])
            if len(present) < 2 or not test.any():
                continue
            fold = folds.fit(X[train], codes[train], fixed)
            class_scores = fold.class_scores(X[test])
            column = np.searchsorted(present, codes[test])
            column = np.where(np.isin(codes[test], present), column, -1)
            margins[test] = true_margins(class_scores, column)
            if not self.rejector.leave_one_out:
                device = fold.pipeline.device
                fold_codes = np.searchsorted(present, codes[train])
                rejector = make_rejector(reject, settings).fit(
                    torch.from_numpy(X[train]).to(device), torch.from_numpy(fold_codes).to(device),
                    fold.pipeline.model)
                with torch.inference_mode():
                    scores[test] = rejector.score(torch.from_numpy(X[test]).to(device),
                                                  torch.from_numpy(class_scores).to(device),
                                                  fold.pipeline.model).double().cpu().numpy()
        return scores, margins

    # ------------------------------------------------------------------ answers
    def score(self, X: np.ndarray, pipeline: Pipeline) -> np.ndarray:
        """One score per query, higher meaning more likely of none of the classes."""
        out = np.empty(len(X), dtype=np.float64)
        for positions, block, buffer in pipeline.blocks(X):
            class_scores = pipeline.model(block, out=buffer) if self.rejector.uses_class_scores else None
            out[positions] = self.rejector.score(block, class_scores, pipeline.model)[
                :positions.stop - positions.start].double().cpu().numpy()
        return out

    def predict(self, X: np.ndarray, pipeline: Pipeline) -> tuple[np.ndarray, np.ndarray]:
        """(best class code, rejected) per query. A score that reads the class scores gets them formed (and the
        class is their argmax); the others leave the class to the ranking scores, exactly as closed-set
        prediction gives it."""
        best = np.empty(len(X), dtype=np.int64)
        rejected = np.empty(len(X), dtype=bool)
        owner = pipeline.proxy_owner()
        for positions, block, buffer in pipeline.blocks(X):
            n = positions.stop - positions.start
            if self.rejector.uses_class_scores:
                class_scores = pipeline.model(block, out=buffer)
                best[positions] = class_scores[:n].argmax(dim=1).cpu().numpy()
            else:
                class_scores = None
                best[positions] = pipeline.best_in_block(block, buffer, owner)[:n].cpu().numpy()
            unknown = self.rejector.score(block, class_scores, pipeline.model)[:n] > self.threshold
            rejected[positions] = unknown.cpu().numpy()
        return best, rejected

    def label_sets(self, class_scores: np.ndarray, alpha: float) -> np.ndarray:
        """Conformal label sets at level 1 - alpha from the calibration margins."""
        return prediction_sets(class_scores, self.margins, alpha)

    def calibrate(self, X: np.ndarray, columns: np.ndarray, pipeline: Pipeline) -> None:
        """Split-conformal calibration on held-out labelled embeddings (`columns`: their class codes)."""
        self.margins = true_margins(pipeline.class_scores(X), columns)
        if self.rejector is not None:
            self.scores = self.score(X, pipeline)
            self.threshold = threshold(self.scores, self.rate)
            if not np.isfinite(self.threshold):
                warnings.warn(f"{len(columns)} calibration samples are too few to reject at most {self.rate} of "
                              f"known images (it needs at least {minimum_samples(self.rate)}); nothing will be "
                              "rejected", stacklevel=3)

    # ------------------------------------------------------------------ its part of the file
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        tensors = {"support": self.support, "support_codes": self.support_codes,
                   "calibration.scores": self.scores, "calibration.margins": self.margins}
        stages = stage_records({"reject": [(self.rejector.options(), self.rejector.tensors())]}, tensors)
        return {"threshold": self.threshold, "stages": stages}, tensors

    @classmethod
    def restore(cls, reject: str, rate: float, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                device: torch.device) -> OpenSet:
        (options, saved), = stage_states(meta, tensors, "reject")
        rejector = REJECTORS.get(reject).restore(options, {k: v.to(device) for k, v in saved.items()})
        open_set = cls(rejector, rate, tensors["calibration.margins"].numpy().astype(np.float64))
        open_set.support = tensors["support"].numpy().astype(np.float32)
        open_set.support_codes = tensors["support_codes"].numpy().astype(np.int64)
        open_set.scores = tensors["calibration.scores"].numpy().astype(np.float64)
        open_set.threshold = float(meta["threshold"])
        return open_set

    def stage_arrays(self) -> list[list[str]]:
        """The names of the arrays the rejection score saves (to check a file against)."""
        return [sorted(self.rejector.tensors())]
