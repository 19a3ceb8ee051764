"""Classes added to and removed from a fitted classifier, and the labels it answers with: ``add_classes`` imprints
new classes with the fitted settings, ``add_examples`` teaches by example (a class imprinted again from all its
examples), ``remove_classes`` drops classes; the open set is fitted again to the classes it then has."""
from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from imprint.core.errors import UserError
from imprint.core.settings import AUTO
from imprint.core.validation import check_embeddings, check_labels
from imprint.estimator.configuration import check_settings
from imprint.estimator.folds import FoldFitter
from imprint.estimator.open_set import OpenSet
from imprint.estimator.taught import Examples
from imprint.estimator.text_blend import ZeroShotText


def unknown_label(clf: Any) -> Any:
    """The label of rejected queries: the setting, or 'unknown' / -1 to match the classes' type."""
    if clf.unknown_label != AUTO:
        return clf.unknown_label
    return -1 if clf.classes_.dtype.kind in "iuf" else "unknown"


def check_unknown_label(clf: Any, labels: np.ndarray) -> None:
    """A classifier that rejects answers its unknown label for rejected images: no class may bear it."""
    if clf.reject is None:
        return
    label = unknown_label(clf)
    if label in set(labels.tolist()):
        raise UserError(f"{label!r} is the label this classifier gives rejected images (unknown_label), so it "
                        "cannot name a class; give the class another name (or set unknown_label)")


def fit_open_set(clf: Any, X: np.ndarray, codes: np.ndarray) -> None:
    """Fit the rejection score on the support set and calibrate it on scores of support samples from models that
    did not see them (the energy score reads the calibrated temperature)."""
    params = check_settings(clf._params())
    text = clf.pipeline_.text
    folds = FoldFitter(clf.device_, None if text is None else text.weights, int(clf.seed))
    settings = {**clf.tuning_.resolved(params), "temperature": clf.calibration_.temperature}
    clf.open_set_ = OpenSet.fit(clf.reject, settings, X, codes, clf.pipeline_, folds,
                                lambda counts, n: clf.tuning_.for_folds(params, counts, n), int(clf.seed))


def add_classes(clf: Any, X: Any, y: Any, text_embeddings: Any = None, text_labels: Any = None) -> None:
    """See ``ImprintClassifier.add_classes``."""
    check_is_fitted(clf)
    if clf.is_oracle:
        raise UserError(f"add_classes is not available for oracle generation {clf.generation!r}: "
                        "it uses statistics of all classes; refit instead")
    blends = clf.pipeline_.text is not None
    if text_embeddings is None and blends:
        raise UserError("this classifier blends zero-shot text scores: pass text_embeddings and text_labels for "
                        "the new classes too")
    if text_embeddings is not None and not blends and clf.text_alpha is not None:
        raise UserError("this classifier was fitted without text embeddings, so its other classes have no text "
                        "scores to blend; add the classes without text, or refit with text for every class")
    if text_embeddings is not None and clf.text_alpha is None:
        X, y = ZeroShotText.joined(X, y, text_embeddings, text_labels)
    X = check_embeddings(X, n_features=clf.n_features_in_, keep_dtype=True)
    y = check_labels(y, len(X))
    new_classes, codes = np.unique(y, return_inverse=True)
    if label_kind(new_classes) != label_kind(clf.classes_):
        raise UserError(f"add_classes got {label_kind(new_classes)} labels but this classifier's classes are "
                        f"{label_kind(clf.classes_)}; give the new classes labels of the same type")
    clash = [c for c in new_classes.tolist() if c in set(clf.classes_.tolist())]
    if clash:
        raise UserError(f"class {clash[0]!r} is already imprinted; remove_classes([{clash[0]!r}]) first")
    check_unknown_label(clf, new_classes)
    classes = np.concatenate([clf.classes_, new_classes])
    order = np.argsort(classes, kind="stable")
    text = None
    if blends:
        new_text = ZeroShotText.for_classes(new_classes, text_embeddings, text_labels, clf.n_features_in_)
        text = clf.pipeline_.text.extended(new_text, order)
    clf.pipeline_.extend(X, codes, len(new_classes), order, text)
    old_classes = clf.classes_
    clf.classes_ = classes[order]
    if clf.open_set_ is not None and clf.open_set_.rejector is not None:
        labels = np.concatenate([old_classes[clf.open_set_.support_codes], new_classes[codes]])
        fit_open_set(clf, np.concatenate([clf.open_set_.support, np.asarray(X, dtype=np.float32)]),
                     np.searchsorted(clf.classes_, labels))
    elif clf.open_set_ is not None:
        clf.open_set_ = None  # held-out calibration of other classes no longer holds


def add_examples(clf: Any, X: Any, y: Any, thumbnails: list[bytes] | None = None) -> None:
    """See ``ImprintClassifier.add_examples``."""
    check_is_fitted(clf)
    X = np.asarray(check_embeddings(X, n_features=clf.n_features_in_, keep_dtype=True), dtype=np.float32)
    y = check_labels(y, len(X))
    if thumbnails is not None and len(thumbnails) != len(X):
        raise UserError(f"thumbnails must be one picture per example: {len(thumbnails)} for {len(X)} examples")
    check_unknown_label(clf, np.unique(y))
    kept = clf.examples_ or Examples()
    known = set(clf.classes_.tolist())
    labels = np.unique(y).tolist()
    from_fit = [label for label in labels if label in known and label not in kept]
    if from_fit:
        raise UserError(f"class {from_fit[0]!r} was imprinted by fit without keeping its examples, so it has "
                        "none to add to; teach these under a new class name, or fit with keep_examples "
                        "(imprint fit --keep-examples)")
    again = [label for label in labels if label in known]
    if again and len(clf.classes_) - len(again) < 2:
        raise UserError(f"class {again[0]!r} is imprinted again from all its examples, which needs at least 2 "
                        "other classes meanwhile; teach another class first")
    taught = copy.deepcopy(clf)
    if again:
        remove_classes(taught, again)
    old = [kept.of(label) for label in again]
    add_classes(taught, np.concatenate([*old, X]),
                np.asarray([label for label, rows in zip(again, old) for _ in rows] + list(y)))
    taught.examples_ = Examples(kept.by_class, kept.pictures)
    for label in labels:
        rows = np.asarray(y) == label
        taught.examples_.add(label, X[rows], None if thumbnails is None else
                             [picture for picture, take in zip(thumbnails, rows) if take])
    clf.__dict__.update(taught.__dict__)


def remove_classes(clf: Any, labels: Iterable[Hashable]) -> None:
    """See ``ImprintClassifier.remove_classes``."""
    check_is_fitted(clf)
    labels = list(labels)
    known = clf.classes_.tolist()
    missing = [label for label in labels if label not in known]
    if missing:
        raise UserError(f"cannot remove unknown class {missing[0]!r}; known classes: {known}")
    keep = ~np.isin(clf.classes_, np.asarray(labels, dtype=clf.classes_.dtype))
    if keep.sum() < 2:
        raise UserError(f"removing {len(labels)} of {len(known)} classes would leave fewer than 2; "
                        "fit a new classifier instead")
    clf.pipeline_.restrict(keep)
    old_classes = clf.classes_
    clf.classes_ = clf.classes_[keep]
    if clf.examples_ is not None:
        clf.examples_.drop(labels)
    if clf.open_set_ is not None and clf.open_set_.rejector is not None:
        rows = keep[clf.open_set_.support_codes]
        fit_open_set(clf, clf.open_set_.support[rows],
                     np.searchsorted(clf.classes_, old_classes[clf.open_set_.support_codes[rows]]))
    elif clf.open_set_ is not None:
        clf.open_set_ = None


def label_kind(labels: np.ndarray) -> str:
    """'number' or 'text' labels, in words, for a message; mixed object arrays read as their first label."""
    sample = labels.flat[0] if labels.dtype.kind == "O" and labels.size else None
    numeric = labels.dtype.kind in "iufb" or isinstance(sample, (int, float, np.number))
    return "number" if numeric else "text"


def label_dtype(classes: np.ndarray, label: object) -> np.dtype:
    """An array type holding both the classes and the unknown label without changing either: their common type
    when both are numbers or both text, else object (ints never turn into strings)."""
    other = np.asarray(label)
    if label_kind(classes) == label_kind(other) and classes.dtype.kind != "O" and other.dtype.kind != "O":
        return np.result_type(classes.dtype, other.dtype)
    return np.dtype(object)
