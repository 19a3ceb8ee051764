"""``ImprintClassifier``: a training-free classifier imprinted from support embeddings (scikit-learn API).

A thin face over components that own their state and their part of the saved file: the pipeline
(``imprint.estimator.pipeline``: norms -> generation -> head -> aggregation, with the zero-shot text term of
``imprint.estimator.text_blend``), the tuning of every "auto" setting (``imprint.estimator.tuning``) and the open set
(``imprint.estimator.open_set``). Its parameters are the settings declared by the pipeline points and by every
registered stage (``imprint.estimator.configuration``): adding a stage, or importing a plug-in that registers one, adds
its settings here.
"""
from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from imprint.core.errors import UserError
from imprint.core.machine import need_memory, resolve_device
from imprint.core.presets import CUSTOM
from imprint.core.settings import AUTO, SETTINGS
from imprint.core.validation import check_embeddings, check_labels
from imprint.estimator import classes as classes_
from imprint.estimator import saving
from imprint.estimator.calibration import Calibration
from imprint.estimator.configuration import check_settings, is_oracle, method_settings, parameter_names
from imprint.estimator.folds import FoldFitter
from imprint.estimator.open_set import OpenSet
from imprint.estimator.pipeline import Pipeline
from imprint.estimator.provenance import Provenance
from imprint.estimator.taught import Examples
from imprint.estimator.text_blend import TEXT_ONLY_FIX, ZeroShotText, needs_text
from imprint.estimator.torch_module import ImprintedModel
from imprint.estimator.tuning import Tuning
from imprint.openset import REJECTORS


class SettingsSignature(type):
    """The classifier's signature is read from the declared settings when it is asked for (``help()``,
    ``inspect.signature``): a keyword per setting, built-in stages' and any plug-in's imported by then."""

    @property
    def __signature__(cls) -> inspect.Signature:
        return inspect.Signature([inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                                    default=SETTINGS[name].default) for name in parameter_names()])


class ImprintClassifier(ClassifierMixin, BaseEstimator, metaclass=SettingsSignature):
    """Imprint proxies for each class from support embeddings; classify queries by their proxy scores.

    The pipeline (IMPRINT, Westerhoff et al. 2025): ``norm_pre`` on support embeddings -> ``generation``
    of proxies per class -> ``norm_post`` on the proxies; queries get ``norm_inf``, are scored against every
    proxy by the ``metric`` (the head: inner product, Euclidean, GDA's shared Mahalanobis, FeCAM, ridge,
    Tip-Adapter's kernel) and the scores are reduced per class by ``aggregation``; with zero-shot text
    embeddings (a CLIP text tower), ``text_alpha`` blends their cosines in (``imprint.estimator.text_blend``). Every
    setting is keyword only; ``ImprintClassifier.settings_help()`` lists them with their defaults and allowed
    values, and ``ImprintClassifier.from_preset(name)`` builds a published method by name. Settings at
    ``"auto"`` are chosen on the support set by cross-validation (``imprint.estimator.tuning``); the chosen
    values are in ``tuned_``.
    """

    def __init__(self, **settings: Any) -> None:
        names = parameter_names()
        unknown = [name for name in settings if name not in names]
        if unknown:
            raise TypeError(f"ImprintClassifier has no setting {unknown[0]!r}; valid: {', '.join(names)} (a plug-in "
                            "stage's settings exist once its module is imported)")
        defaults = SETTINGS.defaults()
        if "method" not in settings and any(name in settings for name in method_settings()):
            settings = {**settings, "method": CUSTOM}  # a stage named is the method asked for, default or not
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
        """A classifier configured as the published method `name` (see ``imprint.core.presets``), with any
        settings overridden, e.g. ``from_preset("gda", seed=1)``; one of the preset's own settings changed makes
        it method="custom" (``imprint.core.presets.preset_settings``)."""
        from imprint.core.presets import preset_settings

        return cls(**preset_settings(name, overrides))

    @staticmethod
    def settings_help() -> str:
        """Every setting, its default, what it accepts and which stages use it."""
        lines = []
        for name in parameter_names():
            setting, users = SETTINGS[name], SETTINGS.users(name)
            used = f" [{', '.join(f'{k} {s}' for k, s in users)}]" if users else ""
            lines.append(f"{name} = {setting.default!r}: {setting.help}; {setting.allowed()}{used}")
        return "\n".join(lines)

    def check(self) -> ImprintClassifier:
        """Check the settings (every value, and the combinations that cannot work) without fitting: a one-line
        error for a mistake, so a program can refuse it before any slow work."""
        check_settings(self._params())
        return self

    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in parameter_names()}

    @property
    def is_oracle(self) -> bool:
        """True for generators that use cross-class statistics (upper-bound baselines, not imprinting)."""
        return is_oracle(self._params())

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any, *, encoder_id: str | None = None, text_embeddings: Any = None,
            text_labels: Any = None, keep_examples: bool = False) -> ImprintClassifier:
        """Imprint proxies for every class in y from the embeddings X; returns self.

        `encoder_id` records which encoder produced X (arrays from ``imprint``'s own embedding functions carry
        it already), so a saved classifier is used with the same one and queries from another encoder are
        refused. `text_embeddings` with `text_labels` are zero-shot embeddings of class names (prompts) from a
        CLIP text tower, one or several per class: their cosines with each query are added to the head's class
        scores with weight `text_alpha` (every class needs images and text). With ``text_alpha=None`` they join
        the support set as extra samples of their classes instead: a class can then be imprinted from text
        alone (X may have no rows for it, or no rows at all) and improves with every image added.
        `keep_examples` keeps the support embeddings in the classifier (and its file), so that ``add_examples``
        can later give any class more examples (the file grows by 4 bytes per support value).
        """
        params = check_settings(self._params())
        encoder_id = encoder_id or getattr(X, "encoder_id", None)
        blend = text_embeddings is not None and self.text_alpha is not None
        if text_embeddings is not None and not blend:
            X_checked, y = ZeroShotText.joined(X, y, text_embeddings, text_labels)
        else:
            if blend and (X is None or len(X) == 0):
                raise UserError("the zero-shot blend (text_alpha) adds text scores to a head fitted on images, but "
                                 f"no images were given: pass images of every class, or {TEXT_ONLY_FIX}")
            X_checked = check_embeddings(X, keep_dtype=True)  # floats as given: read in blocks, never copied
            y = check_labels(y, len(X_checked))
            validate_data(self, X, reset=True, skip_check_array=True)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise UserError(f"needs at least 2 classes to imprint a classifier; got 1 class ({classes[0]!r})")
        if text_embeddings is None and needs_text(self.text_alpha):
            raise UserError(f"text_alpha={self.text_alpha!r} blends zero-shot text scores, but fit got no "
                             "text_embeddings; pass text_embeddings and text_labels (imprint fit --zero-shot), "
                             "or leave text_alpha at 'auto'")
        text = ZeroShotText.for_classes(classes, text_embeddings, text_labels, X_checked.shape[1]) if blend else None
        self.n_features_in_ = X_checked.shape[1]
        self.device_ = resolve_device(self.device)
        if self.reject is not None:
            need_memory(X_checked.shape[0] * X_checked.shape[1] * 4 * 2, "rejection keeps a float32 copy of the "
                        "support set for calibration")
        folds = FoldFitter(self.device_, None if text is None else text.weights, int(self.seed))
        self.tuning_ = Tuning.run(params, X_checked, codes, folds, int(self.seed))
        self.pipeline_ = Pipeline.fit(X_checked, codes, len(classes), self.tuning_.resolved(params), self.device_,
                                      text, int(self.seed))
        self.calibration_ = Calibration.fit(params, X_checked, codes, folds, self.pipeline_, self.tuning_,
                                           int(self.seed))
        self.classes_ = classes
        self.encoder_id_ = encoder_id
        self.open_set_ = None
        self.provenance_: Provenance | None = None  # set by fit_folder: the source and its images' digests
        self.examples_: Examples | None = None
        if keep_examples:
            need_memory(X_checked.shape[0] * X_checked.shape[1] * 4, "keep_examples keeps a float32 copy of the "
                        "support set")
            self.examples_ = Examples.of_support(X_checked, classes, codes)
        if self.reject is not None:
            if self.unknown_label_ in set(classes.tolist()):
                raise UserError(f"unknown_label {self.unknown_label_!r} is also a class; set unknown_label to a "
                                "value no class has")
            classes_.fit_open_set(self, np.array(X_checked, dtype=np.float32), codes.astype(np.int64))
        return self

    # ------------------------------------------------------------------ fitted state, as scikit-learn names it
    @property
    def tuned_(self) -> dict[str, Any]:
        """The values chosen on the support set for the settings left at "auto" (with method="auto", the method);
        ``temperature_`` is the calibrated temperature, ``tuning_.report`` how the choice was made. They are the
        first fit's: ``add_classes`` and ``add_examples`` keep them (fit again to choose on every class)."""
        return dict(self.tuning_.values)

    @property
    def tuning_report_(self) -> dict[str, Any]:
        """How the "auto" values were chosen: the chosen method's cross-validated accuracy (method="auto") and
        the rows of the sample they were chosen on (a support set above 2,000 rows)."""
        return dict(self.tuning_.report)

    @property
    def temperature_(self) -> float:
        """The temperature of predict_proba: calibrated (``temperature="auto"``) or the number given."""
        return self.calibration_.temperature

    @property
    def proxy_ratio_(self) -> float | None:
        """k="auto": the proxies per support sample chosen on the support set."""
        rule = next(iter(self.tuning_.rules.values()), None)
        return None if rule is None else rule.ratio

    @property
    def proxies_(self) -> np.ndarray:
        return self.pipeline_.metric.proxies.detach().cpu().numpy()

    @property
    def proxy_counts_(self) -> np.ndarray:
        return self.pipeline_.proxy_counts

    @property
    def proxy_labels_(self) -> np.ndarray:
        return np.repeat(self.classes_, self.proxy_counts_)

    @property
    def threshold_(self) -> float:
        """The rejection threshold (unknown scores above it are rejected)."""
        return self.open_set_.threshold

    @property
    def unknown_label_(self) -> Any:
        """The label of rejected queries: the setting, or 'unknown' / -1 to match the classes' type."""
        return classes_.unknown_label(self)

    # ------------------------------------------------------------------ prediction
    def _checked_queries(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        source = getattr(X, "encoder_id", None)
        if source is not None and self.encoder_id_ is not None and source != self.encoder_id_:
            raise UserError(f"these embeddings come from {source} but the classifier was fitted on {self.encoder_id_}"
                             " embeddings; embed the queries with the encoder the classifier was fitted with")
        X = check_embeddings(X, n_features=self.n_features_in_)
        validate_data(self, X, reset=False, skip_check_array=True)
        return X

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores, shape (n_samples, n_classes), computed in memory-bounded blocks of queries. With two
        classes, as scikit-learn's binary classifiers do, one score per query: the score of ``classes_[1]``
        minus that of ``classes_[0]`` (positive: ``classes_[1]``), so binary scorers such as roc_auc work."""
        scores = self._class_scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def _class_scores(self, X: Any) -> np.ndarray:
        """(n_samples, n_classes) class scores, whatever the number of classes."""
        X = self._checked_queries(X)
        return self.pipeline_.class_scores(X)

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest score for each query (``unknown_label`` where the rejection score is above
        its calibrated threshold); class scores are never all held at once."""
        X = self._checked_queries(X)
        if self.open_set_ is None or self.open_set_.rejector is None:
            return self.classes_[self.pipeline_.predict_codes(X)]
        best, rejected = self.open_set_.predict(X, self.pipeline_)
        label = self.unknown_label_
        out = self.classes_[best].astype(classes_.label_dtype(self.classes_, label))  # ints stay integers
        out[rejected] = label
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the class scores divided by the temperature: calibrated on the support set by
        cross-fitting (``temperature="auto"``, see ``imprint.estimator.calibration``), or the number given."""
        scores = self._class_scores(X)  # checks the classifier is fitted first
        return self.calibration_.probabilities(scores)

    def score_unknown(self, X: Any) -> np.ndarray:
        """One score per query, higher meaning more likely of none of the classes (needs ``reject``)."""
        check_is_fitted(self)
        if self.reject is None:
            raise UserError("score_unknown needs a rejection score: set reject= one of "
                             f"{', '.join(REJECTORS.names())}")
        X = self._checked_queries(X)
        return self.open_set_.score(X, self.pipeline_)

    def predict_set(self, X: Any, alpha: float = 0.1) -> np.ndarray:
        """Conformal label sets: a boolean (n_queries, n_classes) array, columns in ``classes_`` order, whose
        sets hold the true class of a known-class query with probability at least 1 - alpha (calibrated on the
        support set: fit with ``reject``, or call ``calibrate`` with held-out labelled embeddings)."""
        check_is_fitted(self)
        if self.open_set_ is None or self.open_set_.margins is None:
            raise UserError("predict_set needs conformal calibration: fit with reject=... (e.g. 'max_score') or "
                             "call calibrate(X, y) with held-out labelled embeddings first")
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise UserError(f"alpha must be a number between 0 and 1 (exclusive); got {alpha!r}")
        return self.open_set_.label_sets(self._class_scores(X), float(alpha))

    def calibrate(self, X: Any, y: Any) -> ImprintClassifier:
        """Calibration on held-out labelled embeddings of the known classes (not used for fitting): the rejection
        threshold (with ``reject``) and the prediction sets (split-conformal), and with ``temperature="auto"`` the
        temperature of predict_proba, then come from them."""
        check_is_fitted(self)
        X = self._checked_queries(X)
        y = check_labels(y, len(X))
        unknown = sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise UserError(f"calibration labels must be known classes; {unknown[0]!r} is not one")
        columns = np.searchsorted(self.classes_, y)
        if self.temperature == AUTO:  # the probabilities too, on these held-out samples
            self.calibration_.refit(self.pipeline_.class_scores(X), columns)
        if self.open_set_ is None:
            self.open_set_ = OpenSet(None, self.reject_rate)
        self.open_set_.calibrate(X, columns, self.pipeline_)
        return self

    def to_torch(self) -> ImprintedModel:
        """An ``nn.Module`` (CPU, eval mode) giving the same class scores as ``decision_function`` (for two
        classes, both columns); its ``classes`` attribute names the class of each output column, and its
        ``probabilities(scores)`` gives what ``predict_proba`` gives."""
        check_is_fitted(self)
        self.pipeline_.solve()
        module = copy.deepcopy(self.pipeline_.model).to("cpu").eval()
        module.classes = self.classes_.tolist()
        module.temperature = float(self.calibration_.temperature)
        module.log_logits = self.calibration_.logits == "log"
        return module

    def export_onnx(self, path: str | os.PathLike, encoder: Any = None, force: bool = False) -> Path:
        """Write one ONNX graph from images (uint8 N x H x W x 3 at the encoder's input size) to class scores,
        probabilities, the best class and, with rejection, the unknown score and whether it is accepted
        (``imprint.estimator.onnx_export``). `encoder`: an encoder or its id (default: the one recorded, where imprint
        may build it)."""
        from imprint.estimator.onnx_export import export_onnx

        check_is_fitted(self)
        return export_onnx(self, path, encoder=encoder, force=force).path

    # ------------------------------------------------------------------ incremental
    def add_classes(self, X: Any, y: Any, *, text_embeddings: Any = None, text_labels: Any = None
                    ) -> ImprintClassifier:
        """Imprint new classes with the fitted normalisations and settings (the method and every value chosen at
        fit are kept, and so is the temperature). Existing classes keep their proxies; a metric with shared
        statistics (mahalanobis, ridge) updates them exactly, as a refit on the union would. A classifier blending
        zero-shot text needs `text_embeddings`/`text_labels` for every new class (the text term keeps the scale
        measured at fit); with ``text_alpha=None`` they join the new classes' samples. The kept temperature can
        leave a shared-covariance head's probabilities overconfident (Fashion-MNIST, 30 images per class, 5
        classes added to 5: expected calibration error 0.045 against 0.026 after a refit): ``calibrate`` on
        held-out labelled embeddings, or fit again."""
        classes_.add_classes(self, X, y, text_embeddings, text_labels)
        return self

    def add_examples(self, X: Any, y: Any, *, thumbnails: list[bytes] | None = None) -> ImprintClassifier:
        """Teach classes by example: a label not imprinted yet becomes a new class (as ``add_classes``), and a
        label taught this way before is imprinted again from all its examples, old and new, exactly as if they
        had come at once. The examples are kept (in the saved file too, with `thumbnails`: a small picture of each,
        as bytes); classes imprinted by ``fit`` keep theirs only with ``fit(..., keep_examples=True)``. All or
        nothing: on an error the classifier is unchanged."""
        classes_.add_examples(self, X, y, thumbnails)
        return self

    def remove_classes(self, labels: Iterable[Hashable]) -> ImprintClassifier:
        """Drop the given classes; the others keep their proxies (metrics that pool statistics over all
        classes cannot lose a class exactly and say so)."""
        classes_.remove_classes(self, labels)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted classifier to a safetensors file (arrays + JSON metadata, checksummed), atomically."""
        saving.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_dim: int | None = None,
             device: str = "auto") -> ImprintClassifier:
        """Read a classifier written by ``save``; `expected_dim` checks the embedding width. The file names
        its stages and never runs code: a stage from a plug-in needs its module imported first."""
        return saving.load(cls, path, expected_dim, device)
