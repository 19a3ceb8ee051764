"""scikit-learn's own estimator checks: every one passes (binary problems get a 1-D decision_function, as
scikit-learn's classifiers give)."""
from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from imprint import ImprintClassifier


@parametrize_with_checks([ImprintClassifier(k=3, device="cpu"), ImprintClassifier(generation="mean", device="cpu")])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
