"""Tests of ``imprint.openset.scores``: rejection scores: how unlike the known classes a query is (higher = more
likely unknown)."""
from __future__ import annotations

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.openset import REJECTORS


@pytest.mark.parametrize("reject", sorted(REJECTORS.names()))
def test_every_score_rejects_unknowns_and_keeps_its_state_on_disk(mixture, tmp_path, reject):
    X, y = mixture
    known = y < 4
    fit_rows = known & (np.arange(len(y)) % 3 != 0)
    clf = ImprintClassifier(generation="kmeans", k=3, reject=reject, reject_rate=0.1).fit(X[fit_rows], y[fit_rows])
    labels = clf.predict(X)
    assert labels.dtype.kind == "i" and set(labels.tolist()) <= {-1, 0, 1, 2, 3}
    assert (labels[~known] == -1).mean() > 0.5, "most images of classes 4 and 5 should be called unknown"
    assert (labels[known & ~fit_rows] == -1).mean() <= 0.25
    scores = clf.score_unknown(X)
    np.testing.assert_array_equal(labels == -1, scores > clf.threshold_)
    closed = clf.set_params(reject=None).predict(X)  # the same fitted proxies, no rejection
    clf.set_params(reject=reject)
    accepted = labels != -1
    if clf.open_set_.rejector.uses_class_scores:  # labels from the class scores' argmax
        assert (labels[accepted] == closed[accepted]).mean() > 0.99
    else:  # labels exactly as predict gives them without rejection
        np.testing.assert_array_equal(labels[accepted], closed[accepted])
    path = tmp_path / "open.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(X), labels)
    np.testing.assert_array_equal(loaded.score_unknown(X), scores)
