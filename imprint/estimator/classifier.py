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
import re
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from imprint.core.errors import UserError, printable, quoted
from imprint.core.machine import need_memory, resolve_device
from imprint.core.presets import CUSTOM
from imprint.core.settings import AUTO, SETTINGS
from imprint.core.validation import check_embeddings, check_labels
from imprint.estimator.calibration import as_logits, fit_temperature, softmax
from imprint.estimator.configuration import SLOT_NAMES, check_settings, is_oracle, method_settings, parameter_names
from imprint.estimator.open_set import OpenSet
from imprint.estimator.pipeline import FoldFitter, Pipeline
from imprint.estimator.provenance import Provenance
from imprint.estimator.taught import Examples
from imprint.estimator.text_blend import TEXT_ONLY_FIX, ZeroShotText, needs_text
from imprint.estimator.torch_module import ImprintedModel
from imprint.estimator.tuning import Tuning
from imprint.io.classifier_file import ClassifierFileError, read_classifier, write_classifier
from imprint.openset import REJECTORS

MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # a plug-in hint read from a file


class ImprintClassifier(ClassifierMixin, BaseEstimator):
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
        settings overridden, e.g. ``from_preset("gda", seed=1)``."""
        from imprint.core.presets import preset_settings

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
        self.tuning_.calibrate(params, X_checked, codes, folds, self.pipeline_, int(self.seed))
        self.pipeline_.settings["temperature"] = self.tuning_.resolved(params)["temperature"]
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
            self._check_unknown_label()
            self._fit_open_set(np.array(X_checked, dtype=np.float32), codes.astype(np.int64))
        return self

    def _fit_open_set(self, X: np.ndarray, codes: np.ndarray) -> None:
        """Fit the rejection score on the support set and calibrate it on scores of support samples from models
        that did not see them."""
        params = check_settings(self._params())
        text = self.pipeline_.text
        folds = FoldFitter(self.device_, None if text is None else text.weights, int(self.seed))
        self.open_set_ = OpenSet.fit(self.reject, self.tuning_.resolved(params), X, codes, self.pipeline_, folds,
                                     lambda counts, n: self.tuning_.for_folds(params, counts, n), int(self.seed))

    # ------------------------------------------------------------------ fitted state, as scikit-learn names it
    @property
    def tuned_(self) -> dict[str, Any]:
        """The values chosen on the support set for the settings left at "auto"."""
        return dict(self.tuning_.values)

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
        if self.unknown_label != AUTO:
            return self.unknown_label
        return -1 if self.classes_.dtype.kind in "iuf" else "unknown"

    def _check_unknown_label(self) -> None:
        label = self.unknown_label_
        if label in set(self.classes_.tolist()):
            raise UserError(f"unknown_label {label!r} is also a class; set unknown_label to a value no class has")

    def _check_not_unknown_label(self, labels: np.ndarray) -> None:
        """A classifier that rejects answers its unknown label for rejected images: no class may bear it."""
        if self.reject is None:
            return
        label = self.unknown_label_
        if label in set(labels.tolist()):
            raise UserError(f"{label!r} is the label this classifier gives rejected images (unknown_label), so it "
                             "cannot name a class; give the class another name")

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
        out = self.classes_[best].astype(_label_dtype(self.classes_, label))  # integer classes stay integers
        out[rejected] = label
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the class scores divided by the temperature: calibrated on the support set by
        cross-fitting (``temperature="auto"``, see ``imprint.estimator.calibration``), or the number given."""
        logits = as_logits(self._class_scores(X), self.tuning_.values.get("probability_logits", "scores"))
        return softmax(logits, self.pipeline_.settings["temperature"])

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
            logits = as_logits(self.pipeline_.class_scores(X), self.tuning_.values.get("probability_logits", "scores"))
            temperature = fit_temperature(logits, columns)
            self.pipeline_.settings["temperature"] = self.tuning_.values["temperature"] = temperature
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
        module.temperature = float(self.pipeline_.settings["temperature"])
        module.log_logits = self.tuning_.values.get("probability_logits") == "log"
        return module

    def export_onnx(self, path: str | os.PathLike, encoder: Any = None, force: bool = False) -> Path:
        """Write one ONNX graph from images (uint8 N x H x W x 3 at the encoder's input size) to class scores,
        probabilities, the best class and, with rejection, the unknown score and whether it is accepted
        (``imprint.workflows.export``). `encoder`: an encoder or its id (default: the one recorded, where imprint
        may build it)."""
        from imprint.workflows.export import export_onnx

        check_is_fitted(self)
        return export_onnx(self, path, encoder=encoder, force=force).path

    # ------------------------------------------------------------------ incremental
    def add_classes(self, X: Any, y: Any, *, text_embeddings: Any = None, text_labels: Any = None
                    ) -> ImprintClassifier:
        """Imprint new classes with the fitted normalisations and settings. Existing classes keep their proxies;
        a metric with shared statistics (mahalanobis, ridge) updates them exactly, as a refit on the union would.
        A classifier blending zero-shot text needs `text_embeddings`/`text_labels` for every new class (the
        text term keeps the scale measured at fit); with ``text_alpha=None`` they join the new classes' samples."""
        check_is_fitted(self)
        if self.is_oracle:
            raise UserError(f"add_classes is not available for oracle generation {self.generation!r}: "
                             "it uses statistics of all classes; refit instead")
        blends = self.pipeline_.text is not None
        if text_embeddings is None and blends:
            raise UserError("this classifier blends zero-shot text scores: pass text_embeddings and text_labels for "
                             "the new classes too")
        if text_embeddings is not None and not blends and self.text_alpha is not None:
            raise UserError("this classifier was fitted without text embeddings, so its other classes have no text "
                             "scores to blend; add the classes without text, or refit with text for every class")
        if text_embeddings is not None and self.text_alpha is None:
            X, y = ZeroShotText.joined(X, y, text_embeddings, text_labels)
        X = check_embeddings(X, n_features=self.n_features_in_, keep_dtype=True)
        y = check_labels(y, len(X))
        new_classes, codes = np.unique(y, return_inverse=True)
        if _label_kind(new_classes) != _label_kind(self.classes_):
            raise UserError(f"add_classes got {_label_kind(new_classes)} labels but this classifier's classes are "
                             f"{_label_kind(self.classes_)}; give the new classes labels of the same type")
        clash = [c for c in new_classes.tolist() if c in set(self.classes_.tolist())]
        if clash:
            raise UserError(f"class {clash[0]!r} is already imprinted; remove_classes([{clash[0]!r}]) first")
        self._check_not_unknown_label(new_classes)
        text = None
        if blends:
            new_text = ZeroShotText.for_classes(new_classes, text_embeddings, text_labels, self.n_features_in_)
        classes = np.concatenate([self.classes_, new_classes])
        order = np.argsort(classes, kind="stable")
        if blends:
            text = self.pipeline_.text.extended(new_text, order)
        self.pipeline_.extend(X, codes, len(new_classes), order, text)
        old_classes = self.classes_
        self.classes_ = classes[order]
        if self.open_set_ is not None and self.open_set_.rejector is not None:
            labels = np.concatenate([old_classes[self.open_set_.support_codes], new_classes[codes]])
            self._fit_open_set(np.concatenate([self.open_set_.support, np.asarray(X, dtype=np.float32)]),
                               np.searchsorted(self.classes_, labels))
        elif self.open_set_ is not None:
            self.open_set_ = None  # held-out calibration of other classes no longer holds
        return self

    def add_examples(self, X: Any, y: Any, *, thumbnails: list[bytes] | None = None) -> ImprintClassifier:
        """Teach classes by example: a label not imprinted yet becomes a new class (as ``add_classes``), and a
        label taught this way before is imprinted again from all its examples, old and new, exactly as if they
        had come at once. The examples are kept (in the saved file too, with `thumbnails`: a small picture of each,
        as bytes); classes imprinted by ``fit`` keep theirs only with ``fit(..., keep_examples=True)``. All or
        nothing: on an error the classifier is unchanged."""
        check_is_fitted(self)
        X = np.asarray(check_embeddings(X, n_features=self.n_features_in_, keep_dtype=True), dtype=np.float32)
        y = check_labels(y, len(X))
        if thumbnails is not None and len(thumbnails) != len(X):
            raise UserError(f"thumbnails must be one picture per example: {len(thumbnails)} for {len(X)} examples")
        self._check_not_unknown_label(np.unique(y))
        kept = self.examples_ or Examples()
        known = set(self.classes_.tolist())
        labels = np.unique(y).tolist()
        from_fit = [label for label in labels if label in known and label not in kept]
        if from_fit:
            raise UserError(f"class {from_fit[0]!r} was imprinted by fit without keeping its examples, so it has "
                             "none to add to; teach these under a new class name, or fit with keep_examples "
                             "(imprint fit --keep-examples)")
        again = [label for label in labels if label in known]
        if again and len(self.classes_) - len(again) < 2:
            raise UserError(f"class {again[0]!r} is imprinted again from all its examples, which needs at least 2 "
                             "other classes meanwhile; teach another class first")
        taught = copy.deepcopy(self)
        if again:
            taught.remove_classes(again)
        old = [kept.of(label) for label in again]
        taught.add_classes(np.concatenate([*old, X]),
                           np.asarray([label for label, rows in zip(again, old) for _ in rows] + list(y)))
        taught.examples_ = Examples(kept.by_class, kept.pictures)
        for label in labels:
            rows = np.asarray(y) == label
            taught.examples_.add(label, X[rows], None if thumbnails is None else
                                 [picture for picture, take in zip(thumbnails, rows) if take])
        self.__dict__.update(taught.__dict__)
        return self

    def remove_classes(self, labels: Iterable[Hashable]) -> ImprintClassifier:
        """Drop the given classes; the others keep their proxies (metrics that pool statistics over all
        classes cannot lose a class exactly and say so)."""
        check_is_fitted(self)
        labels = list(labels)
        known = self.classes_.tolist()
        missing = [label for label in labels if label not in known]
        if missing:
            raise UserError(f"cannot remove unknown class {missing[0]!r}; known classes: {known}")
        keep = ~np.isin(self.classes_, np.asarray(labels, dtype=self.classes_.dtype))
        if keep.sum() < 2:
            raise UserError(f"removing {len(labels)} of {len(known)} classes would leave fewer than 2; "
                             "fit a new classifier instead")
        self.pipeline_.restrict(keep)
        old_classes = self.classes_
        self.classes_ = self.classes_[keep]
        if self.examples_ is not None:
            self.examples_.drop(labels)
        if self.open_set_ is not None and self.open_set_.rejector is not None:
            rows = keep[self.open_set_.support_codes]
            self._fit_open_set(self.open_set_.support[rows],
                               np.searchsorted(self.classes_, old_classes[self.open_set_.support_codes[rows]]))
        elif self.open_set_ is not None:
            self.open_set_ = None
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted classifier to a safetensors file (arrays + JSON metadata, checksummed), atomically."""
        check_is_fitted(self)
        settings = {name: value for name, value in self.get_params().items() if name != "device"}
        meta = {"settings": settings, "classes": list(self.classes_), "embedding_dim": int(self.n_features_in_),
                "encoder": self.encoder_id_, "plugins": self._plugins(),
                "active": SETTINGS.active(self.pipeline_.settings),
                "threshold": None, "text_scale": None}
        parts = [self.pipeline_.state(), (self.tuning_.state(), {})]
        if self.open_set_ is not None and self.open_set_.rejector is not None:
            parts.append(self.open_set_.state())
        if self.examples_ is not None:
            parts.append(self.examples_.state(self.classes_))
        if self.provenance_ is not None:
            parts.append(self.provenance_.state())
        write_classifier(path, meta, parts)

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
        from imprint.core.errors import printable

        resolve_device(device)  # a device this machine lacks is the caller's mistake, not the file's
        meta, arrays = read_classifier(path)
        try:
            return cls._restore(path, meta, arrays, expected_dim, device)
        except ClassifierFileError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            reason = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
            raise ClassifierFileError(f"{printable(path)} is an incomplete or inconsistent classifier file "
                                      f"({reason}); refit or restore it from a copy") from None

    @classmethod
    def _restore(cls, path: Any, meta: dict, arrays: dict[str, np.ndarray], expected_dim: int | None,
                 device: str) -> ImprintClassifier:
        settings = restored_settings(path, meta)
        dim = int(meta["embedding_dim"])
        if expected_dim is not None and dim != expected_dim:
            raise ClassifierFileError(f"{path} was fitted on {dim}-dimensional embeddings but {expected_dim} were "
                                      "expected; use the encoder it was fitted with")
        clf = cls(**dict(settings, device=device))
        params = check_settings(clf._params())
        tensors = {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}
        clf.tuning_ = Tuning.restore(meta, params)
        clf.device_ = resolve_device(device)
        clf.classes_ = np.asarray(meta["classes"])
        clf.n_features_in_ = dim
        clf.encoder_id_ = meta.get("encoder")
        resolved = clf.tuning_.resolved(params)
        check_stage_options(path, meta, resolved)
        clf.pipeline_ = Pipeline.restore(meta, tensors, resolved, clf.device_, len(clf.classes_))
        if clf.pipeline_.metric.proxies.shape[1] != (clf.pipeline_.norm_inf.output_dim or dim):
            raise ClassifierFileError(f"{path} is inconsistent: proxies of width "
                                      f"{clf.pipeline_.metric.proxies.shape[1]} for {dim}-dimensional embeddings")
        clf.open_set_ = None
        clf.examples_ = Examples.restore(tensors, clf.classes_, dim)
        clf.provenance_ = Provenance.restore(meta, arrays)
        saved = clf.pipeline_.stage_arrays()
        if clf.reject is not None:
            clf.open_set_ = OpenSet.restore(clf.reject, clf.reject_rate, meta, tensors, clf.device_)
            saved["reject"] = clf.open_set_.stage_arrays()
        for slot, needed in saved.items():  # every stage has exactly the arrays it needs, no more
            listed = [sorted(part["tensors"]) for part in meta["stages"][slot]]
            if listed != needed:
                raise ClassifierFileError(f"{path} is inconsistent: its {slot} stage lists the arrays {listed} but "
                                          f"needs {needed}; refit or restore it")
        return clf


def restored_settings(path: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The settings of a checked classifier file, once every stage it names is registered here (a plug-in's
    module named, when it is a valid module name) and every setting its format records is there."""
    shown = printable(path)
    settings = meta["settings"]
    version = meta["format_version"]
    required = [*(name for name in SLOT_NAMES if name != "reject"), *(["reject"] if version >= 3 else []),
                *(meta.get("active") or [] if version >= 3 else [])]
    missing = [name for name in required if name not in settings and name != "device"]
    if missing or (version >= 3 and meta.get("active") is None):
        raise ClassifierFileError(f"{shown} is an incomplete classifier file (its settings lack "
                                  f"{quoted(missing[0] if missing else 'active', 40)}); refit or restore it")
    for slot, registry in SETTINGS.slots.items():
        value = settings.get(slot, SETTINGS[slot].default)
        if value is not None and not isinstance(value, str):
            raise ClassifierFileError(f"{shown} is an inconsistent classifier file ({slot} must be a stage name)")
        for name in (value.split("+") if SETTINGS[slot].chain and value else [value]):
            if value is not None and name not in registry:
                module = meta.get("plugins", {}).get(slot)
                hint = "it is not a stage of this imprint version"
                if isinstance(module, str) and MODULE_NAME.fullmatch(module):
                    hint = f"import {module} before loading (command line: --plugin {module})"
                elif module:
                    hint = "the file names a plug-in module that is not a valid module name"
                raise ClassifierFileError(f"{shown} uses {slot} {quoted(name, 60)}, which is not registered here: "
                                          f"{hint}")
    return settings


def check_stage_options(path: Any, meta: dict, resolved: dict[str, Any]) -> None:
    """Stage options that are settings must be valid values and the values the settings say."""
    from imprint.core.errors import printable, quoted

    for slot, parts in meta["stages"].items():
        for part in parts:
            for name, value in part["options"].items():
                if name not in SETTINGS or name == "seed":
                    continue
                try:
                    SETTINGS[name].check(value)
                except ValueError:
                    raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                              f"{name}={quoted(value, 40)}, not a valid value") from None
                expected = resolved.get(name, AUTO)
                if not isinstance(expected, str) or expected != AUTO:
                    if expected != value and not hasattr(expected, "per_class"):
                        raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                                  f"{name}={quoted(value, 40)} but its settings say "
                                                  f"{quoted(expected, 40)}")


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


def _refresh_signature() -> None:
    """Keep the classifier's signature (what scikit-learn and help() read) equal to the declared settings."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=SETTINGS[name].default)
                   for name in parameter_names()]
    ImprintClassifier.__init__.__signature__ = inspect.Signature(parameters)


_refresh_signature()
SETTINGS.on_change(_refresh_signature)
