"""The stages of the imprinting pipeline, declared by name with the settings each reads: NORM (normalisations,
``norm.py``), GEN (generation of proxies, ``generation.py``), the heads (how a query is scored against each proxy,
``heads/``, one file per method) and AGG (aggregation, ``aggregation.py``).

Each declaration names the code that implements the stage, imported when the stage is first used, so the names,
summaries and settings of every stage are known without torch: the command line's flags and checks, the grid's
schema and the estimator's parameters read them here. Adding a stage is its code and one declaration below (a
head: its file in ``heads/`` and a line in ``heads/__init__.py``); a plug-in registers from its own module with
``@NORMS.register(name, settings=[...])`` and the like, beside its code.
"""
from __future__ import annotations

from imprint.core.settings import AUTO, Registry, Setting
from imprint.stages.heads import METRICS

NORMS: Registry = Registry("normalisation")
GENERATORS: Registry = Registry("generation")
AGGREGATIONS: Registry = Registry("aggregation")

KMEANS_BACKENDS = ("batched", "faiss")
QUANTILE_REFERENCES = ("pooled", "sequential")
MNN_WEIGHTINGS = ("uniform", "distance")


def projection_candidates(n_samples: int, n_features: int, **_: object) -> list[int]:
    """The projection widths tried for projection_dim="auto": 2x and 4x the embedding width, 256 to 4096."""
    return sorted({min(4096, max(256, factor * n_features)) for factor in (2, 4)})


K = Setting("k", int, 20, "proxies per class (a class with fewer samples uses all of them); auto (kmeans): "
            "chosen on the support set", low=1, auto=True, shown=True, capped=True,
            choose="imprint.stages.auto_k:choose")
KMEANS_BACKEND = Setting("kmeans_backend", str, "batched", "batched (all classes at once, torch) or faiss "
                         "(per-class FAISS k-means)", choices=KMEANS_BACKENDS)
KMEANS_MAX_ITER = Setting("kmeans_max_iter", int, 100, "Lloyd iterations of k-means at most", low=1)
LS_LAMBDA = Setting("ls_lambda", float, 1e-4, "ridge term of the ls/kls oracles", low=0.0)
TUKEY_POWER = Setting("tukey_power", float, 0.5, "exponent of the tukey power transform sign(x)|x|^p", low=0.0,
                      high=1.0, open_low=True)
QUANTILE_REFERENCE = Setting("quantile_reference", str, "pooled", "reference of quantile NORM: pooled "
                             "(order-independent) or sequential (the paper's)", choices=QUANTILE_REFERENCES)
PROJECTION_DIM = Setting("projection_dim", int, AUTO, "width of the random_relu projection (RanPAC's M); auto: "
                         "chosen by cross-validation between 2x and 4x the embedding width (at most 4096)",
                         low=1, auto=True, tunable=projection_candidates)
M = Setting("m", int, 1, "mnn: how many nearest proxies vote", low=1, shown=True)
MNN_WEIGHTS = Setting("mnn_weights", str, "uniform", "mnn: uniform votes or inverse-distance weights",
                      choices=MNN_WEIGHTINGS)

AGG = "imprint.stages.aggregation"
AGGREGATIONS.declare("max", f"{AGG}:MaxAggregation", "Class score = best score among the class's proxies (1-NN "
                     "over proxies).")
AGGREGATIONS.declare("mean", f"{AGG}:MeanAggregation", "Class score = mean score of the class's proxies.")
AGGREGATIONS.declare("sum", f"{AGG}:SumAggregation", "Class score = sum of its proxies' scores (Tip-Adapter's cache "
                     "logits with the kernel metric).")
AGGREGATIONS.declare("mnn", f"{AGG}:MNNAggregation", "The m nearest proxies vote; class score = share of the "
                     "(optionally distance-weighted) votes.", settings=[M, MNN_WEIGHTS])

GEN = "imprint.stages.generation"
GENERATORS.declare("mean", f"{GEN}:mean_proxies", "One proxy per class: the class mean (Qi et al. 2018); k is "
                   "ignored.", one_per_class=True, streaming=True)
GENERATORS.declare("all", f"{GEN}:all_proxies", "Every support sample is a proxy (k = n_c); k is ignored.")
GENERATORS.declare("kmeans", f"{GEN}:kmeans_proxies", "k-means centroids per class (seeded k-means++; batched over "
                   "classes or per-class FAISS).", settings=[K, KMEANS_BACKEND, KMEANS_MAX_ITER],
                   per_class_rules=True, streaming=True)
GENERATORS.declare("random", f"{GEN}:random_proxies", "k support samples per class drawn at random without "
                   "replacement (seeded).", settings=[K])
GENERATORS.declare("fps", f"{GEN}:farthest_point_proxies", "Farthest-point sampling per class from a random first "
                   "sample: k well-spread samples.", settings=[K])
GENERATORS.declare("kmedoids", f"{GEN}:kmedoids_proxies", "k-medoids (FasterPAM, from the maintained `kmedoids` "
                   "package) per class; O(n_c^2) memory.", settings=[K])
GENERATORS.declare("ls", f"{GEN}:least_squares_proxies", "Oracle: least-squares classifier W = (1/C) M (Sigma_T + "
                   "mu mu^T + lambda I)^-1 (uses all classes).", settings=[LS_LAMBDA], oracle=True, one_per_class=True)
GENERATORS.declare("kls", f"{GEN}:cluster_least_squares_proxies", "Oracle: least squares over the k-means clusters "
                   "of every class, regrouped by class.", settings=[K, LS_LAMBDA], oracle=True)

NORM = "imprint.stages.norm"
NORMS.declare("none", f"{NORM}:NoNorm", "Leave rows unchanged.")
NORMS.declare("l2", f"{NORM}:L2Norm", "Scale each row to unit Euclidean norm (all-zero rows stay zero).")
NORMS.declare("center", f"{NORM}:CenterNorm", "Subtract the mean of the fitting set (the support embeddings): with "
              "l2 after it, SimpleShot's CL2N.")
NORMS.declare("tukey", f"{NORM}:TukeyNorm", "Tukey's power transform sign(x) |x|^p (p = tukey_power): makes skewed "
              "features more Gaussian (FeCAM).", settings=[TUKEY_POWER])
NORMS.declare("quantile", f"{NORM}:QuantileNorm", "Replace each row's entries, in rank order, by the quantiles of a "
              "reference distribution.", settings=[QUANTILE_REFERENCE])
NORMS.declare("random_relu", f"{NORM}:RandomReLU", "RanPAC's random projection: ReLU(x W) with W a fixed Gaussian "
              "d x M matrix (seeded by `seed`).", settings=[PROJECTION_DIM])

__all__ = ["AGGREGATIONS", "GENERATORS", "METRICS", "NORMS"]
