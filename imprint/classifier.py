"""``ImprintClassifier``: a training-free classifier imprinted from support embeddings (scikit-learn API).

Its parameters are the settings declared by the pipeline (below) and by every registered stage (see
``imprint.settings``): adding a stage, or importing a plug-in that registers one, adds its settings here.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
import warnings
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from imprint.auto_k import per_class_k, proxy_ratio
from imprint.blocks import CHUNK_BYTES, MIN_ROWS, block_rows, query_blocks, tensor_view
from imprint.devices import resolve_device
from imprint.errors import printable, quoted
from imprint.memory import need_memory
from imprint.model import ImprintedModel
from imprint.openset import REJECTORS, make_rejector, minimum_samples, prediction_sets, threshold
from imprint.openset.conformal import margins as true_margins
from imprint.persistence import ClassifierFileError, read_classifier, write_classifier
from imprint.sampling import stratified_folds
from imprint.settings import AUTO, SETTINGS, Setting
from imprint.stages import (
    AGGREGATIONS,
    GENERATORS,
    METRICS,
    NORMS,
    generate,
    generation_options,
    make_aggregation,
    make_metric,
    make_norm,
    norm_states,
    restore_metric,
    restore_norm,
)
from imprint.stages.metric import class_of_proxy
from imprint.support import Support
from imprint.text_blend import (
    SCALE_ROWS,
    TEXT_ALPHA,
    TextBlend,
    class_text_weights,
    other_class_spread,
    spread_ratio,
    text_cosines,
)
from imprint.tuning import auto_settings, tune
from imprint.validation import check_embeddings, check_labels

# The pipeline's own settings: the stage chosen at each point, then what applies whatever the stages.
SLOTS = (
    Setting("generation", str, "kmeans", "GEN: how each class's support embeddings become proxies",
            stages=GENERATORS),
    Setting("norm_pre", str, "l2", "NORM on support embeddings before generation", stages=NORMS, chain=True),
    Setting("norm_post", str, "l2", "NORM on the generated proxies", stages=NORMS, chain=True),
    Setting("norm_inf", str, "l2", "NORM on queries (fitted on the support set)", stages=NORMS, chain=True),
    Setting("metric", str, "dot", "how a query is scored against each proxy (the head)", stages=METRICS),
    Setting("aggregation", str, "max", "AGG: from proxy scores to one score per class", stages=AGGREGATIONS),
    Setting("reject", str, None, "open set: the score that says a query is of none of the classes (predicted "
            "as unknown_label at reject_rate); none: every query gets a class", optional=True, stages=REJECTORS),
)
GENERAL = (
    TEXT_ALPHA,
    Setting("temperature", float, 0.01, "softmax temperature of predict_proba (0.01 matches CLIP's logit scale)",
            low=0.0, open_low=True),
    Setting("seed", int, 0, "random seed of every random choice (k-means seeding, projections, folds)", low=0,
            high=2**32 - 1),
    Setting("device", str, "auto", "auto (cuda, then mps, then cpu) or a torch device string"),
)
for _setting in (*SLOTS, *GENERAL):
    SETTINGS.declare(_setting)
SLOT_NAMES = tuple(s.name for s in SLOTS)
NORM_POINTS = ("norm_pre", "norm_post", "norm_inf")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # a plug-in hint read from a file
CALIBRATION_FOLDS = 10  # cross-fitted calibration: every support sample scored by a model that did not see it
TEXT_ONLY_FIX = ("set text_alpha to none (--text-alpha none) so that text embeddings join the support set as samples "
                 "and classes can come from text alone")


def parameter_names() -> list[str]:
    """Every setting of the classifier: stage choices, stage settings in declaration order, then general ones."""
    general = [s.name for s in GENERAL]
    stage_settings = SETTINGS.in_pipeline_order(n for n in SETTINGS.names() if n not in SLOT_NAMES + tuple(general))
    return [*SLOT_NAMES, *stage_settings, *general]


class ImprintClassifier(ClassifierMixin, BaseEstimator):
    """Imprint proxies for each class from support embeddings; classify queries by their proxy scores.

    The pipeline (IMPRINT, Westerhoff et al. 2025): ``norm_pre`` on support embeddings -> ``generation``
    of proxies per class -> ``norm_post`` on the proxies; queries get ``norm_inf``, are scored against every
    proxy by the ``metric`` (the head: inner product, Euclidean, GDA's shared Mahalanobis, FeCAM, ridge,
    Tip-Adapter's kernel) and the scores are reduced per class by ``aggregation``; with zero-shot text
    embeddings (a CLIP text tower), ``text_alpha`` blends their cosines in (``imprint.text_blend``). Every
    setting is keyword only; ``ImprintClassifier.settings_help()`` lists them with their defaults and allowed
    values, and ``ImprintClassifier.from_preset(name)`` builds a published method by name. Settings at
    ``"auto"`` are chosen on the support set by cross-validation (``imprint.tuning``); the chosen values are in
    ``tuned_``.
    """

    def __init__(self, **settings: Any) -> None:
        names = parameter_names()
        unknown = [name for name in settings if name not in names]
        if unknown:
            raise TypeError(f"ImprintClassifier has no setting {unknown[0]!r}; valid: {', '.join(names)} (a plug-in "
                            "stage's settings exist once its module is imported)")
        defaults = SETTINGS.defaults()
        for name in names:
            setattr(self, name, settings.get(name, defaults[name]))

    def __getattr__(self, name: str) -> Any:
        """A setting declared after this object was made (a plug-in imported later) has its default."""
        if name in SETTINGS:
            return SETTINGS[name].default
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(parameter_names())

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ImprintClassifier:
        """A classifier configured as the published method `name` (see ``imprint.presets``), with any
        settings overridden, e.g. ``from_preset("gda", seed=1)``."""
        from imprint.presets import preset_settings

        return cls(**{**preset_settings(name), **overrides})

    @staticmethod
    def settings_help() -> str:
        """Every setting, its default, what it accepts and which stages use it."""
        lines = []
        for name in parameter_names():
            setting, users = SETTINGS[name], SETTINGS.users(name)
            used = f" [{', '.join(f'{k} {s}' for k, s in users)}]" if users else ""
            lines.append(f"{name} = {setting.default!r}: {setting.help}; {setting.allowed()}{used}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ settings
    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in parameter_names()}

    def _check_settings(self) -> None:
        """Every value valid, none set for a stage that is not chosen, and the combinations that cannot work."""
        if self.k == AUTO and self.generation in GENERATORS and \
                not GENERATORS.entry(self.generation).traits.get("auto_k"):
            raise ValueError(f"k='auto' chooses k-means proxies per class; use generation='kmeans' "
                             f"(got {self.generation!r}) or an integer k")
        SETTINGS.check(self._params())
        if self.aggregation == "mnn" and self.mnn_weights == "distance" and \
                not METRICS.get(self.metric).has_distance:
            raise ValueError(f"mnn_weights='distance' needs a metric with distances; metric={self.metric!r} has none: "
                             "use mnn_weights='uniform'")
        if self.reject is not None and self.is_oracle:
            raise ValueError(f"reject needs an imprinted classifier; generation={self.generation!r} is an oracle "
                             "baseline (it uses statistics of all classes at once), not meant for deployment")
        resolve_device(self.device)

    @property
    def is_oracle(self) -> bool:
        """True for generators that use cross-class statistics (upper-bound baselines, not imprinting)."""
        return GENERATORS.entry(self.generation).oracle

    def _resolved(self) -> dict[str, Any]:
        """The settings with every "auto" replaced by the value chosen at fit time."""
        return {**self._params(), **getattr(self, "tuned_", {})}

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any, *, encoder_id: str | None = None, text_embeddings: Any = None,
            text_labels: Any = None) -> ImprintClassifier:
        """Imprint proxies for every class in y from the embeddings X; returns self.

        `encoder_id` records which encoder produced X (arrays from ``imprint``'s own embedding functions carry
        it already), so a saved classifier is used with the same one and queries from another encoder are
        refused. `text_embeddings` with `text_labels` are zero-shot embeddings of class names (prompts) from a
        CLIP text tower, one or several per class: their cosines with each query are added to the head's class
        scores with weight `text_alpha` (every class needs images and text). With ``text_alpha=None`` they join
        the support set as extra samples of their classes instead: a class can then be imprinted from text
        alone (X may have no rows for it, or no rows at all) and improves with every image added.
        """
        self._check_settings()
        encoder_id = encoder_id or getattr(X, "encoder_id", None)
        blend = text_embeddings is not None and self.text_alpha is not None
        if text_embeddings is not None and not blend:
            X_checked, y = self._join_text(X, y, text_embeddings, text_labels)
        else:
            if blend and (X is None or len(X) == 0):
                raise ValueError("the zero-shot blend (text_alpha) adds text scores to a head fitted on images, but "
                                 f"no images were given: pass images of every class, or {TEXT_ONLY_FIX}")
            X_checked = check_embeddings(X, keep_dtype=True)  # floats as given: read in blocks, never copied
            y = check_labels(y, len(X_checked))
            validate_data(self, X, reset=True, skip_check_array=True)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"needs at least 2 classes to imprint a classifier; got 1 class ({classes[0]!r})")
        if text_embeddings is None and self.text_alpha not in (None, AUTO):
            raise ValueError(f"text_alpha={self.text_alpha!r} blends zero-shot text scores, but fit got no "
                             "text_embeddings; pass text_embeddings and text_labels (imprint fit --zero-shot), "
                             "or leave text_alpha at 'auto'")
        self.text_weights_ = self._text_weights(classes, text_embeddings, text_labels, X_checked.shape[1]) \
            if blend else None
        self.text_scale_ = None
        self.n_features_in_ = X_checked.shape[1]
        self.device_ = resolve_device(self.device)
        if self.reject is not None:
            need_memory(X_checked.shape[0] * X_checked.shape[1] * 4 * 2, "rejection keeps a float32 copy of the "
                         "support set for calibration")
        X_tune, codes_tune = tuning_sample(X_checked, codes, int(self.seed))
        self.tuned_ = self._tune(X_tune, codes_tune)
        if self.k == AUTO and "k" in SETTINGS.active(self._params()):
            self.proxy_ratio_ = self._cross_validated_ratio(X_tune, codes_tune)
        settings = self._resolved()
        self.norm_pre_, self.norm_post_, self.norm_inf_ = (make_norm(settings[p], settings) for p in NORM_POINTS)
        raw = Support(X_checked, codes, len(classes), self.device_)
        with torch.no_grad():  # not inference_mode: fitted state must stay usable in autograd code
            normed = self._fit_norms(raw)
            proxies, proxy_counts = self._generate(normed, raw.counts, fit=True)
            metric = make_metric(self.metric, settings).fit(normed, raw.counts, proxies,
                                                            proxy_counts.to(proxies.device))
            proxies = metric.proxies
            if isinstance(X_checked, np.ndarray) and proxies.device.type == "cpu" and \
                    np.may_share_memory(proxies.numpy(), X_checked):  # e.g. 'all' on unit-norm float32 input
                metric.set_proxies(proxies.clone(), metric.proxy_counts)
        self.classes_ = classes
        self._install(metric)
        if self.text_weights_ is not None:
            self.text_scale_ = self._measured_text_scale(X_checked, codes)
            self.model_.text = self._text_blend().to(self.device_)
        self.encoder_id_ = encoder_id
        if self.reject is not None:
            self._fit_rejection(np.array(X_checked, dtype=np.float32), codes.astype(np.int64))
        return self

    # ------------------------------------------------------------------ open set
    def _unknown_label(self) -> Any:
        """The label of rejected queries: the setting, or 'unknown' / -1 to match the classes' type."""
        if self.unknown_label != AUTO:
            return self.unknown_label
        return -1 if self.classes_.dtype.kind in "iuf" else "unknown"

    def _fit_rejection(self, X: np.ndarray, codes: np.ndarray) -> None:
        """Fit the rejection score on the support set and calibrate its threshold (and the conformal sets) on
        scores of support samples from models that did not see them."""
        label = self._unknown_label()
        if label in set(self.classes_.tolist()):
            raise ValueError(f"unknown_label {label!r} is also a class; set unknown_label to a value no class has")
        settings = self._resolved()
        self.support_, self.support_codes_ = X, codes  # kept: recalibration when classes are added or removed
        X_t, codes_t = torch.from_numpy(X).to(self.device_), torch.from_numpy(codes).to(self.device_)
        self.rejector_ = make_rejector(self.reject, settings).fit(X_t, codes_t, self.model_)
        fold_scores, self.calibration_margins_ = self._cross_fitted(X, codes)
        scores = self.rejector_.leave_one_out_scores(X_t, codes_t, self.model_) if self.rejector_.leave_one_out \
            else fold_scores
        self.calibration_scores_ = np.asarray(scores.cpu().numpy() if hasattr(scores, "cpu") else scores,
                                              dtype=np.float64)
        self.threshold_ = threshold(self.calibration_scores_[np.isfinite(self.calibration_scores_)],
                                    float(self.reject_rate))
        if not np.isfinite(self.threshold_):
            warnings.warn(f"{len(codes)} support samples are too few to reject at most {self.reject_rate} of known "
                          f"images (it needs at least {minimum_samples(float(self.reject_rate))}); nothing will be "
                          "rejected", stacklevel=3)

    def _cross_fitted(self, X: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rejection scores and true-class margins of every support sample from fold models fitted without it."""
        counts = np.bincount(codes)
        n_folds = int(min(CALIBRATION_FOLDS, max(2, counts.max())))
        folds = stratified_folds(codes, n_folds, int(self.seed))
        scores, margins = np.full(len(codes), np.inf), np.full(len(codes), np.inf)
        fixed = dict(self.tuned_)
        if self.k == AUTO and "k" in SETTINGS.active(self._params()):
            fixed["k"] = max(1, int(round(self.proxy_ratio_ * np.median(counts) * (n_folds - 1) / n_folds)))
        for f in range(n_folds):
            train, test = folds != f, folds == f
            present = np.unique(codes[train])
            if len(present) < 2 or not test.any():
                continue
            fold = self._fold(X[train], codes[train], **fixed)
            class_scores = fold._class_scores(X[test])
            column = np.searchsorted(present, codes[test])
            column = np.where(np.isin(codes[test], present), column, -1)
            margins[test] = true_margins(class_scores, column)
            if not self.rejector_.leave_one_out:
                fold_codes = np.searchsorted(present, codes[train])
                rejector = make_rejector(self.reject, self._resolved()).fit(
                    torch.from_numpy(X[train]).to(self.device_), torch.from_numpy(fold_codes).to(self.device_),
                    fold.model_)
                with torch.inference_mode():
                    scores[test] = rejector.score(torch.from_numpy(X[test]).to(self.device_),
                                                  torch.from_numpy(class_scores).to(self.device_),
                                                  fold.model_).double().cpu().numpy()
        return scores, margins

    def score_unknown(self, X: Any) -> np.ndarray:
        """One score per query, higher meaning more likely of none of the classes (needs ``reject``)."""
        self._need_rejection("score_unknown")
        X = self._checked_queries(X)
        out = np.empty(len(X), dtype=np.float64)
        for positions, block, buffer in self._blocks(X):
            class_scores = self.model_(block, out=buffer) if self.rejector_.uses_class_scores else None
            out[positions] = self.rejector_.score(block, class_scores, self.model_)[
                :positions.stop - positions.start].double().cpu().numpy()
        return out

    def predict_set(self, X: Any, alpha: float = 0.1) -> np.ndarray:
        """Conformal label sets: a boolean (n_queries, n_classes) array, columns in ``classes_`` order, whose
        sets hold the true class of a known-class query with probability at least 1 - alpha (calibrated on the
        support set: fit with ``reject``, or call ``calibrate`` with held-out labelled embeddings)."""
        check_is_fitted(self)
        if getattr(self, "calibration_margins_", None) is None:
            raise ValueError("predict_set needs conformal calibration: fit with reject=... (e.g. 'max_score') or "
                             "call calibrate(X, y) with held-out labelled embeddings first")
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha must be a number between 0 and 1 (exclusive); got {alpha!r}")
        return prediction_sets(self._class_scores(X), self.calibration_margins_, float(alpha))

    def calibrate(self, X: Any, y: Any) -> ImprintClassifier:
        """Split-conformal calibration on held-out labelled embeddings of the known classes (not used for
        fitting): the rejection threshold (with ``reject``) and the prediction sets then come from them."""
        check_is_fitted(self)
        X = self._checked_queries(X)
        y = check_labels(y, len(X))
        unknown = sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise ValueError(f"calibration labels must be known classes; {unknown[0]!r} is not one")
        columns = np.searchsorted(self.classes_, y)
        self.calibration_margins_ = true_margins(self._class_scores(X), columns)
        if self.reject is not None:
            self.calibration_scores_ = self.score_unknown(X)
            self.threshold_ = threshold(self.calibration_scores_, float(self.reject_rate))
            if not np.isfinite(self.threshold_):
                warnings.warn(f"{len(y)} calibration samples are too few to reject at most {self.reject_rate} of "
                              f"known images (it needs at least {minimum_samples(float(self.reject_rate))}); "
                              "nothing will be rejected", stacklevel=2)
        return self

    def _need_rejection(self, what: str) -> None:
        check_is_fitted(self)
        if self.reject is None:
            raise ValueError(f"{what} needs a rejection score: set reject= one of {', '.join(REJECTORS.names())}")

    def _classifying_clone(self, **params: Any) -> ImprintClassifier:
        """A copy with the same settings (and `params`) that only classifies: no rejection score, no calibration
        (for the models fitted inside cross-validation)."""
        reset = {} if self.reject is None else \
            {"reject": None, **{s.name: s.default for s in REJECTORS.entry(self.reject).settings}}
        return clone(self).set_params(**reset, **params)

    def _fold(self, X: np.ndarray, codes: np.ndarray, **params: Any) -> ImprintClassifier:
        """A classifying clone fitted on rows of the support set (class indices as labels), with the class text
        weights of the classes present when the classifier blends zero-shot scores."""
        text = {}
        if self.text_weights_ is not None:
            present = np.unique(codes)
            text = {"text_embeddings": self.text_weights_[present], "text_labels": present}
        return self._classifying_clone(**params).fit(X, codes, **text)

    def _tune(self, X: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
        """Values for the settings left at "auto", chosen by cross-validation on the support set. The head's
        settings are chosen for the head alone (text_alpha=0), then the text blend's weight for that head, so
        a chosen weight of 0 gives exactly the head a fit without text gives."""
        names = [name for name in auto_settings(self._params(), SETTINGS.active(self._params()))
                 if name != TEXT_ALPHA.name or self.text_weights_ is not None]
        blend = [name for name in names if name == TEXT_ALPHA.name]
        stages = [([name for name in names if name not in blend], {TEXT_ALPHA.name: 0.0} if blend else {}),
                  (blend, {})]
        if np.bincount(codes).min() < 2:  # nothing can be held out: every setting its middle value, one warning
            stages = [(names, {})]
        fixed = {"k": 20} if self.k == AUTO else {}  # folds do not search k again
        chosen: dict[str, Any] = {}
        self.tuning_scores_ = {}
        for group, held in stages:
            if not group:
                continue

            def score(name: str, values: list[Any], current: dict[str, Any], train: np.ndarray,
                      test: np.ndarray, held: dict[str, Any] = held) -> list[float]:
                settings = {**fixed, **chosen, **current, **held}
                fold = self._fold(X[train], codes[train], **{**settings, name: values[0]})
                truth = codes[test]
                predicted = fold._candidate_predictions(name, values, X[test])  # every candidate from one fit
                if predicted is not None:
                    return [float((fold.classes_[p] == truth).mean()) for p in predicted]
                folds = [fold] + [self._fold(X[train], codes[train], **{**settings, name: value})
                                  for value in values[1:]]
                return [float((model.predict(X[test]) == truth).mean()) for model in folds]

            values, scores = tune(group, codes, X.shape[1], score, seed=int(self.seed))
            chosen.update(values)
            self.tuning_scores_.update(scores)
        return chosen

    def _candidate_predictions(self, name: str, values: list[Any], X: np.ndarray) -> list[np.ndarray] | None:
        """Class indices predicted for X under each value of setting `name`, from this one fit, where the metric
        can score them all at once (a decomposition or a Gram matrix reused), or the setting is the text blend's
        weight (the head's scores reused); None where it cannot. Blocks of queries are sized so that every
        value's float64 scores fit in CHUNK_BYTES (4096 rows at most)."""
        per_row = 8 * len(self.proxies_) * (len(values) + 1)
        rows = max(MIN_ROWS, min(4096, CHUNK_BYTES // per_row))
        predicted = np.empty((len(values), len(X)), dtype=np.int64)  # copied into: no small tensor outlives its
        text = self.model_.text                                         # block (heap fragmentation grew by GiBs)
        with torch.inference_mode():
            for start in range(0, len(X), rows):
                block = tensor_view(np.asarray(X[start:start + rows])).to(self.device_, torch.float32)
                if name == TEXT_ALPHA.name:
                    head, cosines = self.model_.head_scores(block), text.cosines(block)
                    class_scores = [head + cosines * (value * text.scale) for value in values]
                else:
                    scores = self.metric_.candidate_scores(name, values, self.model_.norm_inf(block))
                    if scores is None:
                        return None
                    class_scores = [self.model_.aggregation(value_scores.to(block.dtype)) for value_scores in scores]
                    if text is not None:
                        text_term = text(block)
                        class_scores = [value_scores + text_term for value_scores in class_scores]
                for i, value_scores in enumerate(class_scores):
                    predicted[i, start:start + len(block)] = value_scores.argmax(dim=1).cpu().numpy()
        return list(predicted)

    def _cross_validated_ratio(self, X: np.ndarray, codes: np.ndarray) -> float:
        """Proxies per support sample for k='auto', by 2-fold cross-validation of this very pipeline."""
        tuned = getattr(self, "tuned_", {})

        def score(k: int, train: np.ndarray, test: np.ndarray) -> float:
            fold = self._fold(X[train], codes[train], k=k, **tuned)
            return float((fold.predict(X[test]) == codes[test]).mean())

        return proxy_ratio(codes, score, seed=int(self.seed))

    def _fit_norms(self, raw: Support) -> Support:
        """Fit norm_inf (queries live where the support embeddings live) and norm_pre on the support set, block by
        block; the normalised support set is then read through norm_pre, never held whole. A stage that needs
        every value at once (quantile) gets the class-sorted set materialised once."""
        if self.norm_inf_.streamable:
            self.norm_inf_.fit_stream(raw.raw_blocks)
        else:
            self.norm_inf_.fit(raw.materialize())
        if self.norm_pre_.streamable:
            self.norm_pre_.fit_stream(raw.raw_blocks)
            return raw.with_transform(self.norm_pre_)
        groups = torch.repeat_interleave(torch.arange(len(raw.counts)), raw.counts).to(self.device_)
        return Support.of_sorted(self.norm_pre_.fit_transform(raw.materialize(), groups), raw.counts)

    def _generate(self, normed: Support, counts: torch.Tensor, fit: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """GEN then norm_post on the normalised support rows (`counts` rows per class)."""
        settings = self._resolved()
        if settings.get("k") == AUTO:  # new classes added later get the ratio without the spread weighting
            settings["k"] = per_class_k(normed, counts, self.proxy_ratio_) if fit else \
                torch.round(self.proxy_ratio_ * counts.double()).long().clamp_min(1)
        data = normed if GENERATORS.entry(self.generation).traits.get("streaming") else normed.materialize()
        proxies, proxy_counts = generate(self.generation, data, counts.to(self.device_),
                                         generation_options(self.generation, settings))
        proxy_groups = torch.repeat_interleave(torch.arange(len(proxy_counts), device=proxies.device),
                                               proxy_counts.to(proxies.device))
        proxies = self.norm_post_.fit_transform(proxies, proxy_groups) if fit else self.norm_post_(proxies)
        if not proxies.is_contiguous() or isinstance(data, torch.Tensor) and proxies.data_ptr() == data.data_ptr():
            proxies = proxies.clone()  # e.g. 'all': the classifier must own its proxies
        return proxies.float(), proxy_counts.cpu().long()

    @staticmethod
    def _join_text(X: Any, y: Any, text_embeddings: Any, text_labels: Any) -> tuple[np.ndarray, np.ndarray]:
        text = check_embeddings(text_embeddings, name="text_embeddings")
        labels = check_labels(text_labels, len(text), one_per_class=True)
        if X is None or len(X) == 0:
            return text, labels
        images = check_embeddings(X, n_features=text.shape[1], owner="the text embeddings")
        return np.concatenate([images, text]), np.concatenate([check_labels(y, len(images)), labels])

    @staticmethod
    def _text_weights(classes: np.ndarray, text_embeddings: Any, text_labels: Any, n_features: int) -> np.ndarray:
        """Each class's text weight (rows in class order) for the zero-shot blend; every class needs text, and
        every text label images."""
        text = check_embeddings(text_embeddings, name="text_embeddings", n_features=n_features, owner="the images")
        labels = check_labels(text_labels, len(text), one_per_class=True)
        known = set(classes.tolist())
        orphans = [label for label in np.unique(labels).tolist() if label not in known]
        if orphans:
            raise ValueError(f"text label {orphans[0]!r} has no images, but the zero-shot blend (text_alpha) adds "
                             f"text scores to a head fitted on images: give it images, or {TEXT_ONLY_FIX}")
        covered = set(labels.tolist())
        silent = [label for label in classes.tolist() if label not in covered]
        if silent:
            raise ValueError(f"class {silent[0]!r} has images but no text embedding: the zero-shot blend needs at "
                             "least one text embedding (prompt) per class; add one for every class")
        return class_text_weights(text, np.searchsorted(classes, labels), len(classes))

    def _measured_text_scale(self, X: np.ndarray, codes: np.ndarray) -> float:
        """The factor putting the text cosines on the head's scale: the ratio of their mean per-sample spreads over
        the classes a support sample is not in, on a seeded subset of the support set (``imprint.text_blend``)."""
        rows = np.arange(len(X))
        if len(X) > SCALE_ROWS:
            rows = np.sort(np.random.default_rng(int(self.seed)).choice(len(X), SCALE_ROWS, replace=False))
        subset, own = np.asarray(X[rows]), torch.from_numpy(codes[rows]).to(self.device_)
        weights = torch.from_numpy(self.text_weights_).to(self.device_)
        head, text = 0.0, 0.0
        for positions, block, buffer in self._blocks(subset):
            n = positions.stop - positions.start
            classes = own[positions]
            head += float(other_class_spread(self.model_.head_scores(block, out=buffer)[:n], classes).sum())
            text += float(other_class_spread(text_cosines(block[:n], weights), classes).sum())
        return spread_ratio(head, text)

    def _text_blend(self) -> TextBlend | None:
        """The zero-shot term of the class scores, or None when the classifier does not blend text."""
        if getattr(self, "text_weights_", None) is None or getattr(self, "text_scale_", None) is None:
            return None
        return TextBlend(torch.from_numpy(self.text_weights_), float(self._resolved()[TEXT_ALPHA.name]),
                         self.text_scale_)

    def _install(self, metric: Any) -> None:
        """Make the fitted metric (holding the proxies) the classifier's, with its aggregation and model."""
        self.metric_ = metric
        self.proxies_ = metric.proxies.detach().cpu().numpy()
        self.proxy_counts_ = metric.proxy_counts.cpu().numpy().astype(np.int64)
        self.proxy_labels_ = np.repeat(self.classes_, self.proxy_counts_)
        aggregation = make_aggregation(self.aggregation, torch.from_numpy(self.proxy_counts_), self._resolved(),
                                       to_distance=metric.to_distance)
        self.model_ = ImprintedModel(self.norm_inf_, metric, aggregation, self.classes_.tolist(),
                                     text=self._text_blend()).to(self.device_).eval()

    # ------------------------------------------------------------------ incremental
    def add_classes(self, X: Any, y: Any, *, text_embeddings: Any = None, text_labels: Any = None
                    ) -> ImprintClassifier:
        """Imprint new classes with the fitted normalisations and settings. Existing classes keep their proxies;
        a metric with shared statistics (mahalanobis, ridge) updates them exactly, as a refit on the union would.
        A classifier blending zero-shot text needs `text_embeddings`/`text_labels` for every new class (the
        text term keeps the scale measured at fit); with ``text_alpha=None`` they join the new classes' samples."""
        check_is_fitted(self)
        if self.is_oracle:
            raise ValueError(f"add_classes is not available for oracle generation {self.generation!r}: "
                             "it uses statistics of all classes; refit instead")
        if text_embeddings is None and self.text_weights_ is not None:
            raise ValueError("this classifier blends zero-shot text scores: pass text_embeddings and text_labels for "
                             "the new classes too")
        if text_embeddings is not None and self.text_weights_ is None and self.text_alpha is not None:
            raise ValueError("this classifier was fitted without text embeddings, so its other classes have no text "
                             "scores to blend; add the classes without text, or refit with text for every class")
        if text_embeddings is not None and self.text_alpha is None:
            X, y = self._join_text(X, y, text_embeddings, text_labels)
        X = check_embeddings(X, n_features=self.n_features_in_, keep_dtype=True)
        y = check_labels(y, len(X))
        new_classes, codes = np.unique(y, return_inverse=True)
        if _label_kind(new_classes) != _label_kind(self.classes_):
            raise ValueError(f"add_classes got {_label_kind(new_classes)} labels but this classifier's classes are "
                             f"{_label_kind(self.classes_)}; give the new classes labels of the same type")
        clash = [c for c in new_classes.tolist() if c in set(self.classes_.tolist())]
        if clash:
            raise ValueError(f"class {clash[0]!r} is already imprinted; remove_classes([{clash[0]!r}]) first")
        new_weights = None if self.text_weights_ is None else \
            self._text_weights(new_classes, text_embeddings, text_labels, self.n_features_in_)
        with torch.no_grad():
            normed = Support(X, codes, len(new_classes), self.device_, transform=self.norm_pre_)
            counts = normed.counts
            proxies, proxy_counts = self._generate(normed, counts, fit=False)
        classes = np.concatenate([self.classes_, new_classes])
        order = np.argsort(classes, kind="stable")
        all_proxies = torch.cat([self.metric_.proxies, proxies.to(self.metric_.proxies.device)])
        all_counts = torch.cat([self.metric_.proxy_counts.cpu(), proxy_counts])
        rows = self._class_rows(all_counts, order)
        new = torch.from_numpy(order >= len(self.classes_))
        with torch.no_grad():
            metric = self.metric_.extend(normed, counts, all_proxies[rows.to(all_proxies.device)],
                                         all_counts[torch.from_numpy(order)], new)
        self.classes_ = classes[order]
        if self.text_weights_ is not None:
            self.text_weights_ = np.concatenate([self.text_weights_, new_weights])[order]
        self._install(metric)
        if self.reject is not None:
            old_labels = classes[:len(order) - len(new_classes)][self.support_codes_]
            labels = np.concatenate([old_labels, new_classes[codes]])
            self._fit_rejection(np.concatenate([self.support_, X]), np.searchsorted(self.classes_, labels))
        return self

    def remove_classes(self, labels: Iterable[Hashable]) -> ImprintClassifier:
        """Drop the given classes; the others keep their proxies (metrics that pool statistics over all
        classes cannot lose a class exactly and say so)."""
        check_is_fitted(self)
        labels = list(labels)
        known = self.classes_.tolist()
        missing = [label for label in labels if label not in known]
        if missing:
            raise ValueError(f"cannot remove unknown class {missing[0]!r}; known classes: {known}")
        keep = ~np.isin(self.classes_, np.asarray(labels, dtype=self.classes_.dtype))
        if keep.sum() < 2:
            raise ValueError(f"removing {len(labels)} of {len(known)} classes would leave fewer than 2; "
                             "fit a new classifier instead")
        counts = self.metric_.proxy_counts.cpu()
        rows = self._class_rows(counts, np.flatnonzero(keep))
        proxies = self.metric_.proxies[rows.to(self.metric_.proxies.device)]
        metric = self.metric_.restrict(torch.from_numpy(keep), proxies, counts[torch.from_numpy(keep)])
        old_classes = self.classes_
        self.classes_ = self.classes_[keep]
        if self.text_weights_ is not None:
            self.text_weights_ = self.text_weights_[keep]
        self._install(metric)
        if self.reject is not None:
            rows = keep[self.support_codes_]
            self._fit_rejection(self.support_[rows], np.searchsorted(self.classes_,
                                                                     old_classes[self.support_codes_[rows]]))
        return self

    @staticmethod
    def _class_rows(counts: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
        """Proxy rows of the given classes, in that order."""
        starts = torch.cumsum(counts, 0) - counts
        return torch.cat([torch.arange(int(starts[c]), int(starts[c] + counts[c])) for c in classes])

    # ------------------------------------------------------------------ prediction
    def _checked_queries(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        source = getattr(X, "encoder_id", None)
        if source is not None and self.encoder_id_ is not None and source != self.encoder_id_:
            raise ValueError(f"these embeddings come from {source} but the classifier was fitted on {self.encoder_id_}"
                             " embeddings; embed the queries with the encoder the classifier was fitted with")
        X = check_embeddings(X, n_features=self.n_features_in_)
        validate_data(self, X, reset=False, skip_check_array=True)
        return X

    def _blocks(self, X: np.ndarray) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """Consecutive fixed-shape blocks of queries (see ``imprint.blocks``): memory-bounded, and each
        query's scores independent of the batch it came in; with each, a proxy-score buffer reused from block
        to block (a fresh 80 MiB block per call would cost page faults)."""
        rows = block_rows(len(self.proxies_) + getattr(self.metric_, "scratch_per_query", 0),
                          self.n_features_in_)
        with torch.inference_mode():
            buffer = torch.empty(rows, len(self.proxies_), dtype=torch.float32, device=self.device_)
            for positions, block in query_blocks(X, rows, self.device_):
                yield positions, block, buffer

    def _class_score_blocks(self, X: np.ndarray) -> Iterator[tuple[slice, torch.Tensor]]:
        for positions, block, buffer in self._blocks(X):
            yield positions, self.model_(block, out=buffer)[:positions.stop - positions.start]

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores, shape (n_samples, n_classes), computed in memory-bounded blocks of queries. With two
        classes, as scikit-learn's binary classifiers do, one score per query: the score of ``classes_[1]``
        minus that of ``classes_[0]`` (positive: ``classes_[1]``), so binary scorers such as roc_auc work."""
        scores = self._class_scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def _class_scores(self, X: Any) -> np.ndarray:
        """(n_samples, n_classes) class scores, whatever the number of classes."""
        X = self._checked_queries(X)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for positions, scores in self._class_score_blocks(X):
            out[positions] = scores.cpu().numpy()
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest score for each query; class scores are never all held at once.
        With `max` that is the class of the best proxy (proxies are grouped by class in class order, so
        ties go to the first class, as with the class scores)."""
        X = self._checked_queries(X)
        if self.reject is not None:
            return self._predict_open(X)
        best = np.empty(len(X), dtype=np.int64)
        owner = self._proxy_owner()
        for positions, block, buffer in self._blocks(X):
            n = positions.stop - positions.start
            best[positions] = self._best_in_block(block, buffer, owner)[:n].cpu().numpy()
        return self.classes_[best]

    def _proxy_owner(self) -> torch.Tensor:
        """The class index of each proxy, on the classifier's device."""
        return class_of_proxy(torch.from_numpy(self.proxy_counts_)).to(self.device_)

    def _best_in_block(self, block: torch.Tensor, buffer: torch.Tensor | None, owner: torch.Tensor) -> torch.Tensor:
        """Class index of the best score of each row of a block, from the ranking scores (no query-only
        terms); with `max`, the class of the best proxy, so the class scores are never formed (they are where
        zero-shot text scores are blended in)."""
        scores = self.model_.ranking_scores(block, out=buffer)
        if self.model_.text is not None:  # a per-query constant left out of the head's scores changes no argmax
            return (self.model_.aggregation(scores) + self.model_.text(block)).argmax(dim=1)
        if self.aggregation == "max":
            return owner[scores.argmax(dim=1)]
        return self.model_.aggregation(scores).argmax(dim=1)

    def _predict_open(self, X: np.ndarray) -> np.ndarray:
        """Labels, with ``unknown_label`` where the rejection score is above the calibrated threshold. A score
        that reads the class scores gets them formed (and the label is their argmax); the others leave the
        labels to the ranking scores, exactly as ``predict`` without rejection gives them."""
        best = np.empty(len(X), dtype=np.int64)
        rejected = np.empty(len(X), dtype=bool)
        owner = self._proxy_owner()
        for positions, block, buffer in self._blocks(X):
            n = positions.stop - positions.start
            if self.rejector_.uses_class_scores:
                class_scores = self.model_(block, out=buffer)
                best[positions] = class_scores[:n].argmax(dim=1).cpu().numpy()
            else:
                class_scores = None
                best[positions] = self._best_in_block(block, buffer, owner)[:n].cpu().numpy()
            unknown = self.rejector_.score(block, class_scores, self.model_)[:n] > self.threshold_
            rejected[positions] = unknown.cpu().numpy()
        label = self._unknown_label()
        out = self.classes_[best].astype(_label_dtype(self.classes_, label))  # integer classes stay integers
        out[rejected] = label
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the class scores divided by `temperature`."""
        logits = self._class_scores(X).astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def to_torch(self) -> ImprintedModel:
        """An ``nn.Module`` (CPU, eval mode) giving the same class scores as ``decision_function``; its
        ``classes`` attribute names the class of each output column."""
        check_is_fitted(self)
        return copy.deepcopy(self.model_).to("cpu").eval()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted classifier to a safetensors file (arrays + JSON metadata), atomically."""
        check_is_fitted(self)
        tensors = {"proxies": self.proxies_, "proxy_counts": self.proxy_counts_}
        if self.text_weights_ is not None:
            tensors["text.weights"] = self.text_weights_
        stages = {}
        parts = {point: norm_states(getattr(self, f"{point}_")) for point in NORM_POINTS}
        parts["metric"] = [(self.metric_.options(), self.metric_.tensors())]
        if self.reject is not None:
            parts["reject"] = [(self.rejector_.options(), self.rejector_.tensors())]
            tensors.update({"support": self.support_, "support_codes": self.support_codes_,
                            "calibration.scores": self.calibration_scores_,
                            "calibration.margins": self.calibration_margins_})
        for slot, states in parts.items():
            stages[slot] = []
            for i, (options, arrays) in enumerate(states):
                stages[slot].append({"options": _json_ready(options, slot), "tensors": sorted(arrays)})
                tensors.update({f"{slot}.{i}.{name}": value.detach().cpu().numpy() for name, value in arrays.items()})
        settings = {name: value for name, value in self.get_params().items() if name != "device"}
        meta = {"settings": _json_ready(settings, "settings"), "tuned": _json_ready(self.tuned_, "tuned"),
                "classes": [_json_label(c) for c in self.classes_], "embedding_dim": int(self.n_features_in_),
                "encoder": self.encoder_id_, "proxy_ratio": getattr(self, "proxy_ratio_", None),
                "stages": stages, "plugins": self._plugins(), "active": SETTINGS.active(self._params()),
                "threshold": getattr(self, "threshold_", None), "text_scale": self.text_scale_}
        write_classifier(path, meta, tensors)

    def _plugins(self) -> dict[str, str]:
        """Modules outside imprint that define the stages this classifier uses, by setting."""
        out = {}
        for slot, registry in SETTINGS.slots.items():
            value = getattr(self, slot)
            if value is None:
                continue
            names = value.split("+") if SETTINGS[slot].chain else [value]
            modules = [registry.entry(n).module for n in names if not registry.entry(n).builtin]
            if modules:
                out[slot] = modules[0]
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, expected_dim: int | None = None,
             device: str = "auto") -> ImprintClassifier:
        """Read a classifier written by ``save``; `expected_dim` checks the embedding width. The file names
        its stages and never runs code: a stage from a plug-in needs its module imported first."""
        resolve_device(device)  # a device this machine lacks is the caller's mistake, not the file's
        meta, tensors = read_classifier(path)
        try:
            return cls._from_file(path, meta, tensors, expected_dim, device)
        except ClassifierFileError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            reason = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
            raise ClassifierFileError(f"{printable(path)} is an incomplete or inconsistent classifier file "
                                      f"({reason}); refit or restore it from a copy") from None

    @classmethod
    def _from_file(cls, path: Any, meta: dict, arrays: dict[str, np.ndarray], expected_dim: int | None,
                   device: str) -> ImprintClassifier:
        settings = meta["settings"]
        version = meta["format_version"]
        required = [*(name for name in SLOT_NAMES if name != "reject"), *(["reject"] if version >= 3 else []),
                    *(meta.get("active") or [] if version >= 3 else [])]
        missing = [name for name in required if name not in settings and name != "device"]
        if missing or (version >= 3 and meta.get("active") is None):
            raise ClassifierFileError(f"{printable(path)} is an incomplete classifier file (its settings lack "
                                      f"{quoted(missing[0] if missing else 'active', 40)}); refit or restore it")
        rejects = settings.get("reject") is not None
        if rejects != ("reject" in meta["stages"]) or rejects != ("calibration.scores" in arrays):
            raise ClassifierFileError(f"{printable(path)} is inconsistent: its settings, stages and arrays disagree "
                                      "on whether it rejects unknown images; refit or restore it")
        tensors = {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}
        for slot, registry in SETTINGS.slots.items():
            value = settings.get(slot, SETTINGS[slot].default)
            if value is not None and not isinstance(value, str):
                raise ClassifierFileError(f"{printable(path)} is an inconsistent classifier file ({slot} must be a "
                                          "stage name)")
            for name in (value.split("+") if SETTINGS[slot].chain and value else [value]):
                if value is not None and name not in registry:
                    module = meta.get("plugins", {}).get(slot)
                    hint = "it is not a stage of this imprint version"
                    if isinstance(module, str) and MODULE_NAME.fullmatch(module):
                        hint = f"import {module} before loading (command line: --plugin {module})"
                    elif module:
                        hint = "the file names a plug-in module that is not a valid module name"
                    raise ClassifierFileError(f"{printable(path)} uses {slot} {quoted(name, 60)}, which is not "
                                              f"registered here: {hint}")
        proxies = tensors["proxies"].float()
        counts = tensors["proxy_counts"].long()
        classes = np.asarray(meta["classes"])
        dim = int(meta["embedding_dim"])
        if proxies.ndim != 2 or int(counts.sum()) != len(proxies) or len(counts) != len(classes) or \
                (counts < 1).any() or len(np.unique(classes)) != len(classes):
            raise ClassifierFileError(f"{path} is inconsistent: {tuple(proxies.shape)} proxies, {len(classes)} "
                                      f"classes, {int(counts.sum())} proxies counted")
        if not torch.isfinite(proxies).all():
            raise ClassifierFileError(f"{path} holds non-finite proxies; refit")
        if expected_dim is not None and dim != expected_dim:
            raise ClassifierFileError(f"{path} was fitted on {dim}-dimensional embeddings but {expected_dim} were "
                                      "expected; use the encoder it was fitted with")
        clf = cls(**dict(settings, device=device))
        clf._check_settings()
        clf.tuned_ = dict(meta.get("tuned") or {})
        if meta.get("proxy_ratio") is not None:
            clf.proxy_ratio_ = float(meta["proxy_ratio"])
        clf.device_ = resolve_device(device)
        clf.classes_ = classes
        clf.n_features_in_ = dim
        clf.encoder_id_ = meta.get("encoder")

        def arrays_np(name: str, dtype: type) -> np.ndarray:
            return np.asarray(arrays[name], dtype=dtype)

        resolved = clf._resolved()

        def states(slot: str) -> list[tuple[dict, dict[str, torch.Tensor]]]:
            parts = meta["stages"][slot]
            for part in parts:  # stage options that are settings: valid, and the values the settings say
                for name, value in part["options"].items():
                    if name in SETTINGS and name != "seed":
                        try:
                            SETTINGS[name].check(value)
                        except ValueError:
                            raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                                      f"{name}={quoted(value, 40)}, not a valid value") from None
                        if resolved.get(name, AUTO) != AUTO and resolved[name] != value:
                            raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                                      f"{name}={quoted(value, 40)} but its settings say "
                                                      f"{quoted(resolved[name], 40)}")
            return [(part["options"], {name: tensors[f"{slot}.{i}.{name}"] for name in part["tensors"]})
                    for i, part in enumerate(parts)]

        clf.text_weights_, clf.text_scale_ = None, None
        if "text.weights" in arrays:
            weights, scale = arrays_np("text.weights", np.float32), meta.get("text_scale")
            if weights.shape != (len(classes), dim) or not np.isfinite(weights).all() or \
                    not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
                raise ClassifierFileError(f"{path} is inconsistent: text weights of shape {weights.shape} and scale "
                                          f"{scale!r} for {len(classes)} classes of width {dim}")
            clf.text_weights_, clf.text_scale_ = weights, float(scale)
        clf.norm_pre_, clf.norm_post_, clf.norm_inf_ = (restore_norm(settings[p], states(p)) for p in NORM_POINTS)
        (options, saved), = states("metric")
        metric = restore_metric(settings.get("metric", "dot"), options, saved, proxies.to(clf.device_), counts)
        if metric.proxies.shape[1] != (clf.norm_inf_.output_dim or dim):
            raise ClassifierFileError(f"{path} is inconsistent: proxies of width {metric.proxies.shape[1]} for "
                                      f"{dim}-dimensional embeddings")
        clf._install(metric)
        if clf.reject is not None:
            (options, saved), = states("reject")
            clf.rejector_ = REJECTORS.get(clf.reject).restore(options, {k: v.to(clf.device_) for k, v in saved.items()})
            clf.support_, clf.support_codes_ = arrays_np("support", np.float32), arrays_np("support_codes", np.int64)
            clf.calibration_scores_ = arrays_np("calibration.scores", np.float64)
            clf.calibration_margins_ = arrays_np("calibration.margins", np.float64)
            if meta.get("threshold") is None:
                raise ClassifierFileError(f"{printable(path)} is incomplete: it rejects unknown images but records no "
                                          "threshold; refit or restore it")
            clf.threshold_ = float(meta["threshold"])
        restored = {point: norm_states(getattr(clf, f"{point}_")) for point in NORM_POINTS}
        restored["metric"] = [(None, clf.metric_.tensors())]
        if clf.reject is not None:
            restored["reject"] = [(None, clf.rejector_.tensors())]
        for slot, parts in restored.items():  # every stage has exactly the arrays it needs, no more
            saved = [sorted(part["tensors"]) for part in meta["stages"][slot]]
            if saved != [sorted(arrays_) for _, arrays_ in parts]:
                raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage lists the arrays "
                                          f"{saved} but needs {[sorted(a) for _, a in parts]}; refit or restore it")
        return clf


TUNING_ROWS = 50_000  # cross-validation reads a stratified sample of this many support rows at most


def tuning_sample(X: np.ndarray, codes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The support rows cross-validation reads: all of them up to TUNING_ROWS, else a seeded stratified sample of
    TUNING_ROWS (every class in proportion, at least 3 rows of each where it has them), copied in storage order:
    choosing among a handful of candidates needs no more, and a memory-mapped set is never copied whole."""
    if len(codes) <= TUNING_ROWS:
        return X, codes
    rng = np.random.default_rng(seed)
    counts = np.bincount(codes)
    keep = np.maximum(np.minimum(counts, 3), np.round(counts * (TUNING_ROWS / len(codes))).astype(np.int64))
    from imprint.sampling import ranked_by_class

    order, rank = ranked_by_class(codes, rng)
    rows = np.sort(order[rank < keep[codes[order]]])
    return np.ascontiguousarray(X[rows], dtype=np.float32), codes[rows]


def _label_kind(labels: np.ndarray) -> str:
    """'number' or 'text' labels, in words, for a message; mixed object arrays read as their first label."""
    sample = labels.flat[0] if labels.dtype.kind == "O" and labels.size else None
    numeric = labels.dtype.kind in "iufb" or isinstance(sample, (int, float, np.number))
    return "number" if numeric else "text"


def _label_dtype(classes: np.ndarray, label: object) -> np.dtype:
    """An array type holding both the classes and the unknown label without changing either: their common type
    when both are numbers or both text, else object (ints never turn into strings)."""
    other = np.asarray(label)
    if _label_kind(classes) == _label_kind(other) and classes.dtype.kind != "O" and other.dtype.kind != "O":
        return np.result_type(classes.dtype, other.dtype)
    return np.dtype(object)


def _json_label(label: object) -> object:
    value = label.item() if isinstance(label, np.generic) else label
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"class label {label!r} ({type(label).__name__}) cannot be saved; "
                         "use str, int, float or bool labels")
    return value


def _json_ready(values: dict[str, Any], what: str) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        value = value.item() if isinstance(value, np.generic) else value
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{what} {name}={value!r} cannot be saved; use plain numbers or words")
        out[name] = value
    return out


def _refresh_signature() -> None:
    """Keep the classifier's signature (what scikit-learn and help() read) equal to the declared settings."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=SETTINGS[name].default)
                   for name in parameter_names()]
    ImprintClassifier.__init__.__signature__ = inspect.Signature(parameters)


_refresh_signature()
SETTINGS.on_change(_refresh_signature)
