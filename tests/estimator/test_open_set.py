"""Tests of ``imprint.estimator.open_set``: the open-set component of a classifier: a rejection score fitted on the
support set, its conformal threshold at the chosen rate, and the conformal margins of the label sets, all
calibrated on scores of support samples from models that did not see them (cross-fitted folds, or leave-one-out
where that is exact)."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.openset import REJECTORS


def test_unknown_labels_follow_the_class_type_and_can_be_set(mixture):
    X, y = mixture
    names = np.array([f"class {c}" for c in y])
    clf = ImprintClassifier(generation="mean", reject="max_score", reject_rate=0.2).fit(X[y < 5], names[y < 5])
    assert "unknown" in set(clf.predict(X[y == 5]).tolist())
    custom = ImprintClassifier(generation="mean", reject="max_score", unknown_label="none of these").fit(
        X[y < 5], names[y < 5])
    assert set(custom.predict(X[y == 5]).tolist()) <= {"none of these", *set(names[y < 5])}
    with pytest.raises(ValueError, match="unknown_label 'class 0' is also a class; set unknown_label"):
        ImprintClassifier(reject="knn", unknown_label="class 0").fit(X, names)


def test_bad_rejection_settings_are_one_line_errors(mixture):
    X, y = mixture
    for rate in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"reject_rate must be a number > 0 and < 1; got") as error:
            ImprintClassifier(reject="energy", reject_rate=rate).fit(X, y)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="reject needs an imprinted classifier; generation='ls' is an oracle"):
        ImprintClassifier(generation="ls", reject="max_score", norm_pre="none", norm_post="none").fit(X, y)
    with pytest.raises(ValueError, match="unknown reject 'maxscore'; valid: .*; did you mean 'max_score'"):
        ImprintClassifier(reject="maxscore").fit(X, y)
    with pytest.raises(ValueError, match="reject_rate=0.1 is only used by reject="):
        ImprintClassifier(reject_rate=0.1).fit(X, y)
    with pytest.raises(ValueError, match="score_unknown needs a rejection score"):
        ImprintClassifier().fit(X, y).score_unknown(X)


def test_a_support_set_too_small_for_the_rate_says_so(mixture):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    with pytest.warns(UserWarning, match=r"12 support samples are too few to reject at most 0.05 of known images "
                                         r"\(it needs at least 19\); nothing will be rejected"):
        clf = ImprintClassifier(generation="mean", reject="max_score").fit(X[rows], y[rows])
    assert np.isinf(clf.threshold_) and (clf.predict(X) != -1).all()


def test_adding_and_removing_classes_recalibrates(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="knn", reject_rate=0.1).fit(X[y < 3], y[y < 3])
    assert (clf.predict(X[y == 4]) == -1).mean() > 0.5
    clf.add_classes(X[y == 4], y[y == 4])
    assert len(clf.open_set_.support) == int((y < 3).sum() + (y == 4).sum()) and 4 in clf.classes_
    assert (clf.predict(X[y == 4]) == -1).mean() < 0.2
    clf.remove_classes([4])
    assert len(clf.open_set_.support) == int((y < 3).sum()) and (clf.predict(X[y == 4]) == -1).mean() > 0.5


@pytest.mark.slow
def test_realised_rejection_near_the_target_on_real_embeddings(real_embeddings):
    """Fashion-MNIST classes 0-4 known, 5-9 near-unknown, MNIST far-unknown (Lite0, 300 shots): every score keeps
    the known-class rejection near 5% and tells MNIST from Fashion-MNIST."""
    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    _, _, mnist, _ = real_embeddings("mnist5k")
    rates = {}
    for reject in REJECTORS.names():
        clf = ImprintClassifier(generation="mean", reject=reject, reject_rate=0.05).fit(Xs[ys < 5], ys[ys < 5])
        known = clf.predict(Xq[yq < 5]) == -1
        rates[reject] = float(known.mean())
        assert 0.01 <= rates[reject] <= 0.10, (reject, rates)  # 500 known test images: binomial sd 1 point
        assert (clf.predict(mnist) == -1).mean() > 0.5, reject
    assert np.mean(list(rates.values())) == pytest.approx(0.05, abs=0.025), rates


def test_calibrate_with_too_few_samples_warns_as_fit_does(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="max_score").fit(X, y)
    with pytest.warns(UserWarning, match="too few to reject"):
        clf.calibrate(X[:5], y[:5])
