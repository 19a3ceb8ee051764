"""Tests of ``imprint.estimator.taught``: the examples a classifier was taught class by class (``add_examples``),
kept in its file so that a class can be given more examples later and imprinted again from all of them, exactly as
if they had come at once."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.core.errors import UserError
from imprint.estimator.taught import Examples
from imprint.io.classifier_file import ClassifierFileError


@pytest.mark.parametrize("method", ["simpleshot", "qi", "fecam", "imprint", "tip_adapter"])
def test_examples_given_in_parts_teach_what_all_at_once_would(mixture, method):
    X, y = mixture
    base, new = y < 4, y == 4
    parts = ImprintClassifier(method=method).fit(X[base], y[base])
    rows = np.flatnonzero(new)
    parts.add_examples(X[rows[:30]], y[rows[:30]])
    parts.add_examples(X[rows[30:]], y[rows[30:]])
    once = ImprintClassifier(method=method).fit(X[base], y[base]).add_classes(X[new], y[new])
    assert np.allclose(parts.decision_function(X), once.decision_function(X), atol=1e-5)
    assert np.array_equal(parts.examples_.of(4), X[new])


def test_the_examples_survive_in_the_file_and_leave_with_their_class(tmp_path, mixture):
    X, y = mixture
    clf = ImprintClassifier(method="simpleshot").fit(X[y < 4], y[y < 4])
    clf.add_examples(X[y == 4], y[y == 4]).add_examples(X[y == 5][:7], y[y == 5][:7])
    clf.save(tmp_path / "c.safetensors")
    back = ImprintClassifier.load(tmp_path / "c.safetensors")
    assert np.array_equal(back.examples_.of(4), X[y == 4]) and len(back.examples_.of(5)) == 7
    assert np.array_equal(back.predict(X), clf.predict(X))
    back.remove_classes([4])
    back.save(tmp_path / "d.safetensors")
    assert list(ImprintClassifier.load(tmp_path / "d.safetensors").examples_.by_class) == [5]
    assert ImprintClassifier(method="qi").fit(X, y).examples_ is None  # fit keeps none


def test_what_cannot_be_taught_is_refused_and_nothing_changes(mixture):
    X, y = mixture
    clf = ImprintClassifier(method="simpleshot").fit(X[y < 4], y[y < 4])
    before = clf.decision_function(X)
    with pytest.raises(UserError, match="imprinted by fit"):
        clf.add_examples(X[:3], [0, 0, 0])
    with pytest.raises(UserError, match="labels"):
        clf.add_examples(X[:3], ["a", "b", "c"])  # another label type
    assert np.array_equal(clf.decision_function(X), before) and clf.examples_ is None
    gda = ImprintClassifier(method="gda").fit(X[y < 4], y[y < 4]).add_examples(X[y == 4], y[y == 4])
    scores = gda.decision_function(X)
    with pytest.raises(UserError, match="mahalanobis"):  # a pooled covariance cannot give the class back
        gda.add_examples(X[y == 4][:2], [4, 4])
    assert np.array_equal(gda.decision_function(X), scores) and len(gda.examples_.of(4)) == (y == 4).sum()


def test_kept_examples_that_do_not_match_the_classes_are_refused(tmp_path, mixture, monkeypatch):
    X, y = mixture
    clf = ImprintClassifier(method="simpleshot").fit(X[y < 4], y[y < 4]).add_examples(X[y == 4], y[y == 4])
    real_state = Examples.state

    def wrong_codes(self, classes):
        meta, arrays = real_state(self, classes)
        return meta, {**arrays, "examples.codes": arrays["examples.codes"] + 99}
    monkeypatch.setattr(Examples, "state", wrong_codes)
    clf.save(tmp_path / "c.safetensors")  # checksummed as written, so only the consistency check can catch it
    with pytest.raises(ClassifierFileError, match="kept examples do not match"):
        ImprintClassifier.load(tmp_path / "c.safetensors")


def test_a_fit_that_keeps_its_examples_lets_any_class_get_more(tmp_path, mixture, capsys):
    X, y = mixture
    first = np.concatenate([np.flatnonzero(y == c)[:60] for c in range(6)])
    later = np.flatnonzero(y == 2)[60:]
    clf = ImprintClassifier(method="qi").fit(X[first], y[first], keep_examples=True)
    assert sorted(clf.examples_.by_class) == list(range(6))
    clf.add_examples(X[later], y[later])
    union = np.concatenate([first, later])
    whole = ImprintClassifier(method="qi").fit(X[union], y[union])
    assert np.allclose(clf.decision_function(X), whole.decision_function(X), atol=1e-5)
    assert len(clf.examples_.of(2)) == 60 + len(later)
