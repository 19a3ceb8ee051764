"""How well a classifier does on labelled images: accuracy, chance level and per-class scores, open-set rates,
a confusion-matrix picture, and the evaluation of an image folder as one library call (``imprint eval``)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imprint.core.errors import UserError, printable
from imprint.workflows.embedder import Embedder


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
    proba: np.ndarray | None = None  # predict_proba of the images
    columns: np.ndarray | None = None  # each image's class as a column of proba
    ece: float = float("nan")  # expected calibration error of proba
    known_rejected: float | None = None  # with a rejection score: share of these known images rejected
    target_rate: float | None = None
    accepted_accuracy: float | None = None  # accuracy of the images not rejected

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
    """Predict X and score against y; per-class precision, recall and F1 over the classes present in y; the
    calibration of the probabilities (ECE); with a rejection score, the accuracy is the closed set's (every image
    gets its best class) and the rejection of these known-class images is reported beside it."""
    from sklearn.metrics import precision_recall_fscore_support


    proba = clf.predict_proba(X)
    rejects = getattr(clf, "reject", None) is not None
    predicted = clf.classes_[proba.argmax(axis=1)] if rejects else clf.predict(X)
    present = [c for c in clf.classes_.tolist() if c in set(np.asarray(y).tolist())]
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=present, zero_division=0)
    evaluation = Evaluation(np.asarray(y), predicted, present, precision, recall, f1, support, proba,
                            np.searchsorted(clf.classes_, y))
    evaluation.ece = expected_calibration_error(proba, evaluation.columns)
    if rejects:
        rejected = clf.score_unknown(X) > clf.threshold_
        evaluation.known_rejected = float(rejected.mean())
        evaluation.target_rate = float(clf.reject_rate)
        kept = ~rejected
        evaluation.accepted_accuracy = float((predicted[kept] == y[kept]).mean()) if kept.any() else float("nan")
    return evaluation


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
    from imprint.openset.measures import auroc, fpr_at_tpr

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

    from imprint.io.png import png_bytes

    size = max(5.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(evaluation.labels, evaluation.predicted, labels=list(classes), ax=ax,
                                            xticks_rotation=45, colorbar=False)
    ax.set_title(f"{title}\naccuracy {100 * evaluation.accuracy:.1f}% ({evaluation.correct}/{len(evaluation.labels)}), "
                 f"chance {100 * evaluation.chance:.1f}%", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig, dpi=120)


def evaluation_payload(evaluation: Evaluation) -> dict[str, Any]:
    """An evaluation as ``imprint eval --format json`` writes it."""
    rejection = {} if evaluation.known_rejected is None else {
        "known_rejected": evaluation.known_rejected, "target_rate": evaluation.target_rate,
        "accepted_accuracy": evaluation.accepted_accuracy}
    return {"accuracy": evaluation.accuracy, "chance": evaluation.chance, "macro_f1": evaluation.macro_f1,
            "ece": evaluation.ece, **rejection, "images": len(evaluation.labels),
            "per_class": [dict(zip(("class", "precision", "recall", "f1", "images"), row))
                          for row in zip(evaluation.classes, evaluation.precision, evaluation.recall, evaluation.f1,
                                         evaluation.support)]}


class EvaluationError(UserError):
    """A folder that cannot evaluate this classifier (no known class, no unknown images)."""


@dataclass
class FolderEvaluation:
    """A classifier's evaluation on a labelled image folder: its images of known classes, and with `unknown`
    images of none of the classes, the open-set rates."""

    evaluation: Evaluation
    open_set: OpenSetEvaluation | None = None
    left_out: list[Any] = field(default_factory=list)  # classes of the folder the classifier does not know
    in_support: int | None = None  # of these images, those the classifier was fitted on (None: not recorded)
    held_out_accuracy: float | None = None  # the accuracy on the images held out at fit, where recorded

    def payload(self) -> dict[str, Any]:
        out = {**evaluation_payload(self.evaluation), "in_support": self.in_support}
        if self.open_set is not None:
            out["open_set"] = dict(self.open_set.__dict__)
        return out


def evaluate_folder(classifier: Any, folder: str | Path, *, unknown: str | Path | None = None,
                    embedder: Embedder | None = None, **embedding: Any) -> FolderEvaluation:
    """Accuracy, chance level, macro-F1 and per-class scores of `classifier` (a fitted ImprintClassifier or a
    classifier file) on the labelled image folder `folder` (DIR/<class>/<image>); with `unknown`, a folder of
    images of none of the classes, the open-set rates too. Images of classes it does not know are left out (and
    named in a warning). Keywords: embedding options (``imprint.workflows.embedder.EmbedOptions``)."""
    from imprint.data.folder import list_images
    from imprint.workflows.deployed import open_classifier
    from imprint.workflows.embedder import EmbedOptions
    from imprint.workflows.sources import open_source

    if embedder is None:
        classifier, embedder = open_classifier(classifier, EmbedOptions(**embedding))
    if unknown is not None and classifier.reject is None:
        raise EvaluationError("unknown images score rejection, but the classifier has none: fit with --reject "
                              "(e.g. --reject mahalanobis --reject-rate 0.05)")
    strict = embedder.options.strict
    source = open_source(folder, embedder=embedder, min_classes=1, strict=strict)
    known = np.isin(source.labels, classifier.classes_)
    if not known.any():
        raise EvaluationError(f"no class of {printable(folder)} is known to the classifier "
                              f"({', '.join(map(str, classifier.classes_))})")
    left_out = sorted(set(source.labels[~known].tolist()))
    if left_out:
        warnings.warn(f"{int((~known).sum())} image(s) in classes the classifier does not know are left out: "
                      f"{', '.join(map(str, left_out))}", stacklevel=2)
    rows = np.flatnonzero(known)
    X, ok = source.embed(rows)
    labels = source.labels[known][ok]
    result = FolderEvaluation(evaluate(classifier, X, labels), left_out=left_out)
    provenance = getattr(classifier, "provenance_", None)
    if provenance is not None and source.paths is not None:
        seen = provenance.in_support([source.paths[i] for i in rows[ok]])
        result.in_support = None if seen is None else int(seen.sum())
        result.held_out_accuracy = provenance.held_out_accuracy
    if unknown is not None:
        unknown_paths = list_images(Path(unknown), strict=strict)
        if not unknown_paths:
            raise EvaluationError(f"no images found in {printable(unknown)}")
        X_unknown, _ = embedder(unknown_paths)
        result.open_set = evaluate_open_set(classifier, X, labels, X_unknown)
    return result


BINS = 15  # equal-width confidence bins of the expected calibration error


def expected_calibration_error(proba: np.ndarray, truth: Sequence[int], bins: int = BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the share of samples in each
    (the top class's probability as the confidence)."""
    proba = np.asarray(proba)
    truth = np.asarray(truth)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def reliability_png(proba: np.ndarray, truth: Sequence[int], title: str, bins: int = BINS) -> bytes:
    """A reliability diagram (accuracy against confidence per bin, with the diagonal of perfect calibration and
    the share of samples per bin), as PNG bytes signed as imprint's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imprint.io.png import png_bytes

    proba, truth = np.asarray(proba), np.asarray(truth)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    accuracy = np.array([correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
    share = np.array([(which == b).mean() for b in range(bins)])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    top.bar(centres, np.nan_to_num(accuracy), width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    top.set(ylabel="accuracy in the bin", xlim=(0, 1), ylim=(0, 1),
            title=f"{title}\nexpected calibration error {expected_calibration_error(proba, truth, bins):.3f} "
                  f"over {len(truth)} images")
    top.legend(loc="upper left")
    bottom.bar(centres, share, width=1 / bins, edgecolor="black", color="tab:gray")
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="share of images")
    figure.tight_layout()
    return png_bytes(figure, dpi=120)
