"""``"auto"`` settings chosen on the support set alone, by stratified cross-validation. Never on test images.

Each setting that accepts "auto" declares how it is chosen: ``Setting.tunable`` lists candidates, tried by
cross-validated accuracy (shrinkage, ridge lambda, beta, projection width, the text weight), or
``Setting.choose`` is the setting's own rule (k: proxies per support sample, ``imprint.stages.auto_k``). Candidate
settings are chosen one after another, in pipeline order: for each candidate, pipelines are fitted on all folds
but one and scored on the held-out fold; the best mean accuracy wins (the earliest on ties). While one setting
is tuned, the ones not yet chosen take their middle candidate (a rule-chosen setting its default), so no fit
inside the search searches again. The head's settings are chosen for the head alone (text weight 0), then the
text weight for that head, so a chosen weight of 0 gives exactly the head a fit without text gives. Rules are
chosen last, with the other settings fixed.

The component ``Tuning`` owns what was chosen and its part of a classifier file (``tuned``, ``proxy_ratio``).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imprint.core.presets import AUTO_CANDIDATES, PRESETS
from imprint.core.sampling import stratified_folds, stratified_sample
from imprint.core.settings import AUTO, SETTINGS, PerClassRule
from imprint.estimator.calibration import as_logits, fit_temperature, score_spread
from imprint.estimator.configuration import chooses_method, with_method
from imprint.estimator.pipeline import FoldFitter, Pipeline
from imprint.estimator.text_blend import TEXT_ALPHA
from imprint.stages.auto_k import ProxyRatio

FOLDS = 3
SETTING_ROWS = 2_000  # settings and the method are chosen on a stratified sample of this many support rows at most
CALIBRATION_SAMPLE = 50_000  # the temperature's folds read a stratified sample of this many rows at most (memory)
CALIBRATION_FOLDS = 10  # the temperature's folds: models fitted on 90% of the support set score like the full one
CALIBRATION_ROWS = 600  # held-out scores enough for one temperature: folds beyond them are not fitted


def candidates(name: str, n_samples: int, n_features: int, n_classes: int) -> list[Any]:
    """The values tried for setting `name` on a support set of this shape."""
    return list(SETTINGS[name].tunable(n_samples=n_samples, n_features=n_features, n_classes=n_classes))


def provisional(name: str, n_samples: int, n_features: int, n_classes: int) -> Any:
    """The value a setting takes while others are tuned (and when there is too little data to tune)."""
    values = candidates(name, n_samples, n_features, n_classes)
    return values[len(values) // 2]


Scorer = Callable[[str, list[Any], dict[str, Any], np.ndarray], np.ndarray]


def tune(names: list[str], codes: np.ndarray, n_features: int, score: Scorer,
         seed: int = 0) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Values for the settings `names` (all at "auto") and the mean cross-validated accuracy of every candidate.

    `score(name, candidates, values, assignment)` fits with the given setting values (`name` taking each of
    `candidates` in turn) on every fold of `assignment` (each row's fold number) but one and returns, per fold,
    the accuracy of each candidate on the held-out fold: so a stage that can score all candidates from one fit (a
    covariance decomposed once, a Gram matrix computed once), or all folds from one pass, does. With fewer than
    two samples in some class, nothing can be held out: the settings take their middle candidate and a warning
    says so.
    """
    shape = dict(n_samples=len(codes), n_features=n_features, n_classes=int(codes.max()) + 1)
    chosen = {name: provisional(name, **shape) for name in names}
    smallest = int(np.bincount(codes).min())
    if smallest < 2:
        warnings.warn(f"too few support samples to tune {', '.join(names)} (a class has {smallest}); using "
                      + ", ".join(f"{n}={v!r}" for n, v in chosen.items()), stacklevel=4)
        return chosen, {}
    folds = stratified_folds(codes, min(FOLDS, smallest), seed)
    trace: dict[str, list[float]] = {}
    for name in names:
        values = candidates(name, **shape)
        accuracies = np.mean(score(name, values, chosen, folds), axis=0)
        chosen[name] = values[int(np.argmax(accuracies))]
        trace[name] = [float(a) for a in accuracies]
    return chosen, trace


def _fold_accuracies(folds: FoldFitter, X: np.ndarray, codes: np.ndarray, name: str, values: list[Any],
                     settings: dict[str, Any], train: np.ndarray, test: np.ndarray) -> list[float]:
    """The held-out accuracy of each value of `name` after a fit on the train rows: every value from one fit
    where the pipeline can score them so, else a fit per value."""
    fold = folds.fit(X[train], codes[train], {**settings, name: values[0]})
    truth = codes[test]
    predicted = fold.candidate_predictions(name, values, X[test])
    if predicted is None:
        predicted = [fold.predict(X[test])] + [folds.fit(X[train], codes[train], {**settings, name: value}).predict(
            X[test]) for value in values[1:]]
    return [float((p == truth).mean()) for p in predicted]


def _shared_accuracies(folds: FoldFitter, X: np.ndarray, codes: np.ndarray, name: str, values: list[Any],
                       settings: dict[str, Any], assignment: np.ndarray) -> np.ndarray | None:
    """Per fold, the held-out accuracy of each value of `name`, from statistics every fold shares (one pass over
    the support set per value that changes them: candidates outside, folds inside, so one set is kept at a
    time); None where the pipeline cannot share them (``FoldFitter.shared``)."""
    shared = folds.shared(X, codes, {**settings, name: values[0]})
    if shared is None:
        return None
    setting = shared.setting  # the setting the statistics score every value of in one go (the ridge values)
    if name == setting:
        runs = [(values, slice(None), values[0])]
    else:  # a set of statistics per value, each scored at the current value of `setting`
        runs = [([settings[setting]], slice(j, j + 1), value) for j, value in enumerate(values)]
    fold_ids = np.unique(assignment)
    accuracies = np.empty((len(fold_ids), len(values)))
    for scored, columns, value in runs:
        shared = folds.shared(X, codes, {**settings, name: value})  # the first kept from above, then each replaced
        shared.prepare(assignment)
        for i, f in enumerate(fold_ids):
            test = assignment == f
            present, scores = shared.scores(test, scored, (assignment, f))
            accuracies[i, columns] = [float((present[s.argmax(1).cpu().numpy()] == codes[test]).mean())
                                      for s in scores]
        shared = None  # let go before the next value's statistics are computed
    return accuracies


def within_one_standard_error(accuracies: dict[str, float], held_out: int) -> str:
    """The first method (in the order given: the preferred first) whose cross-validated accuracy is within one
    standard error of the best one's, sqrt(a (1 - a) / n) over the `held_out` predictions it was measured on:
    the one-standard-error rule of cross-validation (Breiman et al. 1984). Few held-out images cannot tell
    methods a point or two apart, and picking the noisy best costs more than it gains; the rule keeps the
    preferred method unless another is better by more than the noise."""
    best = max(accuracies.values())
    margin = float(np.sqrt(best * (1.0 - best) / max(held_out, 1)))
    return next(method for method, accuracy in accuracies.items() if accuracy >= best - margin - 1e-12)


def _fitted_temperature(logits: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The best temperature for `logits`, and the mean negative log-likelihood of the true classes there."""
    from imprint.estimator.calibration import softmax

    temperature = fit_temperature(logits, truth)
    probs = softmax(logits, temperature)
    return float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-300)).mean()), temperature


def auto_settings(params: dict[str, Any], active: list[str]) -> list[str]:
    """The active settings left at "auto" that are chosen among candidates by cross-validated accuracy."""
    return SETTINGS.in_pipeline_order(name for name in active if params.get(name) == AUTO
                                      and SETTINGS[name].tunable and SETTINGS[name].choose is None)


def rule_settings(params: dict[str, Any], active: list[str]) -> list[str]:
    """The active settings left at "auto" that are chosen by their own rule."""
    return [name for name in active if params.get(name) == AUTO and SETTINGS[name].choose is not None]


@dataclass
class Tuning:
    """What was chosen on the support set: values by cross-validation (`values`, the classifier's ``tuned_``),
    rules (`rules`, e.g. k="auto"'s proxies per sample) and the cross-validated accuracy of every candidate."""

    values: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, PerClassRule] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)  # the chosen method's settings (method="auto")
    method_scores: dict[str, float] = field(default_factory=dict)  # each method's cross-validated accuracy

    @classmethod
    def run(cls, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
            seed: int) -> Tuning:
        """Choose every "auto" setting of `params` on the support rows X (class codes `codes`), fitting pipelines
        on folds with `folds` (which carries the zero-shot text, if any); with method="auto", the method too.

        Settings and the method are chosen on at most SETTING_ROWS rows (a seeded stratified sample: ranking a
        handful of candidates needs no more, and cross-validating them all on 10,000 rows cost 8x a fit), a value
        whose best depends on the number of rows carried to the whole set (``Setting.carry``). The temperature
        comes once the pipeline is fitted (``calibrate``)."""
        sample = stratified_sample(codes, SETTING_ROWS, seed)
        chosen_on = (X, codes) if sample is None else (X[sample], codes[sample])
        tuning = cls._choose_method(params, *chosen_on, folds, seed) if chooses_method(params) else \
            cls._run(params, *chosen_on, folds, seed)
        if sample is not None:
            tuning._carry(len(sample), len(codes))
        return tuning

    def calibrate(self, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
                  pipeline: Pipeline, seed: int) -> None:
        """With temperature="auto", the temperature of `pipeline` (fitted on X with the chosen settings), cross-fitted
        on the whole support set (up to CALIBRATION_SAMPLE rows), since a model of more rows is more confident.
        It is fitted in units of each fold model's score spread and carried to `pipeline` in units of its own: a
        covariance head's scores grow with the rows it is fitted on (at 2 images per class a fold model, with one
        per class, scores 10^-4 as widely as the full model), and a temperature read off the fold models alone
        would make the full model far too confident."""
        if params.get("temperature") != AUTO:
            return
        calibration = stratified_sample(codes, CALIBRATION_SAMPLE, seed)
        if calibration is not None:
            X, codes = np.ascontiguousarray(X[calibration], dtype=np.float32), codes[calibration]
        temperature, logits, fold_spread = self._temperature(params, X, codes, folds, seed)
        if fold_spread is not None:
            rows = stratified_sample(codes, CALIBRATION_ROWS, seed)
            spread = score_spread(as_logits(pipeline.class_scores(X if rows is None else X[rows]), logits))
            temperature *= spread if np.isfinite(spread) and spread > 0 else fold_spread
        self.values["temperature"] = temperature
        if logits != "scores":
            self.values["probability_logits"] = logits

    def _carry(self, rows: int, total: int) -> None:
        """Values chosen on a sample of `rows` rows, for the whole set of `total`; the sample's size recorded."""
        for name, value in self.values.items():
            carry = SETTINGS[name].carry if name in SETTINGS else None
            if carry is not None:
                self.values[name] = carry(value, total / rows)
        if self.values or self.rules:
            self.values["tuned_on_rows"] = rows

    def _temperature(self, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
                     seed: int) -> tuple[float, str, float | None]:
        """The softmax temperature that makes the cross-fitted class scores of the support set calibrated (their
        negative log-likelihood least), what it divides: the scores, or their logarithms where that is more likely
        still (a head whose scores are sums of kernels, as Tip-Adapter's, is a density: its log is a logit), and,
        where the fold models were fitted, the temperature in units of each one's score spread on its own rows
        with their mean spread (else None: the temperature as it is). Where nothing can be held out, a third of the
        spread of the scores. Only as many folds are fitted as give CALIBRATION_ROWS held-out scores (all ten up
        to 600 support rows; three of ten at 2,000)."""
        settings = {**self.resolved(params), "temperature": 1.0}
        smallest = int(np.bincount(codes).min())
        if smallest < 2:
            scores = folds.fit(X, codes, settings).class_scores(X)
            return (float(np.std(scores) / 3.0) if np.std(scores) > 0 else 1.0), "scores", None
        assignment = stratified_folds(codes, min(CALIBRATION_FOLDS, smallest), seed)
        held, own, truth, held_out = [], [], [], 0
        shared = folds.shared(X, codes, settings)
        for f in np.unique(assignment):
            if held_out >= CALIBRATION_ROWS:
                break
            train, test = assignment != f, assignment == f
            if shared is not None:  # ridge heads: their scores' scale does not grow with their rows
                present, (fold_scores,) = shared.scores(test, [settings[shared.setting]])
                held.append(fold_scores.float().cpu().numpy())
            else:
                model = folds.fit(X[train], codes[train], settings)
                present = model.present
                held.append(model.held_out_scores(X[test]))
                rows = np.flatnonzero(train)
                sample = stratified_sample(codes[rows], CALIBRATION_ROWS, seed)
                own.append(model.held_out_scores(X[rows if sample is None else rows[sample]]))
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

    @classmethod
    def _choose_method(cls, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
                       seed: int) -> Tuning:
        """The method (a preset) chosen by cross-validated accuracy on the support set, each with its own "auto"
        settings chosen on the same folds (method and settings chosen together, as a grid search over both
        would): the earliest of AUTO_CANDIDATES (strongest first on the Table 1 grid) whose accuracy is within one
        standard error of the best (``within_one_standard_error``); the first where nothing can be held out."""
        smallest = int(np.bincount(codes).min())
        if smallest < 2:
            warnings.warn(f"too few support samples to choose the method (a class has {smallest}); using "
                          f"{AUTO_CANDIDATES[0]}", stacklevel=4)
        tunings, accuracies = {}, {}
        for method in AUTO_CANDIDATES if smallest >= 2 else AUTO_CANDIDATES[:1]:
            candidate = with_method(params, method)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # said once above, not once per method
                tunings[method] = cls._run(candidate, X, codes, folds, seed)
            accuracies[method] = tunings[method]._accuracy(candidate, X, codes, folds, seed) if smallest >= 2 \
                else float("nan")
        method = within_one_standard_error(accuracies, len(codes)) if smallest >= 2 else AUTO_CANDIDATES[0]
        tuning = tunings[method]
        tuning.values = {"method": method, "method_cv_accuracy": round(accuracies[method], 6), **tuning.values}
        tuning.base = dict(PRESETS[method].settings)
        tuning.method_scores = accuracies
        return tuning

    def _accuracy(self, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
                  seed: int) -> float:
        """The cross-validated accuracy of `params` with what was chosen: the best score of the last setting tuned
        (the others then stood at their chosen values), else one fit per fold."""
        if self.scores:
            return float(max(list(self.scores.values())[-1]))
        settings = self.resolved(params)
        assignment = stratified_folds(codes, min(FOLDS, int(np.bincount(codes).min())), seed)
        return float(np.mean([(folds.fit(X[assignment != f], codes[assignment != f], settings).predict(
            X[assignment == f]) == codes[assignment == f]).mean() for f in np.unique(assignment)]))

    @classmethod
    def _run(cls, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
             seed: int) -> Tuning:
        active = SETTINGS.active(params)
        names = [name for name in auto_settings(params, active)
                 if name != TEXT_ALPHA.name or folds.text_weights is not None]
        rules = rule_settings(params, active)
        tuning = cls()
        tuning._choose_values(params, names, rules, X, codes, folds, seed)
        for name in rules:
            def score(value: Any, train: np.ndarray, test: np.ndarray, name: str = name) -> float:
                settings = {**params, **tuning.values, name: value}
                return float((folds.fit(X[train], codes[train], settings).predict(X[test]) == codes[test]).mean())

            tuning.rules[name] = SETTINGS[name].choose(codes, score, seed=seed)
        return tuning

    def _choose_values(self, params: dict[str, Any], names: list[str], rules: list[str], X: np.ndarray,
                       codes: np.ndarray, folds: FoldFitter, seed: int) -> None:
        blend = [name for name in names if name == TEXT_ALPHA.name]
        stages = [([name for name in names if name not in blend], {TEXT_ALPHA.name: 0.0} if blend else {}),
                  (blend, {})]
        if np.bincount(codes).min() < 2:  # nothing can be held out: every setting its middle value, one warning
            stages = [(names, {})]
        fixed = {name: SETTINGS[name].default for name in rules}  # folds do not search a rule-chosen setting
        for group, held in stages:
            if not group:
                continue

            def score(name: str, values: list[Any], current: dict[str, Any], assignment: np.ndarray,
                      held: dict[str, Any] = held) -> np.ndarray:
                settings = {**params, **fixed, **self.values, **current, **held}
                shared = _shared_accuracies(folds, X, codes, name, values, settings, assignment)
                if shared is not None:
                    return shared
                return np.array([_fold_accuracies(folds, X, codes, name, values, settings, assignment != f,
                                                  assignment == f) for f in np.unique(assignment)])

            values, scores = tune(group, codes, X.shape[1], score, seed=seed)
            self.values.update(values)
            self.scores.update(scores)

    def resolved(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with every "auto" replaced by what was chosen (with method="auto", the chosen method's
        settings)."""
        values = {name: value for name, value in self.values.items() if name in SETTINGS}
        return {**params, **self.base, **values, **self.rules}

    def for_folds(self, params: dict[str, Any], counts: np.ndarray, n_folds: int) -> dict[str, Any]:
        """The settings of models fitted on all folds but one (calibration): a rule gives one value for them."""
        return {**self.resolved(params), **{name: rule.for_fold(counts, n_folds) for name, rule in self.rules.items()}}

    def state(self) -> dict[str, Any]:
        """Its part of a classifier file."""
        ratio = next((rule.ratio for rule in self.rules.values() if isinstance(rule, ProxyRatio)), None)
        return {"tuned": dict(self.values), "proxy_ratio": ratio}

    @classmethod
    def restore(cls, meta: dict[str, Any], params: dict[str, Any]) -> Tuning:
        """The component saved by ``state`` (the rule-chosen settings of `params` get the saved ratio)."""
        values = dict(meta.get("tuned") or {})
        method = values.get("method")
        base = dict(PRESETS[method].settings) if method in PRESETS and chooses_method(params) else {}
        settings = {**params, **base}
        rules = {}
        if meta.get("proxy_ratio") is not None:
            rules = {name: ProxyRatio(float(meta["proxy_ratio"]))
                     for name in rule_settings(settings, SETTINGS.active(settings))}
        return cls(values, rules, base=base)
