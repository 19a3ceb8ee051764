"""Open set: rejection scores and conformal thresholds, so a classifier can say "unknown" at a chosen rate.

The rejection scores are declared here by name with their settings (``reject=NAME``; the code is in
``scores.py``, imported when a score is first used, so these declarations import without torch); the
conformal thresholds and label sets are in ``conformal.py``, the open-set measures in ``measures.py``.
"""
from __future__ import annotations

from imprint.core.settings import AUTO, Registry, Setting

REJECTORS: Registry = Registry("reject")

REJECT_RATE = Setting("reject_rate", float, 0.05, "share of known-class images that may be rejected as unknown "
                      "(a conformal threshold on the support set keeps the rate at most this, in expectation)",
                      low=0.0, high=1.0, open_low=True, open_high=True)
UNKNOWN_LABEL = Setting("unknown_label", object, AUTO, "label predicted for rejected queries; auto: 'unknown' for "
                        "string classes, -1 for integer classes", auto=True)
KNN_K = Setting("knn_k", int, AUTO, "knn: which nearest support sample's similarity scores a query; auto: a tenth "
                "of the smallest class's size, from 1 to 50 (a k beyond a class's modes blurs known and unknown)",
                low=1, auto=True)
NECO_DIM = Setting("neco_dim", int, AUTO, "neco: dimension of the principal subspace; auto: the fewest principal "
                   "directions holding 90% of the support set's variance", low=1, auto=True)
COMMON = [REJECT_RATE, UNKNOWN_LABEL]

SCORES = "imprint.openset.scores"
REJECTORS.declare("max_score", f"{SCORES}:MaxScore", "Minus the best class score (for cosine heads: one minus the "
                  "best cosine).", settings=COMMON)
REJECTORS.declare("energy", f"{SCORES}:Energy", "Minus the free energy T log sum exp(scores / T) of the class scores "
                  "(T: the classifier's temperature).", settings=COMMON)
REJECTORS.declare("knn", f"{SCORES}:KNN", "Minus the cosine similarity to the k-th nearest support sample in the "
                  "classifier's query space.", settings=[*COMMON, KNN_K])
REJECTORS.declare("mahalanobis", f"{SCORES}:MahalanobisPlusPlus", "Smallest squared Mahalanobis distance of the "
                  "L2-normalised embedding to a class mean (shared, shrunk Ledoit-Wolf covariance; Mahalanobis++).",
                  settings=COMMON)
REJECTORS.declare("neco", f"{SCORES}:NECO", "One minus the share of the centred, L2-normalised embedding's norm in "
                  "the support set's principal subspace (NECO).", settings=[*COMMON, NECO_DIM])
