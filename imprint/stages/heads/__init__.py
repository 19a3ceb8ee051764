"""The heads: how a query is scored against each proxy, higher is closer; one file per method, declared here
with the settings each reads (imported when first used: this catalogue imports without torch).

Beyond the inner product and the Euclidean distance of the IMPRINT paper, the strongest closed-form heads are
heads too, so each one composes with every generator, normalisation and aggregation:

- ``mahalanobis``: GDA / LDA (Wang et al., ICLR 2024): a shared within-class covariance, shrunk; scores are
  -1/2 the squared Mahalanobis distance to each proxy (+ log prior), i.e. linear logits w'x + b plus a
  per-query term. With ``generation="mean"`` it is GDA; with k-means proxies, a mixture with shared covariance.
- ``fecam``: FeCAM (Goswami et al., NeurIPS 2023): one shrunk covariance per class (or its diagonal).
- ``ridge``: ridge regression onto one-hot proxy targets, (G + lambda I)^-1 Q; with ``random_relu`` features,
  RanPAC (McDonnell et al., NeurIPS 2023).
- ``kernel``: Tip-Adapter's cache affinity exp(-beta (1 - cos)) (Zhang et al., ECCV 2022); with ``all``
  proxies and ``sum`` aggregation, Tip-Adapter's training-free cache logits.

Adding a head: a file here with a ``Metric`` subclass (``base.py``) and one ``METRICS.declare`` line below.
Traits say what the estimator may ask of a head before building it: ``distance`` (its scores turn into distances
for distance-weighted voting).
"""
from __future__ import annotations

from imprint.core.settings import AUTO, Registry, Setting

METRICS: Registry = Registry("metric")
PRIORS = ("uniform", "empirical")
ESTIMATORS = ("ledoit_wolf", "oas", "gda")  # shrinkage amounts a covariance computes from its own rows
FIXED_CANDIDATES = (0.05, 0.2, 0.5, 0.8)


def shrinkage_candidates(**_: object) -> list[object]:
    """The shrinkages tried for shrinkage="auto": the three estimators, then fixed amounts."""
    return [*ESTIMATORS, *FIXED_CANDIDATES]


def carried_shrinkage(value: object, ratio: float) -> object:
    """A fixed shrinkage chosen on n rows, for ratio * n rows: the identity keeps the same weight counted in rows
    (a = n0 / (n0 + n), as the trace rule's a = d / (d + n)), so a larger set is shrunk less. An estimator
    computes its own amount from the rows it is given."""
    if isinstance(value, str) or not 0.0 < float(value) < 1.0:
        return value
    return float(value) / (float(value) + (1.0 - float(value)) * ratio)


def lambda_candidates(**_: object) -> list[float]:
    """The ridge regularisations tried for ridge_lambda="auto"."""
    return [1e-3, 1e-2, 1e-1, 1.0, 10.0]


def beta_candidates(**_: object) -> list[float]:
    """The kernel sharpnesses tried for beta="auto"."""
    return [1.0, 3.0, 5.5, 10.0, 20.0, 50.0, 100.0, 200.0]


SHRINKAGE = Setting("shrinkage", float, AUTO, "covariance shrinkage towards a multiple of the identity: a number "
                    "in [0, 1], ledoit_wolf, oas or gda (trace rule of the GDA paper); auto: chosen by "
                    "cross-validation on the support set", low=0.0, high=1.0, words=ESTIMATORS, auto=True,
                    tunable=shrinkage_candidates, carry=carried_shrinkage)
PRIOR = Setting("prior", str, "uniform", "class prior added as log prior to the scores: uniform (every class "
                "equal) or empirical (support frequencies, as in LDA)", choices=PRIORS)
FECAM_DIAGONAL = Setting("fecam_diagonal", bool, False, "fecam: keep only the diagonal of each class covariance "
                         "(for few shots; O(K d) memory and time instead of O(K d^2))")
FECAM_NORMALIZE = Setting("fecam_normalize", bool, False, "fecam: FeCAM's correlation normalisation of each shrunk "
                          "class covariance, C / (sd sd') with sd its standard deviations (the published method)")
RIDGE_LAMBDA = Setting("ridge_lambda", float, AUTO, "ridge: regularisation, relative to the mean eigenvalue of the "
                       "Gram matrix (so it does not depend on the embedding scale); auto: chosen by "
                       "cross-validation on the support set", low=0.0, open_low=True, auto=True,
                       tunable=lambda_candidates)
KERNEL_BETA = Setting("beta", float, AUTO, "kernel: sharpness of exp(-beta (1 - cos)) (Tip-Adapter's beta); auto: "
                      "chosen by cross-validation on the support set", low=0.0, open_low=True, auto=True,
                      tunable=beta_candidates)

HEADS = "imprint.stages.heads"
METRICS.declare("dot", f"{HEADS}.dot:DotMetric", "Inner product <x, w> (cosine similarity when both sides are "
                "L2-normalised).", distance=True)
METRICS.declare("euclidean", f"{HEADS}.euclidean:EuclideanMetric", "Negative squared Euclidean distance "
                "-||x - w||^2, via one matrix product.", distance=True)
METRICS.declare("mahalanobis", f"{HEADS}.mahalanobis:MahalanobisMetric", "GDA / LDA: -1/2 (x - w)' P (x - w) + log "
                "prior with one shared, shrunk within-class precision P.", settings=[SHRINKAGE, PRIOR], distance=True)
METRICS.declare("fecam", f"{HEADS}.fecam:FeCAMMetric", "FeCAM: -(x - w)' P_c (x - w) with a shrunk covariance per "
                "class (or its diagonal).", settings=[SHRINKAGE, PRIOR, FECAM_DIAGONAL, FECAM_NORMALIZE],
                distance=True)
METRICS.declare("ridge", f"{HEADS}.ridge:RidgeMetric", "Ridge regression onto one-hot proxy targets: scores x' (G + "
                "lambda tr(G)/d I)^-1 Q with G = sum x x' (RanPAC with random_relu features).",
                settings=[RIDGE_LAMBDA], distance=False)
METRICS.declare("kernel", f"{HEADS}.kernel:KernelMetric", "Tip-Adapter's cache affinity exp(-beta (1 - <x, w>)) "
                "(use L2-normalised queries and proxies).", settings=[KERNEL_BETA], distance=True)
