"""Predictions of images: each one's class, probability, alternatives and unknown score, written as a table for
people or CSV or JSON for programs (the format ``imprint predict`` writes and recognises as its own), and the
prediction of image files as one library call."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint.core.errors import UserError, printable


@dataclass
class Prediction:
    """One image's predicted class (the unknown label when rejected), its probability, the top alternatives as
    (class, probability) and, for a classifier with a rejection score, that score (higher: more likely unknown)."""

    path: Path
    label: Any
    probability: float
    top: list[tuple[Any, float]]
    unknown_score: float | None = None
    threshold: float | None = None  # unknown scores above it are rejected
    rejected: bool = False
    in_support: bool | None = None  # one of the images the classifier was fitted on (None: not recorded)


def predictions(clf: Any, paths: Sequence[Path], X: np.ndarray, top_k: int) -> list[Prediction]:
    """Top-k classes (by predict_proba) of every embedded image, with rejection where the classifier has it."""
    if not len(X):
        return []
    proba = clf.predict_proba(X)
    labels = clf.predict(X)
    rejects = getattr(clf, "reject", None) is not None
    unknown = clf.score_unknown(X) if rejects else [None] * len(X)
    threshold = float(clf.threshold_) if rejects else None
    order = np.argsort(-proba, axis=1, kind="stable")[:, :min(top_k, len(clf.classes_))]
    return [Prediction(Path(path), label, float(row[ranks[0]]), [(clf.classes_[r], float(row[r])) for r in ranks],
                       None if score is None else float(score), threshold,
                       rejects and bool(score > threshold))
            for path, ranks, row, label, score in zip(paths, order, proba, labels, unknown)]


PREDICTION_COLUMNS = ("path", "label", "probability", "top_k")
EARLIER_COLUMNS = ("path", "label", "score", "top_k")  # the header before 0.3


def predictions_text(found: Sequence[Prediction], fmt: str, open_set: bool) -> str:
    """The predictions as a CSV table (`fmt` "csv"), a JSON list ("json") or an aligned table for people
    ("table"); with `open_set`, each row also has its unknown score."""
    from imprint.io.text_formats import csv_text, json_text, percent, table

    header = list(PREDICTION_COLUMNS) + (["unknown_score"] if open_set else [])
    if fmt == "json":
        return json_text([{"path": str(p.path), "label": p.label, "probability": p.probability,
                           "top_k": [{"label": c, "probability": s} for c, s in p.top],
                           **({"unknown_score": p.unknown_score} if open_set else {}),
                           **({"in_support": p.in_support} if p.in_support is not None else {})} for p in found])
    if fmt == "csv":
        return csv_text([[str(p.path), p.label, p.probability, ";".join(f"{c}:{s:.4f}" for c, s in p.top)]
                         + ([p.unknown_score] if open_set else []) for p in found], header)
    names = display_names([p.path for p in found])
    rows = []
    for name, p in zip(names, found):
        if p.rejected:  # the best known class stays among the alternatives, its probability shown there
            rows.append([name, p.label, "-", ", ".join(f"{c} {percent(s)}" for c, s in p.top),
                         f"{p.unknown_score:.4g} > {p.threshold:.4g}"])
            continue
        row = [name, p.label, percent(p.probability), ", ".join(f"{c} {percent(s)}" for c, s in p.top[1:])]
        if open_set:
            row.append(f"{p.unknown_score:.4g} <= {p.threshold:.4g}")
        rows.append(row)
    header = ["image", "class", "probability", "next best"] + (["unknown score vs threshold"] if open_set else [])
    return table(rows, header) + "\n"


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
        if start.startswith((",".join(PREDICTION_COLUMNS).encode(), ",".join(EARLIER_COLUMNS).encode())):
            return True
        if not start.lstrip().startswith(b"["):
            return False
        payload = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(payload, list) and all(isinstance(item, dict) and {"path", "label", "top_k"} <= set(item)
                                            for item in payload)


class PredictionError(UserError):
    """Images that cannot be predicted: none given, none found, none readable, or a bad option."""


def predict_images(classifier: Any, paths: Sequence[str | Path], *, top_k: int = 3, embedder: Any = None,
                   **embedding: Any) -> list[Prediction]:
    """The top-k classes of every readable image under `paths` (image files or folders), with rejection where
    the classifier has it; `classifier` is a fitted ImprintClassifier or a classifier file. Unreadable images are
    named in a warning; none readable is an error. Keywords: embedding options
    (``imprint.workflows.embedder.EmbedOptions``)."""
    from imprint.workflows.deployed import open_classifier
    from imprint.workflows.embedder import EmbedOptions

    images = list_image_paths(paths, strict=embedding.get("strict", False))
    check_top_k(top_k)
    if embedder is None:
        classifier, embedder = open_classifier(classifier, EmbedOptions(**embedding))
    X, ok = embedder(images)
    if not ok.any():
        raise PredictionError(f"none of the {len(images)} image(s) could be read; nothing was predicted")
    readable = [p for p, good in zip(images, ok) if good]
    found = predictions(classifier, readable, X, top_k)
    provenance = getattr(classifier, "provenance_", None)
    seen = provenance.in_support(readable) if provenance is not None else None
    if seen is not None:
        for prediction, known in zip(found, seen.tolist()):
            prediction.in_support = known
    return found


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise PredictionError(f"--top-k must be an integer >= 1; got {top_k!r}")
    return int(top_k)


def list_image_paths(paths: Sequence[str | Path], strict: bool = False) -> list[Path]:
    """The image files under `paths` (files or folders), in order; a path that does not exist, or no image at
    all, is an error."""
    from imprint.data.folder import list_images

    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise PredictionError(f"no such image or folder: {printable(path)}")
        found.extend(list_images(path, strict=strict))
    if not found:
        raise PredictionError(f"no images found in {', '.join(printable(p) for p in paths)}")
    return found
