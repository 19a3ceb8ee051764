"""Tests of ``imprint.estimator.calibration``: probabilities that mean what they say: the ``Calibration`` component
(the classifier's softmax temperature and what it divides), and the functions it is made of."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.estimator.calibration import fit_temperature, softmax
from imprint.workflows.evaluate import expected_calibration_error


def test_a_fitted_temperature_is_the_likelihood_s_and_improves_calibration(real_embeddings):
    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    support = np.concatenate([np.flatnonzero(ys == c)[:32] for c in range(10)])
    fixed = ImprintClassifier.from_preset("gda", temperature=0.01).fit(Xs[support], ys[support])
    fitted = ImprintClassifier.from_preset("gda").fit(Xs[support], ys[support])
    assert fitted.temperature_ > 0
    before = expected_calibration_error(fixed.predict_proba(Xq), yq)
    after = expected_calibration_error(fitted.predict_proba(Xq), yq)
    assert after < before and after < 0.06, (before, after)
    np.testing.assert_array_equal(fixed.predict(Xq), fitted.predict(Xq))  # labels unchanged
    scores = fitted.decision_function(Xq)  # the held-out optimum by calibrate() beats both neighbours
    t = fitted.calibrate(Xq, yq).temperature_
    assert t == pytest.approx(fit_temperature(scores, yq), rel=1e-6)
    nll = [-np.log(softmax(scores, t * f)[np.arange(len(yq)), yq]).mean() for f in (0.8, 1.0, 1.25)]
    assert nll[1] <= nll[0] and nll[1] <= nll[2]


def test_the_temperature_carries_to_the_full_model_in_units_of_its_score_spread(real_embeddings):
    """At 2 images per class a GDA fold model (one per class) scores about 10^-4 as widely as the full model: a
    temperature read off the fold models made the full model certain of every answer. Fitted in units of each
    model's score spread, it is near the one the test images want, and so is the calibration error."""
    from imprint.estimator.calibration import score_spread

    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    support = np.concatenate([np.flatnonzero(ys == c)[:2] for c in range(10)])
    clf = ImprintClassifier.from_preset("gda", shrinkage=0.05).fit(Xs[support], ys[support])
    scores = clf.decision_function(Xq)
    best = fit_temperature(scores, yq)
    t = clf.temperature_
    assert best / 3 < t < best * 3, (t, best)
    assert expected_calibration_error(clf.predict_proba(Xq), yq) < 0.15
    unit = t / score_spread(clf.decision_function(Xs[support]))  # the same temperature in units of the spread
    assert 0.01 < unit < 10


def test_held_out_scores_all_right_give_the_rule_of_succession_not_certainty():
    """Where every held-out row's true class scores highest, the likelihood grows as T falls to 0; the temperature
    instead makes the mean probability of the true class (n + 1) / (n + 2). One wrong row: the likelihood's."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 48)
    scores = rng.normal(size=(48, 3))
    scores[np.arange(48), truth] += 5.0
    t = fit_temperature(scores, truth)
    assert softmax(scores, t)[np.arange(48), truth].mean() == pytest.approx(49 / 50, abs=1e-5)
    scores[0, truth[0]] -= 20.0  # now wrong
    t = fit_temperature(scores, truth)
    nll = [-np.log(softmax(scores, t * f)[np.arange(48), truth]).mean() for f in (0.8, 1.0, 1.25)]
    assert nll[1] <= nll[0] and nll[1] <= nll[2]


def test_the_temperature_scores_only_as_many_held_out_rows_as_it_needs(monkeypatch):
    """A fold of 20,000 support rows holds out 2,000: the temperature scores a random CALIBRATION_ROWS of them,
    and CALIBRATION_ROWS of the fold's own rows for its score spread (not some of every class)."""
    from conftest import mixture_embeddings

    from imprint.estimator import calibration
    from imprint.estimator.folds import FoldModel

    X, y = mixture_embeddings(n_classes=10, per_class=2_000, dim=16)
    scored: list[int] = []
    held_out_scores = FoldModel.held_out_scores
    monkeypatch.setattr(FoldModel, "held_out_scores", lambda self, rows: scored.append(len(rows)) or
                        held_out_scores(self, rows))
    clf = ImprintClassifier(generation="mean", device="cpu").fit(X, y)
    # per fold: the held-out rows, then at most CALIBRATION_ROWS of its own rows for its score spread
    assert scored == [calibration.CALIBRATION_ROWS] * 2
    assert 0 < clf.temperature_ < np.inf
    assert calibration.random_rows(4, 5, 0) is None
    some = calibration.random_rows(10, 3, 0)
    assert len(set(some)) == 3 and (some == np.sort(some)).all() and (some == calibration.random_rows(10, 3, 0)).all()


@pytest.mark.parametrize("rows, fitted_on", [(8_000, 7_200), (12_000, 9_000), (200_000, 18_000)])
def test_the_temperature_is_cross_fitted_on_every_row_up_to_10000_and_on_a_tenth_above(monkeypatch, rows, fitted_on):
    """Up to CALIBRATION_SAMPLE rows a fold model holds out a tenth of them; above, it is fitted on 90% of a
    stratified sample of max(10,000, a tenth of the rows), so the temperature costs a fifth of the fit at most from
    50,000 rows on. The fold's rows are taken from the support set as they are (float16 stays float16)."""
    from conftest import mixture_embeddings

    from imprint.estimator.folds import FoldFitter

    X, y = mixture_embeddings(n_classes=10, per_class=rows // 10, dim=8)
    X = X.astype(np.float16)
    fitted: list[tuple[int, np.dtype, np.ndarray]] = []
    fit = FoldFitter.fit
    monkeypatch.setattr(FoldFitter, "fit", lambda self, rows, codes, settings: fitted.append(
        (len(rows), rows.dtype, np.bincount(codes))) or fit(self, rows, codes, settings))
    clf = ImprintClassifier(generation="mean", device="cpu").fit(X, y)
    assert [(n, dtype) for n, dtype, _ in fitted] == [(fitted_on, np.float16)]  # one fold: 600 rows held out
    assert (fitted[0][2] == fitted_on // 10).all()  # every class in proportion
    assert 0 < clf.temperature_ < np.inf
