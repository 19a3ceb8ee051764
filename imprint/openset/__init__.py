"""Open set: rejection scores and conformal thresholds, so a classifier can say "unknown" at a chosen rate."""
from imprint.openset.conformal import minimum_samples, prediction_sets, threshold
from imprint.openset.scores import REJECTORS, Rejector, make_rejector

__all__ = ["REJECTORS", "Rejector", "make_rejector", "minimum_samples", "prediction_sets", "threshold"]
