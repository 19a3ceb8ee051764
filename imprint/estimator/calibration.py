"""Probabilities that mean what they say: the ``Calibration`` component (the classifier's softmax temperature and
what it divides), and the functions it is made of.

The temperature T of ``predict_proba`` (softmax of class scores / T) is chosen to minimise the negative
log-likelihood of the true classes of samples a model did not see: cross-fitted on the support set at fit time
(``temperature="auto"``), or on held-out labelled data by ``calibrate``. It changes no label, only how sure the
probabilities are: with it, 0.9 means right nine times in ten (in expectation, on data like the support set).
The component is the one home of the temperature, and owns its part of the classifier file (``calibration``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imprint.core.sampling import stratified_folds, stratified_sample
from imprint.core.settings import AUTO

if TYPE_CHECKING:
    from imprint.estimator.folds import FoldFitter
    from imprint.estimator.pipeline import Pipeline
    from imprint.estimator.tuning import Tuning

CALIBRATION_SAMPLE = 10_000  # the temperature's folds read every row up to this many, a stratified tenth above
CALIBRATION_FOLDS = 10  # the temperature's folds: models fitted on 90% of the support set score like the full one
CALIBRATION_ROWS = 600  # held-out scores enough for one temperature: folds beyond them are not fitted

LOG_FLOOR = 1e-30  # the least score a log is taken of: float32 holds it, so Python and an exported graph agree


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(scores / T) at the true columns
    (convex in 1/T: a bounded search on the inverse temperature). Where every row's true class already scores
    highest, that likelihood only grows as T falls to 0, a certainty no finite sample shows: T then makes the mean
    probability of the true class (n + 1) / (n + 2), the accuracy n right answers out of n support (Laplace's rule
    of succession). Scores whose classes cannot be told apart (no spread) give the spread's scale."""
    from scipy.optimize import brentq, minimize_scalar

    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    spread = float(np.std(scores))
    if not np.isfinite(spread) or spread <= 0:
        return 1.0
    rows = np.arange(len(scores))
    # Each row less its largest score, once: for beta > 0, log sum exp(beta s) = beta max(s) + log sum exp(beta
    # (s - max(s))), so a step of the search is one exp and one sum, in place (600 x 10,000 scores: 2.3 s a search,
    # against 8.3 s with scipy's logsumexp).
    top = scores.max(axis=1)
    shifted = scores - top[:, None]
    true_shifted = shifted[rows, truth]
    bounds = (-np.log(spread) - 12.0, -np.log(spread) + 12.0)

    buffer = np.empty_like(shifted)

    def log_normaliser(beta: float) -> np.ndarray:  # log sum exp(beta s) - beta max(s), per row
        np.multiply(shifted, beta, out=buffer)
        return np.log(np.exp(buffer, out=buffer).sum(axis=1))

    shifted[rows, truth] = -np.inf  # the true columns set aside to compare them with the others, then put back
    true_is_top = scores.shape[1] > 1 and bool((true_shifted > shifted.max(axis=1)).all())
    shifted[rows, truth] = true_shifted
    if true_is_top:
        target = (len(scores) + 1) / (len(scores) + 2)

        def shortfall(log_beta: float) -> float:  # rises with beta: every true class is the top one
            beta = np.exp(log_beta)
            return float(np.mean(np.exp(beta * true_shifted - log_normaliser(beta)))) - target

        if shortfall(bounds[1]) <= 0.0:
            return float(np.exp(-bounds[1]))
        if shortfall(bounds[0]) >= 0.0:
            return float(np.exp(-bounds[0]))
        return float(np.exp(-brentq(shortfall, *bounds, xtol=1e-6)))

    def nll(log_beta: float) -> float:
        beta = np.exp(log_beta)
        return float(np.mean(log_normaliser(beta) - beta * true_shifted))

    found = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(-found.x))


def as_logits(scores: Any, kind: str) -> Any:
    """Class scores as the logits a softmax divides: as they are ("scores"), or their logarithms ("log", for heads
    whose scores are sums of kernels: densities), floored at LOG_FLOOR. The one home of this transform: numpy
    arrays (as float64) for predict_proba and the temperature, torch tensors for ``to_torch`` and exported graphs."""
    if hasattr(scores, "clamp_min"):  # a torch tensor
        return scores.clamp_min(LOG_FLOOR).log() if kind == "log" else scores
    scores = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(scores, LOG_FLOOR)) if kind == "log" else scores


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


@dataclass
class Calibration:
    """The temperature of the classifier's probabilities and what it divides: the class scores ("scores") or
    their logarithms ("log", for a head whose scores are sums of kernels)."""

    temperature: float = 1.0
    logits: str = "scores"

    def probabilities(self, scores: Any) -> Any:
        """Calibrated probabilities from class scores (numpy, as predict_proba gives them)."""
        return softmax(as_logits(scores, self.logits), self.temperature)

    def refit(self, scores: np.ndarray, columns: np.ndarray) -> None:
        """The temperature fitted again to held-out labelled class scores (``ImprintClassifier.calibrate``)."""
        self.temperature = fit_temperature(as_logits(scores, self.logits), columns)

    @classmethod
    def fit(cls, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter, pipeline: Pipeline,
            tuning: Tuning, seed: int) -> Calibration:
        """With temperature="auto", the temperature of `pipeline` (fitted on X with the settings `tuning` chose),
        cross-fitted on the support set (``calibration_sample``: every row up to CALIBRATION_SAMPLE), since a model
        of more rows is more confident. It is fitted in units of each fold model's score spread and carried to
        `pipeline` in units of its own: a covariance head's scores grow with the rows it is fitted on (at 2 images
        per class a fold model, with one per class, scores 10^-4 as widely as the full model), and a temperature
        read off the fold models alone would make the full model far too confident. Otherwise the temperature given."""
        if params.get("temperature") != AUTO:
            return cls(float(params.get("temperature", 1.0)))
        sample = calibration_sample(codes, seed)
        rows = _Rows(X, sample)
        temperature, logits, fold_spread = _temperature({**tuning.resolved(params), "temperature": 1.0}, rows,
                                                        codes if sample is None else codes[sample], folds, seed)
        if fold_spread is not None:
            scored = rows.take(random_rows(len(rows), CALIBRATION_ROWS, seed))
            spread = score_spread(as_logits(pipeline.class_scores(scored), logits))
            temperature *= spread if np.isfinite(spread) and spread > 0 else fold_spread
        return cls(float(temperature), logits)

    def state(self) -> dict[str, Any]:
        """Its part of a classifier file."""
        return {"calibration": {"temperature": self.temperature, "logits": self.logits}}

    @classmethod
    def restore(cls, meta: dict[str, Any], params: dict[str, Any]) -> Calibration:
        """The component a file records (files before imprint 0.3 kept it among the tuned values)."""
        saved = meta.get("calibration")
        if saved is None:
            tuned = meta.get("tuned") or {}
            saved = {"temperature": tuned.get("temperature", params.get("temperature")),
                     "logits": tuned.get("probability_logits", "scores")}
        temperature = saved["temperature"]
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0 or \
                saved.get("logits") not in ("scores", "log"):
            raise ValueError("its calibration must be a positive temperature and 'scores' or 'log'")
        return cls(float(temperature), saved["logits"])


def calibration_sample(codes: np.ndarray, seed: int) -> np.ndarray | None:
    """Positions of the rows the temperature is cross-fitted on: all of them (None) up to CALIBRATION_SAMPLE, else
    a seeded stratified tenth of them, at least CALIBRATION_SAMPLE and three of every class. So the fold model
    costs at most a fifth of the fit from 50,000 rows (a tenth from 100,000), while it still sees as many rows of
    a class as a fit on 10,000 rows would."""
    return stratified_sample(codes, max(CALIBRATION_SAMPLE, len(codes) // 10), seed)


class _Rows:
    """Rows of X at `positions` (all of them where None), read from X when asked for, never copied whole."""

    def __init__(self, X: np.ndarray, positions: np.ndarray | None) -> None:
        self.X, self.positions = X, positions

    def __len__(self) -> int:
        return len(self.X) if self.positions is None else len(self.positions)

    def take(self, which: np.ndarray | None) -> np.ndarray:
        """Rows `which` of these (a boolean mask or positions; all of them where None)."""
        if self.positions is None:
            return self.X if which is None else self.X[which]
        return self.X[self.positions if which is None else self.positions[which]]


def _temperature(settings: dict[str, Any], X: _Rows, codes: np.ndarray, folds: FoldFitter,
                 seed: int) -> tuple[float, str, float | None]:
    """The softmax temperature that makes the cross-fitted class scores of the support set calibrated (their
    negative log-likelihood least), what it divides: the scores, or their logarithms where that is more likely
    still (a head whose scores are sums of kernels, as Tip-Adapter's, is a density: its log is a logit), and,
    where the fold models were fitted, the temperature in units of each one's score spread on its own rows
    with their mean spread (else None: the temperature as it is). Where nothing can be held out, a third of the
    spread of the scores. Only as many folds are fitted as give CALIBRATION_ROWS held-out scores (all ten up
    to 600 support rows; three of ten at 2,000), and a fold model holding out more rows than that scores a random
    CALIBRATION_ROWS of them (above 6,000 rows: at 200,000 x 512 with 2,000 classes, whose sample of 20,000 rows
    holds out 2,000 a fold, 600 rows are scored, and the temperature's search reads 600 x 2,000 scores). `X`: the
    rows of ``calibration_sample``, which `codes` label. A ridge head, whose
    shared statistics score a fold's held-out rows without a fit, scores its fold whole."""
    smallest = int(np.bincount(codes).min())
    if smallest < 2:
        every = X.take(None)
        scores = folds.fit(every, codes, settings).class_scores(every)
        return (float(np.std(scores) / 3.0) if np.std(scores) > 0 else 1.0), "scores", None
    assignment = stratified_folds(codes, min(CALIBRATION_FOLDS, smallest), seed)
    held, own, truth, held_out = [], [], [], 0
    shared = folds.shared(X.X, codes, settings, X.positions)
    for f in np.unique(assignment):
        if held_out >= CALIBRATION_ROWS:
            break
        train, test = assignment != f, assignment == f
        if shared is not None:  # ridge heads: their scores' scale does not grow with their rows
            present, (fold_scores,) = shared.scores(test, [settings[shared.setting]])
            held.append(fold_scores.float().cpu().numpy())
        else:
            model = folds.fit(X.take(train), codes[train], settings)
            present = model.present
            positions = np.flatnonzero(test)
            some = random_rows(len(positions), CALIBRATION_ROWS - held_out, seed)
            if some is not None:
                test = np.zeros_like(test)
                test[positions[some]] = True
            held.append(model.held_out_scores(X.take(test)))
            rows = np.flatnonzero(train)
            some = random_rows(len(rows), CALIBRATION_ROWS, seed)
            own.append(model.held_out_scores(X.take(rows if some is None else rows[some])))
        truth.append(np.searchsorted(present, codes[test]))
        held_out += int(test.sum())
    truth = np.concatenate(truth)
    candidates = ["scores"] + (["log"] if all((scores > 0).all() for scores in held + own) else [])
    best = None
    for logits in candidates:
        spreads = [score_spread(as_logits(scores, logits)) for scores in own]
        relative = bool(own) and all(np.isfinite(spread) and spread > 0 for spread in spreads)
        fold_logits = np.concatenate([as_logits(scores, logits) / (spreads[i] if relative else 1.0)
                                      for i, scores in enumerate(held)])
        loss, temperature = _fitted_temperature(fold_logits, truth)
        if best is None or loss < best[0]:
            best = (loss, temperature, logits, float(np.mean(spreads)) if relative else None)
    return best[1:]


def random_rows(n: int, wanted: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded random `wanted` of n rows, or None where n is no more (all of them). The
    temperature's scores are sampled so, not by class: with 10,000 classes a sample with rows of every class would
    score 10,000 x 10,000."""
    return None if n <= wanted else np.sort(np.random.default_rng(seed).choice(n, wanted, replace=False))


def _fitted_temperature(logits: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The best temperature for `logits`, and the mean negative log-likelihood of the true classes there."""
    temperature = fit_temperature(logits, truth)
    probs = softmax(logits, temperature)
    return float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-300)).mean()), temperature
