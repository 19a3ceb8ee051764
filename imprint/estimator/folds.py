"""Pipelines fitted inside cross-validation (the tuning of "auto" settings, the calibration, the open set): a
``FoldFitter`` fits them on rows of the support set with the zero-shot text of the classes present, or scores every
fold from statistics all folds share where the pipeline allows it; a ``FoldModel`` answers in the support set's
class codes."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from imprint.core.blocks import tensor_view
from imprint.estimator.pipeline import PROJECTED_BYTES, Pipeline
from imprint.estimator.text_blend import ZeroShotText
from imprint.stages import METRICS
from imprint.stages.norm import make_norm, norm_states


class FoldFitter:
    """Fits pipelines on rows of a support set inside cross-validation (tuning, calibration): with the given
    settings, on the device, and with the zero-shot text weights of the classes present in the fold. Where the
    pipeline lets every fold share one pass over the support set (``shared``), it scores folds without fitting."""

    def __init__(self, device: torch.device, text_weights: np.ndarray | None, seed: int) -> None:
        self.device, self.text_weights, self.seed = device, text_weights, seed
        # the last statistics: their key, and the X and rows they were computed on
        self._shared: tuple[tuple[Any, ...], tuple[np.ndarray, np.ndarray | None], Any] | None = None

    def fit(self, X: np.ndarray, codes: np.ndarray, settings: dict[str, Any]) -> FoldModel:
        """A pipeline fitted on rows X with class codes `codes` (of the whole support set, some maybe absent)."""
        present, local = np.unique(codes, return_inverse=True)
        text = None if self.text_weights is None else ZeroShotText(self.text_weights[present])
        return FoldModel(present, Pipeline.fit(X, local, len(present), settings, self.device, text, self.seed,
                                               solve=False))

    def shared(self, X: np.ndarray, codes: np.ndarray, settings: dict[str, Any],
               rows: np.ndarray | None = None) -> Any | None:
        """The head's ``fold_statistics`` on the normalised rows of X (those at positions `rows` where given, read
        in blocks: no copy of them whole), computed once for every fold of a
        cross-validation of `settings` (kept for the next call with the same normalisation), where the pipeline
        allows it: the head has them; norm_pre learns nothing from its rows and queries go through the same
        stage (so a fold's rows and its held-out queries are rows of one transformed set, whatever the fold);
        one proxy per class scored as it is (generation 'mean', norm_post 'none', aggregation 'max'); no
        zero-shot text; the transformed set within PROJECTED_BYTES. None otherwise: a fit per fold."""
        statistics = METRICS.entry(settings["metric"]).impl.fold_statistics
        if statistics is None or self.text_weights is not None or settings["norm_inf"] != settings["norm_pre"] or \
                (settings["generation"], settings["norm_post"], settings["aggregation"]) != ("mean", "none", "max"):
            return None
        norm = make_norm(settings["norm_pre"], settings)
        if norm.learns_from_rows:
            return None
        norm.fit(_float_rows(X, rows, 0, 1, self.device))
        width = norm.output_dim or X.shape[1]
        n = len(X) if rows is None else len(rows)
        if n * width * 4 > PROJECTED_BYTES:
            return None
        key = (settings["norm_pre"], repr([options for options, _ in norm_states(norm)]))
        if self._shared is not None and self._shared[0] == key and self._shared[1][0] is X and \
                self._shared[1][1] is rows:
            return self._shared[2]
        self._shared = None  # the previous statistics are let go before the next are computed
        with torch.inference_mode():
            normed = torch.cat([norm(_float_rows(X, rows, start, 4096, self.device)) for start in range(0, n, 4096)])
        self._shared = (key, (X, rows), statistics(normed, codes))
        return self._shared[2]


def _float_rows(X: np.ndarray, rows: np.ndarray | None, start: int, count: int, device: torch.device) -> torch.Tensor:
    """Rows start..start+count of X (of X[rows] where rows are given) as float32 on the device."""
    block = X[start:start + count] if rows is None else X[rows[start:start + count]]
    return tensor_view(block).to(device, torch.float32)


class FoldModel:
    """A pipeline fitted on a fold, answering in the support set's class codes."""

    def __init__(self, present: np.ndarray, pipeline: Pipeline) -> None:
        self.present, self.pipeline = present, pipeline

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.present[self.pipeline.predict_codes(X)]

    def candidate_predictions(self, name: str, values: list[Any], X: np.ndarray) -> list[np.ndarray] | None:
        predicted = self.pipeline.candidate_predictions(name, values, X)
        return None if predicted is None else [self.present[p] for p in predicted]

    def class_scores(self, X: np.ndarray) -> np.ndarray:
        """Scores of the classes present in the fold (columns in `present` order)."""
        return self.pipeline.class_scores(X)

    def held_out_scores(self, X: np.ndarray) -> np.ndarray:
        """``class_scores`` of rows this model scores once (see ``Pipeline.held_out_class_scores``)."""
        return self.pipeline.held_out_class_scores(X)
