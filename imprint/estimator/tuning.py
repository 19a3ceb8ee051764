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

The component ``Tuning`` owns what was chosen and its part of a classifier file: the values chosen (``tuned``: the
classifier's ``tuned_``, settings only), the rule of a rule-chosen setting (``proxy_ratio``) and how the choice was
made (``tuning``: the chosen method's cross-validated accuracy, the rows of the sample it was chosen on). The
temperature is calibrated after the fit, by ``imprint.estimator.calibration``.
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
from imprint.estimator.configuration import TEXT_ALPHA, chooses_method, with_method
from imprint.estimator.folds import FoldFitter
from imprint.stages.auto_k import ProxyRatio

FOLDS = 3
REPORT = ("method_cv_accuracy", "tuned_on_rows")  # how a choice was made (kept in the file, not settings)
SETTING_ROWS = 2_000  # settings and the method are chosen on a stratified sample of this many support rows at most


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
    report: dict[str, Any] = field(default_factory=dict)  # how the choice was made: method_cv_accuracy, tuned_on_rows

    @classmethod
    def run(cls, params: dict[str, Any], X: np.ndarray, codes: np.ndarray, folds: FoldFitter,
            seed: int) -> Tuning:
        """Choose every "auto" setting of `params` on the support rows X (class codes `codes`), fitting pipelines
        on folds with `folds` (which carries the zero-shot text, if any); with method="auto", the method too.

        Settings and the method are chosen on at most SETTING_ROWS rows (a seeded stratified sample: ranking a
        handful of candidates needs no more, and cross-validating them all on 10,000 rows cost 8x a fit), a value
        whose best depends on the number of rows carried to the whole set (``Setting.carry``). The temperature
        comes once the pipeline is fitted (``imprint.estimator.calibration``)."""
        sample = stratified_sample(codes, SETTING_ROWS, seed)
        chosen_on = (X, codes) if sample is None else (X[sample], codes[sample])
        tuning = cls._choose_method(params, *chosen_on, folds, seed) if chooses_method(params) else \
            cls._run(params, *chosen_on, folds, seed)
        if sample is not None:
            tuning._carry(len(sample), len(codes))
        return tuning

    def _carry(self, rows: int, total: int) -> None:
        """Values chosen on a sample of `rows` rows, for the whole set of `total`; the sample's size recorded."""
        for name, value in self.values.items():
            carry = SETTINGS[name].carry if name in SETTINGS else None
            if carry is not None:
                self.values[name] = carry(value, total / rows)
        if self.values or self.rules:
            self.report["tuned_on_rows"] = rows

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
        tuning.values = {"method": method, **tuning.values}
        tuning.report["method_cv_accuracy"] = round(accuracies[method], 6)
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

            tuning.rules[name] = SETTINGS[name].chooser()(codes, score, seed=seed)
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
        settings); the temperature is the calibration's."""
        return {**params, **self.base, **self.values, **self.rules}

    def for_folds(self, params: dict[str, Any], counts: np.ndarray, n_folds: int) -> dict[str, Any]:
        """The settings of models fitted on all folds but one (calibration): a rule gives one value for them."""
        return {**self.resolved(params), **{name: rule.for_fold(counts, n_folds) for name, rule in self.rules.items()}}

    def state(self) -> dict[str, Any]:
        """Its part of a classifier file."""
        ratio = next((rule.ratio for rule in self.rules.values() if isinstance(rule, ProxyRatio)), None)
        return {"tuned": dict(self.values), "proxy_ratio": ratio, "tuning": dict(self.report)}

    @classmethod
    def restore(cls, meta: dict[str, Any], params: dict[str, Any]) -> Tuning:
        """The component saved by ``state`` (the rule-chosen settings of `params` get the saved ratio). A file
        before imprint 0.3 kept the report and the temperature among the tuned values: they are sorted out here
        (the temperature is the calibration's)."""
        recorded = dict(meta.get("tuned") or {})
        values = {name: value for name, value in recorded.items() if name in SETTINGS and name != "temperature"}
        report = {**{name: recorded[name] for name in REPORT if name in recorded}, **(meta.get("tuning") or {})}
        method = values.get("method")
        base = dict(PRESETS[method].settings) if method in PRESETS and chooses_method(params) else {}
        settings = {**params, **base}
        rules = {}
        if meta.get("proxy_ratio") is not None:
            rules = {name: ProxyRatio(float(meta["proxy_ratio"]))
                     for name in rule_settings(settings, SETTINGS.active(settings))}
        return cls(values, rules, base=base, report=report)
