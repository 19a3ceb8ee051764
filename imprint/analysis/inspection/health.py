"""Per-class health of a support set: how many examples, how spread the class is relative to its nearest
neighbour (the class-distance-normalised variance, CDNV, of Galanti et al. ICLR 2022, as the collapse metrics
measure it), which class it is most often taken for by models that did not see the image, and whether more
examples are likely to help (its cross-fitted recall at half the data against most of it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAIN_THAT_HELPS = 0.02  # recall gained from half the examples to four fifths: more are likely to help above it
RECOGNISED = 0.98  # recall at or above which more examples cannot help much


@dataclass
class ClassHealth:
    """One class: count, CDNV to its nearest class, that class, the class its images are most often taken for
    with the share of them, its cross-fitted recall with most (and with half) of the examples, and a verdict."""

    name: str
    count: int
    spread: float
    nearest: str
    confused_with: str
    confused_share: float
    recall: float
    recall_half: float
    more_examples: str


def class_geometry(X: np.ndarray, codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(CDNV of every class with its nearest class by mean, that class's code) on unit-length embeddings."""
    from imprint.analysis.inspection.duplicates import unit_rows

    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    means = np.zeros((n_classes, X.shape[1]))
    variance = np.zeros(n_classes)
    for start in range(0, len(X), 8192):  # streamed: the support set is never copied whole
        block = unit_rows(X[start:start + 8192]).astype(np.float64)
        np.add.at(means, codes[start:start + 8192], block)
        np.add.at(variance, codes[start:start + 8192], (block * block).sum(axis=1))
    means /= np.maximum(counts, 1)[:, None]
    variance = variance / np.maximum(counts, 1) - (means * means).sum(axis=1)  # mean squared distance to the mean
    squared = (means * means).sum(axis=1)
    distance = np.maximum(squared[:, None] + squared[None, :] - 2 * means @ means.T, 1e-12)
    np.fill_diagonal(distance, np.inf)
    nearest = distance.argmin(axis=1)
    cdnv = (variance + variance[nearest]) / (2 * distance[np.arange(n_classes), nearest])
    return cdnv, nearest


def _recall(proba: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    judged = ~np.isnan(proba).any(axis=1)
    right = np.bincount(codes[judged], weights=(proba[judged].argmax(axis=1) == codes[judged]), minlength=n_classes)
    return right / np.maximum(np.bincount(codes[judged], minlength=n_classes), 1)


def class_health(X: np.ndarray, codes: np.ndarray, names: list[str], proba: np.ndarray,
                 proba_half: np.ndarray) -> list[ClassHealth]:
    """Health of every class from the support rows, their cross-fitted probabilities with most of the data
    (`proba`) and with half of it (`proba_half`)."""
    n_classes = len(names)
    cdnv, nearest = class_geometry(X, codes, n_classes)
    judged = ~np.isnan(proba).any(axis=1)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (codes[judged], proba[judged].argmax(axis=1)), 1)
    recall, recall_half = _recall(proba, codes, n_classes), _recall(proba_half, codes, n_classes)
    out = []
    for c in range(n_classes):
        wrong = confusion[c].copy()
        wrong[c] = 0
        other = int(wrong.argmax())
        share = float(wrong[other] / max(confusion[c].sum(), 1))
        if confusion[c].sum() == 0:
            verdict = "unknown (too few examples to cross-fit)"
        elif recall[c] >= RECOGNISED:
            verdict = "unlikely (already recognised)"
        elif recall[c] - recall_half[c] >= GAIN_THAT_HELPS:
            verdict = f"likely (recall +{recall[c] - recall_half[c]:.2f} from half the examples)"
        else:
            verdict = "unlikely (recall flat with more examples: look at the labels and the confused class)"
        out.append(ClassHealth(str(names[c]), int((codes == c).sum()), float(cdnv[c]), str(names[nearest[c]]),
                               str(names[other]) if share > 0 else "", share, float(recall[c]),
                               float(recall_half[c]), verdict))
    return out
