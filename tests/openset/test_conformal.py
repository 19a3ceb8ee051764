"""Tests of ``imprint.openset.conformal``: split-conformal thresholds and prediction sets from calibration scores of
in-distribution data alone."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.openset.conformal import minimum_samples, threshold


def test_the_conformal_threshold_keeps_the_rejection_rate():
    rng = np.random.default_rng(0)
    rates = []
    for trial in range(400):  # exchangeable scores: calibration and new known-class queries from one law
        scores = rng.normal(size=59)
        rates.append((rng.normal(size=200) > threshold(scores, 0.05)).mean())
    assert np.mean(rates) <= 0.05 + 0.005 and np.mean(rates) > 0.03
    assert minimum_samples(0.05) == 19 and threshold(np.arange(18.0), 0.05) == np.inf
    assert threshold(np.arange(19.0), 0.05) == 18.0


def test_conformal_prediction_sets_cover_the_true_class(mixture):
    X, y = mixture
    fit_rows = np.arange(len(y)) % 2 == 0
    clf = ImprintClassifier(generation="mean", reject="max_score").fit(X[fit_rows], y[fit_rows])
    for alpha in (0.05, 0.2):
        sets = clf.predict_set(X[~fit_rows], alpha)
        assert sets.shape == (int((~fit_rows).sum()), 6) and sets.any(axis=1).all()
        covered = sets[np.arange(len(sets)), np.searchsorted(clf.classes_, y[~fit_rows])]
        assert covered.mean() >= 1 - alpha - 0.05
    assert clf.predict_set(X[~fit_rows], 0.2).sum() <= clf.predict_set(X[~fit_rows], 0.05).sum()
    with pytest.raises(ValueError, match="predict_set needs conformal calibration"):
        ImprintClassifier().fit(X, y).predict_set(X)
    plain = ImprintClassifier(generation="mean").fit(X[fit_rows], y[fit_rows]).calibrate(X[~fit_rows][::2],
                                                                                        y[~fit_rows][::2])
    assert plain.predict_set(X[~fit_rows][1::2], 0.1).any(axis=1).all()
