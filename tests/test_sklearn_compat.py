"""scikit-learn's own estimator checks, with each justified exception documented."""
from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from imprint import ImprintClassifier

# decision_function returns (n_samples, n_classes) scores for every number of classes, as the IMPRINT
# API promises (per-class scores feed the aggregation and reports). scikit-learn expects a 1-D
# decision_function for binary problems; these checks test exactly that shape:
EXPECTED_FAILURES = {
    "check_classifiers_train": "expects a 1-D decision_function for binary problems",
    "check_classifiers_classes": "compares a 1-D binary decision_function with predict",
    "check_decision_proba_consistency": "ranks a 1-D binary decision_function against predict_proba[:, 1]",
}


@parametrize_with_checks([ImprintClassifier(k=3, device="cpu"), ImprintClassifier(generation="mean", device="cpu")],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
