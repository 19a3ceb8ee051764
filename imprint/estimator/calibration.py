"""Probabilities that mean what they say: a softmax temperature fitted to held-out class scores, the expected
calibration error, and a reliability diagram.

The temperature T of ``predict_proba`` (softmax of class scores / T) is chosen to minimise the negative
log-likelihood of the true classes of samples a model did not see: cross-fitted on the support set at fit time
(``temperature="auto"``), or on held-out labelled data by ``calibrate``. It changes no label, only how sure the
probabilities are: with it, 0.9 means right nine times in ten (in expectation, on data like the support set).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import logsumexp

BINS = 15  # equal-width confidence bins of the expected calibration error


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(scores / T) at the true columns
    (convex in 1/T: a bounded search on the inverse temperature). Where every row's true class already scores
    highest, that likelihood only grows as T falls to 0, a certainty no finite sample shows: T then makes the mean
    probability of the true class (n + 1) / (n + 2), the accuracy n right answers out of n support (Laplace's rule
    of succession). Scores whose classes cannot be told apart (no spread) give the spread's scale."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    spread = float(np.std(scores))
    if not np.isfinite(spread) or spread <= 0:
        return 1.0
    rows = np.arange(len(scores))
    true_scores = scores[rows, truth]
    bounds = (-np.log(spread) - 12.0, -np.log(spread) + 12.0)
    others = scores.copy()
    others[rows, truth] = -np.inf
    if scores.shape[1] > 1 and (true_scores > others.max(axis=1)).all():
        target = (len(scores) + 1) / (len(scores) + 2)

        def shortfall(log_beta: float) -> float:  # rises with beta: every true class is the top one
            logits = np.exp(log_beta) * scores
            return float(np.mean(np.exp(logits[rows, truth] - logsumexp(logits, axis=1)))) - target

        if shortfall(bounds[1]) <= 0.0:
            return float(np.exp(-bounds[1]))
        if shortfall(bounds[0]) >= 0.0:
            return float(np.exp(-bounds[0]))
        return float(np.exp(-brentq(shortfall, *bounds, xtol=1e-6)))

    def nll(log_beta: float) -> float:
        beta = np.exp(log_beta)
        return float(np.mean(logsumexp(beta * scores, axis=1) - beta * true_scores))

    found = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(-found.x))


def as_logits(scores: np.ndarray, kind: str) -> np.ndarray:
    """Class scores as the logits a softmax divides: as they are ("scores"), or their logarithms ("log", for heads
    whose scores are sums of kernels: densities)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(scores, 1e-300)) if kind == "log" else scores


def score_spread(logits: np.ndarray) -> float:
    """How far apart the class scores of a row are, over rows: the root mean square of each row about its own mean,
    the scale a softmax reads (a shift of a row changes nothing)."""
    logits = np.asarray(logits, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(logits - logits.mean(axis=1, keepdims=True)))))


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.asarray(scores, dtype=np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


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
