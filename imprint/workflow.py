"""What the command line does, as library calls: open a labelled source (an image folder, an embeddings store or
an embeddings file), choose support and held-out rows, evaluate a classifier and predict images.

Each function does one step and returns data; the CLI (``imprint.cli``) only parses arguments, calls these and
prints what they return.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imprint.data.folder import IMAGE_EXTENSIONS, FolderError, sample_shots, scan_folder, split_support_test
from imprint.embedded import Labelled, tagged


class SourceError(ValueError):
    """A path that is not something imprint can learn from; the message says what it is and what to pass."""


@dataclass
class Source:
    """Labelled items (image files or stored embeddings) and a way to get the embeddings of some of them.

    ``embed(rows)`` returns (embeddings of the readable rows, mask of the rows that were readable)."""

    description: str
    labels: np.ndarray  # class name of every item
    encoder_id: str | None
    embed: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    paths: list[Path] | None = None  # the images, for a folder
    empty_classes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.labels.tolist()))


def _from_labelled(description: str, data: Labelled) -> Source:
    def embed(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        every = len(rows) == len(data.X) and bool((rows == np.arange(len(rows))).all())
        return (data.X if every else tagged(data.X[rows], data.encoder_id)), np.ones(len(rows), dtype=bool)

    return Source(description, np.asarray(data.labels, dtype=object), data.encoder_id, embed)


def open_source(path: str | Path, *, folder_embedder: Callable[[Sequence[Path]], tuple[np.ndarray, np.ndarray]]
                | None = None, encoder_id: str | None = None, min_classes: int = 2, strict: bool = False) -> Source:
    """An image folder (DIR/<class>/<image>, embedded on demand by `folder_embedder`), a store written by
    ``imprint embed DIR -o STORE`` or an embeddings file (``-o FILE.npz``). Anything else is a SourceError
    saying what the path is and what would work."""
    from imprint.embeddings_file import read_embeddings_file
    from imprint.store import EmbeddingStore, is_store

    path = Path(path)
    if is_store(path):
        X, labels = EmbeddingStore.open(path).labelled()
        return _from_labelled(f"store {path}", Labelled(X, labels, X.encoder_id))
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _from_labelled(f"embeddings file {path}", read_embeddings_file(path))
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise SourceError(f"{path} is a single image; imprinting learns from a folder with one sub-folder per "
                              f"class ({path.parent}/<class>/<image>). To classify this image: imprint predict "
                              f"CLASSIFIER {path}")
        raise SourceError(f"{path} is a file, not an image folder, an embeddings store or a .npz embeddings file")
    if not path.exists():
        what = "embeddings file" if path.suffix.lower() == ".npz" else "image folder"
        raise FolderError(f"{what} not found: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = scan_folder(path, min_classes=min_classes, strict=strict)
    for item in caught:
        warnings.warn(str(item.message), stacklevel=2)
    if folder_embedder is None:
        raise SourceError(f"{path} is an image folder; an encoder is needed to embed it")

    def embed(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return folder_embedder([folder.paths[i] for i in rows])

    return Source(f"folder {path}", folder.class_labels, encoder_id, embed, folder.paths, folder.empty_classes)


@dataclass
class Selection:
    """Support rows, held-out rows (or None) and notes worth telling the user."""

    support: np.ndarray
    test: np.ndarray | None
    notes: list[str] = field(default_factory=list)


def select(labels: np.ndarray, *, test_fraction: float | None = None, shots: int | None = None,
           seed: int = 0) -> Selection:
    """Hold out `test_fraction` of every class (seeded, stratified; a class keeps at least one support image),
    then keep `shots` support images per class."""
    codes = np.unique(labels, return_inverse=True)[1]
    names = sorted(set(labels.tolist()))
    notes: list[str] = []
    support, test = np.arange(len(labels)), None
    if test_fraction is not None:
        support, test = split_support_test(codes, test_fraction, seed=seed)
        unheld = sorted(set(names) - set(labels[test].tolist()))
        if unheld:
            notes.append(f"{len(unheld)} class(es) have too few images to hold any out and are not in the held-out "
                         f"scores: {', '.join(map(str, unheld))}")
    if shots is not None:
        if shots < 1:
            raise ValueError(f"--shots must be an integer >= 1; got {shots}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            support = support[sample_shots(codes[support], shots, seed, names)]
        notes += [str(item.message) for item in caught]
    return Selection(support, test, notes)


@dataclass
class Evaluation:
    """Accuracy and per-class scores of predictions on labelled queries."""

    labels: np.ndarray
    predicted: np.ndarray
    classes: list[Any]  # the classes with at least one query, in classifier order
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else float("nan")

    @property
    def correct(self) -> int:
        return int((self.predicted == self.labels).sum())

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that have queries (a class with none has no F1 to average)."""
        return float(self.f1.mean()) if len(self.f1) else float("nan")

    @property
    def chance(self) -> float:
        """Accuracy of always answering the most frequent class of the queries."""
        return float(self.support.max() / self.support.sum()) if len(self.support) else float("nan")


def evaluate(clf: Any, X: np.ndarray, y: np.ndarray) -> Evaluation:
    """Predict X and score against y; per-class precision, recall and F1 over the classes present in y."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = clf.predict(X)
    present = [c for c in clf.classes_.tolist() if c in set(np.asarray(y).tolist())]
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=present, zero_division=0)
    return Evaluation(np.asarray(y), predicted, present, precision, recall, f1, support)


@dataclass
class Prediction:
    """One image's predicted class (the unknown label when rejected), its probability, the top alternatives as
    (class, probability) and, for a classifier with a rejection score, that score (higher: more likely unknown)."""

    path: Path
    label: Any
    probability: float
    top: list[tuple[Any, float]]
    unknown_score: float | None = None


def predictions(clf: Any, paths: Sequence[Path], X: np.ndarray, top_k: int) -> list[Prediction]:
    """Top-k classes (by predict_proba) of every embedded image, with rejection where the classifier has it."""
    if not len(X):
        return []
    proba = clf.predict_proba(X)
    labels = clf.predict(X)
    unknown = clf.score_unknown(X) if getattr(clf, "reject", None) is not None else [None] * len(X)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :min(top_k, len(clf.classes_))]
    return [Prediction(Path(path), label, float(row[ranks[0]]), [(clf.classes_[r], float(row[r])) for r in ranks],
                       None if score is None else float(score))
            for path, ranks, row, label, score in zip(paths, order, proba, labels, unknown)]


PREDICTION_COLUMNS = ("path", "label", "score", "top_k")


def predictions_text(found: Sequence[Prediction], fmt: str, open_set: bool) -> str:
    """The predictions as a CSV table (`fmt` "csv"), a JSON list ("json") or an aligned table for people
    ("table"); with `open_set`, each row also has its unknown score."""
    from imprint.cli.output import csv_text, json_text, percent, table

    header = list(PREDICTION_COLUMNS) + (["unknown_score"] if open_set else [])
    if fmt == "json":
        return json_text([{"path": str(p.path), "label": p.label, "score": p.probability,
                           "top_k": [{"label": c, "score": s} for c, s in p.top],
                           **({"unknown_score": p.unknown_score} if open_set else {})} for p in found])
    if fmt == "csv":
        return csv_text([[str(p.path), p.label, p.probability, ";".join(f"{c}:{s:.4f}" for c, s in p.top)]
                         + ([p.unknown_score] if open_set else []) for p in found], header)
    names = display_names([p.path for p in found])
    return table([[name, p.label, percent(p.probability), ", ".join(f"{c} {percent(s)}" for c, s in p.top[1:])]
                  + ([f"{p.unknown_score:.4g}"] if open_set else []) for name, p in zip(names, found)],
                 ["image", "class", "probability", "next best"] + (["unknown score"] if open_set else [])) + "\n"


def display_names(paths: Sequence[Path]) -> list[str]:
    """Short names of images for a table: the file name, or the path below the images' common folder where two
    images share a file name."""
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return names
    import os

    try:
        common = Path(os.path.commonpath([str(path.absolute()) for path in paths]))
    except ValueError:  # paths on different drives
        return [str(path) for path in paths]
    return [str(path.absolute().relative_to(common)) if path.absolute() != common else path.name for path in paths]


def is_predictions_file(path: Path) -> bool:
    """Whether `path` holds predictions imprint wrote (its CSV header, or its JSON list of predictions)."""
    import json

    try:
        with open(path, "rb") as handle:
            start = handle.read(64)
        if start.startswith(",".join(PREDICTION_COLUMNS).encode()):
            return True
        if not start.lstrip().startswith(b"["):
            return False
        payload = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(payload, list) and all(isinstance(item, dict) and {"path", "label", "top_k"} <= set(item)
                                            for item in payload)


@dataclass
class OpenSetEvaluation:
    """How a classifier with a rejection score treats known-class and unknown images."""

    target_rate: float
    known_rejected: float
    unknown_rejected: float
    auroc: float
    fpr95: float
    accepted_accuracy: float
    n_known: int
    n_unknown: int


def evaluate_open_set(clf: Any, X_known: np.ndarray, y_known: np.ndarray, X_unknown: np.ndarray) -> OpenSetEvaluation:
    """Rejection of known-class images (against the target rate) and of unknown ones, AUROC and FPR at 95% TPR
    of the rejection score, and the accuracy of the known images that were accepted."""
    from imprint.openset.metrics import auroc, fpr_at_tpr

    known_scores, unknown_scores = clf.score_unknown(X_known), clf.score_unknown(X_unknown)
    predicted = clf.predict(X_known)
    accepted = known_scores <= clf.threshold_
    accuracy = float((predicted[accepted] == y_known[accepted]).mean()) if accepted.any() else float("nan")
    return OpenSetEvaluation(float(clf.reject_rate), float((~accepted).mean()),
                             float((unknown_scores > clf.threshold_).mean()), auroc(known_scores, unknown_scores),
                             fpr_at_tpr(known_scores, unknown_scores), accuracy, len(X_known), len(X_unknown))


def confusion_png(evaluation: Evaluation, classes: Sequence[Any], title: str) -> bytes:
    """A confusion-matrix picture (PNG bytes) with a title and the accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from imprint.pictures import png_bytes

    size = max(5.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(evaluation.labels, evaluation.predicted, labels=list(classes), ax=ax,
                                            xticks_rotation=45, colorbar=False)
    ax.set_title(f"{title}\naccuracy {100 * evaluation.accuracy:.1f}% ({evaluation.correct}/{len(evaluation.labels)}), "
                 f"chance {100 * evaluation.chance:.1f}%", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig, dpi=120)
