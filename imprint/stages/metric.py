"""Metrics (heads): how a query is scored against each proxy, higher is closer.

A metric is an ``nn.Module`` fitted on the normalised support set and the proxies; ``forward`` gives the
(n_queries, n_proxies) scores the aggregation reduces per class. Beyond the inner product and the
Euclidean distance of the IMPRINT paper, the strongest closed-form heads are metrics too, so each one
composes with every generator, normalisation and aggregation:

- ``mahalanobis``: GDA / LDA (Wang et al., ICLR 2024): a shared within-class covariance, shrunk; scores are
  -1/2 the squared Mahalanobis distance to each proxy (+ log prior), i.e. linear logits w'x + b plus a
  per-query term. With ``generation="mean"`` it is GDA; with k-means proxies, a mixture with shared covariance.
- ``fecam``: FeCAM (Goswami et al., NeurIPS 2023): one shrunk covariance per class (or its diagonal).
- ``ridge``: ridge regression onto one-hot proxy targets, (G + lambda I)^-1 Q; with ``random_relu`` features,
  RanPAC (McDonnell et al., NeurIPS 2023).
- ``kernel``: Tip-Adapter's cache affinity exp(-beta (1 - cos)) (Zhang et al., ECCV 2022); with ``all``
  proxies and ``sum`` aggregation, Tip-Adapter's training-free cache logits.

Residuals for covariances are taken about each sample's nearest proxy of its own class (its class mean for
one proxy per class). Metrics that keep sufficient statistics add classes exactly (``extend``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from imprint.core.errors import UserError
from imprint.core.settings import AUTO, Registry, Setting
from imprint.core.support import Support, squared_norms
from imprint.stages.covariance import SHRINKAGE, Scatter, cholesky_factor, precision, second_moment, shrunk_covariance
from imprint.stages.kmeans import nearest_own_centroid
from imprint.stages.ridge_solve import RidgeFolds, ridge_solve, uses_dual

METRICS: Registry[type[Metric]] = Registry("metric")
PRIORS = ("uniform", "empirical")


class NotIncrementalError(UserError):
    """A metric whose fitted statistics cannot lose (or gain) classes exactly."""


def class_of_proxy(proxy_counts: Tensor) -> Tensor:
    """Class index of every proxy (proxies are grouped by class)."""
    return torch.repeat_interleave(torch.arange(len(proxy_counts), device=proxy_counts.device), proxy_counts)


class Metric(nn.Module):
    """Base class: scores of queries against stored proxies. Stateless metrics only hold the proxies."""

    #: whether ``ranking`` may drop a per-query constant from ``forward`` (true for the distances)
    has_query_term = False
    #: whether scores turn into distances for distance-weighted voting
    has_distance = True
    #: floats of scratch memory a query needs besides its proxy scores
    scratch_per_query = 0
    #: whether ``restrict`` drops classes exactly (false where statistics are pooled over all classes)
    forgets_classes = True
    #: scores every fold of a cross-validation from statistics of all the normalised rows computed once
    #: (``RidgeFolds``), where the pipeline lets it (``imprint.estimator.pipeline.FoldFitter``); None: a fit per fold
    fold_statistics: type | None = None

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.register_buffer("proxies", None)
        self.register_buffer("proxy_counts", None)

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        self.proxies, self.proxy_counts = proxies, proxy_counts.to(torch.long)

    def solve(self) -> None:
        """Compute what scoring needs, where a metric defers it until first used (nothing by default)."""

    def fit(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor) -> Metric:
        """Learn from the normalised support set (read through `support`, ``imprint.core.support``; `counts` rows per
        class) and the proxies."""
        self.set_proxies(proxies, proxy_counts)
        return self

    def extend(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor,
               new: Tensor) -> Metric:
        """Add classes: `support`/`counts` are the new classes' rows; `proxies`/`proxy_counts` are all
        classes' after the merge and `new` marks which classes are the new ones."""
        self.set_proxies(proxies, proxy_counts)
        return self

    def restrict(self, keep: Tensor, proxies: Tensor, proxy_counts: Tensor) -> Metric:
        """Drop the classes not in the boolean mask `keep`."""
        self.set_proxies(proxies, proxy_counts)
        return self

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        """(n, n_proxies) scores; `out`, if given, is a buffer of that shape the metric may write into (a
        prediction loop reuses it instead of allocating a new score block per block of queries)."""
        raise NotImplementedError

    def ranking(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        """Scores up to a per-query constant (enough to rank proxies); cheaper for some metrics."""
        return self(queries, out=out)

    def to_distance(self, scores: Tensor) -> Tensor:
        """Non-negative distances from scores, for distance-weighted voting (cosine distance by default)."""
        return (1.0 - scores).clamp_min(0.0)

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """The (n, n_proxies) scores of normalised queries under each value of setting `name`, in order, from
        this one fit (for cross-validation), where the metric can reuse its statistics; None where it cannot."""
        return None

    def unsolved_scores(self, queries: Tensor) -> Tensor | None:
        """The scores ``forward`` gives, from the fitted statistics without solving for the metric's parameters,
        where that is cheaper (a model that scores its held-out rows once, in cross-fitting); None: use forward."""
        return None

    def options(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, Tensor]:
        """Fitted state to save (the proxies are saved by the classifier)."""
        return {}


@METRICS.register("dot")
class DotMetric(Metric):
    """Inner product <x, w> (cosine similarity when both sides are L2-normalised)."""

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.mm(queries, self.proxies.T, out=out) if out is not None else queries @ self.proxies.T


@METRICS.register("euclidean")
class EuclideanMetric(Metric):
    """Negative squared Euclidean distance -||x - w||^2, via one matrix product."""

    has_query_term = True

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.register_buffer("sq_norms", None)

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        super().set_proxies(proxies, proxy_counts)
        self.sq_norms = squared_norms(proxies).to(proxies.dtype)

    def ranking(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        if out is not None:
            return torch.addmm(self.sq_norms, queries, self.proxies.T, beta=-1.0, alpha=2.0, out=out)
        return torch.addmm(self.sq_norms, queries, self.proxies.T, beta=-1.0, alpha=2.0)

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        scores = self.ranking(queries, out=out)
        return scores.sub_((queries * queries).sum(dim=1, keepdim=True)).clamp_(max=0.0)

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-scores).clamp_min(0.0).sqrt()


def residual_statistics(support: Support, proxies: Tensor, proxy_counts: Tensor,
                        per_class: bool = False) -> Scatter | dict[int, Scatter]:
    """Scatter of the residuals of the support rows from their nearest proxy of their own class, pooled over
    all classes (or one per class), read one bucket of classes at a time."""
    pooled, classes = None, {}
    if not per_class and bool((proxy_counts == 1).all()):  # a class's proxy is its nearest: stream storage order
        for codes, block in support.blocks():
            part = Scatter.of(block - proxies.to(block.device, block.dtype)[codes], 0)
            pooled = part if pooled is None else pooled + part
        pooled.means = len(proxies)
        return pooled
    for bucket, (P, mask), nearest in nearest_own_centroid(support, proxies, proxy_counts):
        residuals = P - proxies.to(P.device, P.dtype)[nearest]
        if per_class:
            for b, c in enumerate(bucket.tolist()):
                classes[c] = Scatter.of(residuals[b][mask[b]], int(proxy_counts[c]))
        else:
            part = Scatter.of(residuals[mask], int(proxy_counts[torch.as_tensor(bucket)].sum()))
            pooled = part if pooled is None else pooled + part
    return classes if per_class else pooled


PRIOR = Setting("prior", str, "uniform", "class prior added as log prior to the scores: uniform (every class "
                "equal) or empirical (support frequencies, as in LDA)", choices=PRIORS)


def _log_prior(counts: Tensor, prior: str, dtype: torch.dtype) -> Tensor:
    if prior == "uniform":
        return torch.zeros(len(counts), dtype=dtype, device=counts.device)
    return (counts.double() / counts.sum()).log().to(dtype)


@METRICS.register("mahalanobis", settings=[SHRINKAGE, PRIOR])
class MahalanobisMetric(Metric):
    """GDA / LDA: -1/2 (x - w)' P (x - w) + log prior with one shared, shrunk within-class precision P."""

    has_query_term = True
    forgets_classes = False

    def __init__(self, shrinkage: float | str = "ledoit_wolf", prior: str = "uniform", outer: Tensor | None = None,
                 stats: Tensor | None = None, class_counts: Tensor | None = None, **options: Any) -> None:
        super().__init__()
        if shrinkage == AUTO:
            raise ValueError("shrinkage='auto' is resolved by the classifier before the stage is built")
        self.shrinkage, self.prior = shrinkage, prior
        self.scatter = Scatter.from_tensors(outer, stats) if outer is not None else None
        self.class_counts = class_counts
        for name in ("precision_matrix", "weights", "bias"):
            self.register_buffer(name, None)

    def fit(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor) -> MahalanobisMetric:
        self.scatter = residual_statistics(support, proxies, proxy_counts)
        self.class_counts = counts.detach().cpu().long()
        self.set_proxies(proxies, proxy_counts)
        return self

    def extend(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor,
               new: Tensor) -> MahalanobisMetric:
        new_proxies = proxies[new.to(proxies.device)[class_of_proxy(proxy_counts.to(proxies.device))]]
        self.scatter = self.scatter + residual_statistics(support, new_proxies, proxy_counts[new])
        merged = torch.empty(len(new), dtype=torch.long)
        merged[new.cpu()] = counts.cpu().long()
        merged[~new.cpu()] = self.class_counts
        self.class_counts = merged
        self.set_proxies(proxies, proxy_counts)
        return self

    def restrict(self, keep: Tensor, proxies: Tensor, proxy_counts: Tensor) -> Metric:
        raise NotIncrementalError("metric='mahalanobis' shares one covariance over all classes and keeps only its "
                                  "sum, so a class cannot be taken out exactly; fit again on the remaining classes")

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        super().set_proxies(proxies, proxy_counts)
        self.spectrum = None  # of the pooled covariance, for candidate_scores
        self.factor = None  # Cholesky factor of the shrunk covariance, for unsolved_scores
        self.precision_matrix = None  # solved when first needed: a model inside cross-validation that only scores
        #                               candidates (from the spectrum) never needs it

    def solve(self) -> None:
        """The precision, weights and bias of the scores (d^3 work, done once)."""
        if self.precision_matrix is not None:
            return
        proxies = self.proxies
        covariance, self.shrinkage_used = shrunk_covariance(self.scatter, self.shrinkage)
        P = precision(covariance.to(proxies.device))
        W = proxies.double() @ P
        self.precision_matrix = P.to(proxies.dtype)
        self.weights = W.to(proxies.dtype)
        self.bias = (-0.5 * (W * proxies.double()).sum(1) + self._proxy_log_prior()).to(proxies.dtype)

    def _proxy_log_prior(self) -> Tensor:
        """The log prior of each proxy's class (float64, on the proxies' device)."""
        device = self.proxies.device
        prior = _log_prior(self.class_counts.to(device), self.prior, torch.float64)
        return prior[class_of_proxy(self.proxy_counts.to(device))]

    def ranking(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        self.solve()
        if out is not None:
            return torch.addmm(self.bias, queries, self.weights.T, out=out)
        return torch.addmm(self.bias, queries, self.weights.T)

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        self.solve()
        query_term = ((queries @ self.precision_matrix) * queries).sum(dim=1, keepdim=True)
        return self.ranking(queries, out=out).sub_(0.5 * query_term)

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-2.0 * scores).clamp_min(0.0).sqrt()

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """Every shrinkage from one eigendecomposition of the pooled covariance."""
        if name != "shrinkage":
            return None
        prior = self._proxy_log_prior()
        if self.spectrum is None:  # once per fit, not once per block of queries
            self.spectrum = _spectrum(self.scatter)
        return [-0.5 * quadratic + prior for quadratic in
                _shrunk_quadratics(self.scatter, self.spectrum, values, queries, self.proxies)]

    def unsolved_scores(self, queries: Tensor) -> Tensor | None:
        """The scores without the d x d precision: with at most half as many residuals as dimensions from the n x n
        spectrum of the residuals (n^2 d work; measured 1.3-3.6x faster there at d = 1280, slower above about
        0.6 d), else from a Cholesky factor of the shrunk covariance by triangular solves (d^3 / 3 instead of the
        inverse's d^3)."""
        if self.precision_matrix is not None or self.scatter is None:
            return None
        rows = self.scatter.rows
        if rows is not None and 2 * len(rows) <= rows.shape[1]:
            return next(iter(self.candidate_scores("shrinkage", [self.shrinkage], queries))).to(queries.dtype)
        if self.factor is None:
            covariance, _ = shrunk_covariance(self.scatter, self.shrinkage)
            self.factor = cholesky_factor(covariance.to(self.proxies.device))
            if self.factor is None:
                return None  # ill-conditioned: solved as forward solves it
        Z = torch.linalg.solve_triangular(self.factor, queries.double().T, upper=False)
        V = torch.linalg.solve_triangular(self.factor, self.proxies.double().T, upper=False)
        quadratic = Z.square().sum(0)[:, None] - 2.0 * (Z.T @ V) + V.square().sum(0)[None, :]
        return (-0.5 * quadratic + self._proxy_log_prior()).to(queries.dtype)

    def options(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "prior": self.prior}

    def tensors(self) -> dict[str, Tensor]:
        tensors = self.scatter.tensors()
        return {"outer": tensors["outer"], "stats": tensors["counts"], "class_counts": self.class_counts}


FECAM_DIAGONAL = Setting("fecam_diagonal", bool, False, "fecam: keep only the diagonal of each class covariance "
                         "(for few shots; O(K d) memory and time instead of O(K d^2))")
FECAM_NORMALIZE = Setting("fecam_normalize", bool, False, "fecam: FeCAM's correlation normalisation of each shrunk "
                          "class covariance, C / (sd sd') with sd its standard deviations (the published method)")


@METRICS.register("fecam", settings=[SHRINKAGE, PRIOR, FECAM_DIAGONAL, FECAM_NORMALIZE])
class FeCAMMetric(Metric):
    """FeCAM: -(x - w)' P_c (x - w) with a shrunk covariance per class (or its diagonal).

    The published method (Goswami et al. 2023; the authors' code for frozen pretrained encoders) shrinks each
    class covariance S to S + mean(diag S) I, which is shrinkage=0.5 up to a factor 2, then normalises it to a
    correlation matrix (``fecam_normalize``): the factor cancels, so shrinkage=0.5 with fecam_normalize=True is
    FeCAM exactly (the ``fecam`` preset).

    A class with fewer samples than dimensions has a covariance of rank r < d: its shrunk precision is kept as a
    scaled identity less a rank-r term (O(K d r) memory and time instead of O(K d^2)); otherwise as a d x d
    matrix per class."""

    def __init__(self, shrinkage: float | str = "ledoit_wolf", prior: str = "uniform", fecam_diagonal: bool = False,
                 fecam_normalize: bool = False, precisions: Tensor | None = None, class_counts: Tensor | None = None,
                 scales: Tensor | None = None, bases: Tensor | None = None, coefs: Tensor | None = None,
                 levels: Tensor | None = None, **options: Any) -> None:
        super().__init__()
        if shrinkage == AUTO:
            raise ValueError("shrinkage='auto' is resolved by the classifier before the stage is built")
        self.shrinkage, self.prior, self.diagonal = shrinkage, prior, bool(fecam_diagonal)
        self.normalize = bool(fecam_normalize)
        self.class_counts = class_counts
        for name in ("weights", "bias", "owner"):
            self.register_buffer(name, None)
        self.register_buffer("precisions", precisions)  # K x d x d (or K x d: the diagonal)
        self.low_rank = None if scales is None else LowRankPrecisions(scales, bases, coefs, levels)

    @property
    def scratch_per_query(self) -> int:
        if self.diagonal or self.precisions is None:
            return 0
        return int(self.precisions.shape[0] * self.precisions.shape[1])

    def _class_precisions(self, support: Support, counts: Tensor, proxies: Tensor,
                          proxy_counts: Tensor) -> Tensor | LowRankPrecisions:
        statistics = residual_statistics(support, proxies, proxy_counts, per_class=True)
        self.statistics = [statistics[c] for c in range(len(counts))]  # kept for candidate_scores, not saved
        self.spectra: list[tuple[Tensor, Tensor, float]] | None = None  # their eigendecompositions, when asked
        if not self.diagonal and all(s.rows is not None for s in self.statistics):
            low_rank = LowRankPrecisions.of(self.statistics, self.shrinkage, self.normalize)
            if low_rank is not None:
                return low_rank
        out = []
        for c in range(len(counts)):
            covariance = _class_covariance(statistics[c], self.shrinkage, self.normalize)
            if self.diagonal:
                out.append(1.0 / torch.diagonal(covariance).clamp_min(1e-12 * float(torch.diagonal(covariance).max())
                                                                       + 1e-300))
            else:
                out.append(precision(covariance))
        return torch.stack(out).to(proxies.dtype)

    def _set_precisions(self, fitted: Tensor | LowRankPrecisions) -> None:
        if isinstance(fitted, LowRankPrecisions):
            self.low_rank, self.precisions = fitted, None
        else:
            self.low_rank, self.precisions = None, fitted

    def fit(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor) -> FeCAMMetric:
        self._set_precisions(self._class_precisions(support, counts, proxies, proxy_counts))
        self.class_counts = counts.detach().cpu().long()
        self.set_proxies(proxies, proxy_counts)
        return self

    def extend(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor,
               new: Tensor) -> FeCAMMetric:
        new_proxies = proxies[new.to(proxies.device)[class_of_proxy(proxy_counts.to(proxies.device))]]
        added = self._class_precisions(support, counts, new_proxies, proxy_counts[new])
        if isinstance(added, LowRankPrecisions) and self.low_rank is not None:
            self._set_precisions(self.low_rank.merged(added, new))
        else:
            added = added.full() if isinstance(added, LowRankPrecisions) else added
            old = self.low_rank.full() if self.low_rank is not None else self.precisions
            precisions = torch.empty((len(new), *added.shape[1:]), dtype=added.dtype, device=added.device)
            precisions[new.to(added.device)] = added
            precisions[~new.to(added.device)] = old.to(added.device, added.dtype)
            self._set_precisions(precisions)
        merged = torch.empty(len(new), dtype=torch.long)
        merged[new.cpu()] = counts.cpu().long()
        merged[~new.cpu()] = self.class_counts
        self.class_counts = merged
        self.set_proxies(proxies, proxy_counts)
        return self

    def restrict(self, keep: Tensor, proxies: Tensor, proxy_counts: Tensor) -> FeCAMMetric:
        if self.low_rank is not None:
            self.low_rank = self.low_rank.restricted(keep)
        else:
            self.precisions = self.precisions[keep.to(self.precisions.device)]
        self.class_counts = self.class_counts[keep.cpu()]
        self.set_proxies(proxies, proxy_counts)
        return self

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        super().set_proxies(proxies, proxy_counts)
        owner = class_of_proxy(proxy_counts.to(proxies.device))
        if self.low_rank is not None:
            self.weights = self.low_rank.apply(owner, proxies).to(proxies.dtype)
        else:
            P = self.precisions.to(proxies.device)
            if self.diagonal:
                self.weights = P[owner] * proxies  # P_c w
            else:
                self.weights = torch.bmm(P[owner], proxies[:, :, None])[:, :, 0]
        prior = _log_prior(self.class_counts.to(proxies.device), self.prior, proxies.dtype)
        self.bias = -(self.weights * proxies).sum(1) + prior[owner]  # -w' P_c w + log prior
        self.owner = owner

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        if self.low_rank is not None:
            quadratic = self.low_rank.quadratic(queries)  # (n, K): x' P_c x
        else:
            P = self.precisions.to(queries.device, queries.dtype)
            if self.diagonal:
                quadratic = (queries * queries) @ P.T
            else:  # (K, n, d) in one batched product
                quadratic = (torch.matmul(queries, P) * queries).sum(-1).T
        scores = torch.addmm(self.bias, queries, self.weights.T, alpha=2.0)
        return scores.sub_(quadratic[:, self.owner])

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-scores).clamp_min(0.0).sqrt()

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """Every shrinkage from one eigendecomposition per class covariance (not with the correlation
        normalisation, which changes the eigenvectors with the shrinkage)."""
        if name != "shrinkage" or getattr(self, "statistics", None) is None or self.diagonal or self.normalize:
            return None
        owner = class_of_proxy(self.proxy_counts.to(self.proxies.device))
        prior = _log_prior(self.class_counts.to(self.proxies.device), self.prior, torch.float64)
        out = [torch.empty(len(queries), len(self.proxies), dtype=torch.float64, device=queries.device)
               for _ in values]
        if self.spectra is None:  # once per fit, not once per block of queries
            self.spectra = [_spectrum(statistics) for statistics in self.statistics]
        for c, (statistics, spectrum) in enumerate(zip(self.statistics, self.spectra)):
            columns = torch.nonzero(owner == c)[:, 0]
            for i, quadratic in enumerate(_shrunk_quadratics(statistics, spectrum, values, queries,
                                                             self.proxies[columns])):
                out[i][:, columns] = -quadratic + prior[c]
        return out

    def options(self) -> dict[str, Any]:
        options = {"shrinkage": self.shrinkage, "prior": self.prior, "fecam_diagonal": self.diagonal}
        return {**options, "fecam_normalize": True} if self.normalize else options  # older files: no key

    def tensors(self) -> dict[str, Tensor]:
        if self.low_rank is not None:
            return {**self.low_rank.tensors(), "class_counts": self.class_counts}
        return {"precisions": self.precisions, "class_counts": self.class_counts}


def _class_covariance(statistics: Scatter, shrinkage: float | str, normalize: bool) -> Tensor:
    """A class's shrunk covariance, normalised to a correlation matrix with `normalize` (FeCAM)."""
    covariance, _ = shrunk_covariance(statistics, shrinkage)
    if normalize:  # a feature with no variance keeps unit variance
        deviations = torch.diagonal(covariance).clamp_min(1e-300).sqrt()
        covariance = covariance / (deviations[:, None] * deviations[None, :])
    return covariance


class LowRankPrecisions:
    """Per class, the precision of a shrunk covariance of rank r < d as P_c = level_c s_c^2 - U_c diag(coef_c) U_c'
    (U_c = s_c x the r eigenvectors, s_c the correlation scaling or ones): what a class of few samples needs, in
    O(d r) instead of O(d^2). Classes with fewer eigenpairs are padded with zero coefficients."""

    def __init__(self, scales: Tensor, bases: Tensor, coefs: Tensor, levels: Tensor) -> None:
        self.scales, self.bases, self.coefs, self.levels = scales, bases, coefs, levels

    @classmethod
    def of(cls, statistics: list[Scatter], shrinkage: float | str, normalize: bool) -> LowRankPrecisions | None:
        """From each class's residual rows; None where a class's shrunk covariance is singular (no shrinkage)."""
        from imprint.stages.covariance import shrinkage_amount

        d = statistics[0].outer.shape[0]
        parts = []
        for stats in statistics:
            values, vectors, mu = _spectrum(stats)
            a = shrinkage_amount(stats, shrinkage)
            if mu <= 0:  # no variance at all: the identity, as the full path gives
                values, vectors, level, scale = values[:0], vectors[:, :0], 1.0, torch.ones(d, dtype=torch.float64)
                coef = values
            else:
                if a * mu <= 1e-12 * max(mu, 1e-300):
                    return None
                shrunk = (1.0 - a) * values + a * mu
                level = 1.0 / (a * mu)
                coef = level - 1.0 / shrunk
                scale = torch.ones(d, dtype=torch.float64, device=vectors.device)
                if normalize:  # sqrt of the shrunk variances: P = diag(s) S^-1 diag(s)
                    variances = (1.0 - a) * (vectors.square() @ values) + a * mu
                    scale = variances.clamp_min(1e-300).sqrt()
            parts.append((scale, vectors * scale[:, None], coef, level))
        width = max(1, max(len(coef) for _, _, coef, _ in parts))
        bases = torch.zeros(len(parts), d, width, dtype=torch.float64)
        coefs = torch.zeros(len(parts), width, dtype=torch.float64)
        for c, (_, basis, coef, _) in enumerate(parts):
            bases[c, :, :basis.shape[1]] = basis
            coefs[c, :len(coef)] = coef
        scales = torch.stack([scale.cpu() for scale, _, _, _ in parts])
        levels = torch.tensor([level for _, _, _, level in parts], dtype=torch.float64)
        return cls(scales.float(), bases.float(), coefs.float(), levels.float())

    def apply(self, owner: Tensor, V: Tensor) -> Tensor:
        """P_c v for each row v of V, c its class (`owner`)."""
        device = V.device
        scales, bases, coefs, levels = (t.to(device, torch.float64) for t in
                                        (self.scales, self.bases, self.coefs, self.levels))
        V64 = V.double()
        projected = torch.einsum("pdr,pd->pr", bases[owner], V64) * coefs[owner]
        return levels[owner, None] * scales[owner].square() * V64 - torch.einsum("pdr,pr->pd", bases[owner], projected)

    def quadratic(self, queries: Tensor) -> Tensor:
        """(n, K): x' P_c x for every query and class, from one product with the stacked bases."""
        K, d, r = self.bases.shape
        scales = self.scales.to(queries.device, queries.dtype)
        spread = (queries * queries) @ scales.square().T * self.levels.to(queries.device, queries.dtype)
        projections = queries @ self.bases.to(queries.device, queries.dtype).permute(1, 0, 2).reshape(d, K * r)
        weighted = projections.square().view(-1, K, r) * self.coefs.to(queries.device, queries.dtype)
        return spread - weighted.sum(-1)

    def full(self) -> Tensor:
        """The K x d x d precisions."""
        out = []
        for scale, basis, coef, level in zip(self.scales.double(), self.bases.double(), self.coefs.double(),
                                             self.levels.double()):
            out.append(level * torch.diag(scale.square()) - (basis * coef) @ basis.T)
        return torch.stack(out).float()

    def merged(self, other: LowRankPrecisions, new: Tensor) -> LowRankPrecisions:
        """These classes and `other`'s, placed where `new` marks the new ones."""
        width = max(self.bases.shape[2], other.bases.shape[2])

        def padded(t: Tensor) -> Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[-1]))

        parts = []
        for mine, theirs in ((self.scales, other.scales), (padded(self.bases), padded(other.bases)),
                             (padded(self.coefs), padded(other.coefs)), (self.levels, other.levels)):
            merged = torch.empty((len(new), *mine.shape[1:]), dtype=mine.dtype)
            merged[new.cpu()] = theirs.cpu()
            merged[~new.cpu()] = mine.cpu()
            parts.append(merged)
        return LowRankPrecisions(*parts)

    def restricted(self, keep: Tensor) -> LowRankPrecisions:
        keep = keep.cpu()
        return LowRankPrecisions(self.scales[keep], self.bases[keep], self.coefs[keep], self.levels[keep])

    def tensors(self) -> dict[str, Tensor]:
        return {"scales": self.scales, "bases": self.bases, "coefs": self.coefs, "levels": self.levels}


def _lambda_candidates(**_: object) -> list[float]:
    return [1e-3, 1e-2, 1e-1, 1.0, 10.0]


RIDGE_LAMBDA = Setting("ridge_lambda", float, AUTO, "ridge: regularisation, relative to the mean eigenvalue of the "
                       "Gram matrix (so it does not depend on the embedding scale); auto: chosen by "
                       "cross-validation on the support set", low=0.0, open_low=True, auto=True,
                       tunable=_lambda_candidates)


@METRICS.register("ridge", settings=[RIDGE_LAMBDA])
class RidgeMetric(Metric):
    """Ridge regression onto one-hot proxy targets: scores x' (G + lambda tr(G)/d I)^-1 Q with G = sum x x'
    and Q_j the sum of the rows nearest to proxy j (RanPAC with random_relu features).

    With fewer rows N than features d (RanPAC's wide projections on a few-shot support set) it solves the same
    system in its dual form, H' (H H' + lambda tr(G)/d I)^-1 A (A the rows' one-hot proxies): N^3 instead of
    d^3 work, the same weights. The Gram matrix G (its sufficient statistic, what is saved and what classes
    are added to) is then formed only when needed."""

    has_distance = False
    forgets_classes = False
    fold_statistics = RidgeFolds

    def __init__(self, ridge_lambda: float | str = 1.0, gram: Tensor | None = None, targets: Tensor | None = None,
                 weights: Tensor | None = None, **options: Any) -> None:
        super().__init__()
        if ridge_lambda == AUTO:
            raise ValueError("ridge_lambda='auto' is resolved by the classifier before the stage is built")
        self.ridge_lambda = float(ridge_lambda)
        self._gram, self.targets = gram, targets
        self.rows: Tensor | None = None  # the dual form's rows (N x d) and the proxy each is assigned to
        self.assigned: Tensor | None = None
        self._saved_weights = weights  # read back from a file: used as they are, not solved again
        self.register_buffer("weights", None)

    @property
    def gram(self) -> Tensor:
        if self._gram is None:
            self._gram = second_moment(self.rows)
        return self._gram

    @staticmethod
    def _assignments(support: Support, proxies: Tensor, proxy_counts: Tensor) -> tuple[Tensor, Tensor]:
        """The rows grouped by class (N x d) and the index of each one's nearest proxy of its own class."""
        rows, nearest_of = [], []
        for _, (P, mask), nearest in nearest_own_centroid(support, proxies, proxy_counts):
            rows.append(P[mask])
            nearest_of.append(nearest[mask])
        return torch.cat(rows), torch.cat(nearest_of)

    def _fit_statistics(self, support: Support, proxies: Tensor, proxy_counts: Tensor) -> None:
        d = proxies.shape[1]
        if uses_dual(len(support), d):  # dual form: keep the rows
            self.rows, self.assigned = self._assignments(support, proxies, proxy_counts)
            self._gram = None
            self.targets = torch.zeros(len(proxies), d, dtype=torch.float64, device=self.rows.device).index_add_(
                0, self.assigned, self.rows.double())
            return
        one_proxy = bool((proxy_counts == 1).all())  # each row's target is its class's proxy: one pass will do
        gram = torch.zeros(d, d, dtype=torch.float64, device=proxies.device)
        targets = torch.zeros(len(proxies), d, dtype=torch.float64, device=proxies.device)
        for codes, block in support.blocks():
            gram += second_moment(block).to(gram.device)
            if one_proxy:
                targets.index_add_(0, codes.to(gram.device), block.double().to(gram.device))
        if not one_proxy:
            for _, (P, mask), nearest in nearest_own_centroid(support, proxies, proxy_counts):
                targets.index_add_(0, nearest[mask].to(gram.device), P[mask].double().to(gram.device))
        self._gram, self.targets, self.rows, self.assigned = gram, targets, None, None

    def fit(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor) -> RidgeMetric:
        self._fit_statistics(support, proxies, proxy_counts)
        self.set_proxies(proxies, proxy_counts)
        return self

    def extend(self, support: Support, counts: Tensor, proxies: Tensor, proxy_counts: Tensor,
               new: Tensor) -> RidgeMetric:
        is_new = new.to(proxies.device)[class_of_proxy(proxy_counts.to(proxies.device))]
        grown = RidgeMetric(self.ridge_lambda)
        grown._fit_statistics(support, proxies[is_new], proxy_counts[new])
        merged = torch.empty(len(proxies), self.targets.shape[1], dtype=torch.float64, device=self.targets.device)
        merged[is_new.to(merged.device)] = grown.targets.to(merged.device)
        merged[~is_new.to(merged.device)] = self.targets
        self._gram = self.gram + grown.gram.to(self.gram.device)  # the primal form from here on
        self.targets, self.rows, self.assigned = merged, None, None
        self.set_proxies(proxies, proxy_counts)
        return self

    def restrict(self, keep: Tensor, proxies: Tensor, proxy_counts: Tensor) -> Metric:
        raise NotIncrementalError("metric='ridge' keeps one Gram matrix over all samples, so a class cannot be "
                                  "taken out exactly; fit again on the remaining classes")

    def _scale(self) -> float:
        """tr(G) / d, which the dual form reads off its rows."""
        trace = float(torch.linalg.vector_norm(self.rows, dtype=torch.float64).square()) if self.rows is not None \
            else float(torch.diagonal(self.gram).sum())
        return max(trace / self.targets.shape[1], 1e-300)

    def _solutions(self, values: list[float]) -> list[Tensor]:
        """The d x p weights for each ridge value (relative to tr(G) / d)."""
        scale = self._scale()
        if self.rows is None:
            return [ridge_solve(self.gram, self.targets, value * scale) for value in values]
        kernel = (self.rows @ self.rows.T).double()
        onehot = torch.zeros(len(self.rows), len(self.targets), dtype=torch.float64, device=self.rows.device)
        onehot[torch.arange(len(self.rows), device=self.rows.device), self.assigned] = 1.0
        return [(ridge_solve(kernel, onehot.T, value * scale).T.float() @ self.rows).T.double() for value in values]

    def set_proxies(self, proxies: Tensor, proxy_counts: Tensor) -> None:
        super().set_proxies(proxies, proxy_counts)
        self.candidate_solutions: tuple[tuple[float, ...], list[Tensor]] | None = None
        self.weights = None  # solved when first needed: a model inside cross-validation that scores candidates
        if self._saved_weights is not None and self._saved_weights.shape[0] == len(proxies):  # never needs it
            self.weights, self._saved_weights = self._saved_weights.to(proxies.device, proxies.dtype), None

    def solve(self) -> None:
        """The weights at this head's ridge value (one solve)."""
        if self.weights is None:
            solution, = self._solutions([self.ridge_lambda])  # d x p
            self.weights = solution.T.to(self.proxies.device, self.proxies.dtype).contiguous()

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        self.solve()
        return torch.mm(queries, self.weights.T, out=out) if out is not None else queries @ self.weights.T

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """Every lambda from the one Gram (or kernel) matrix: a solve each, not a refit."""
        if name != "ridge_lambda":
            return None
        lambdas = tuple(float(value) for value in values)
        if self.candidate_solutions is None or self.candidate_solutions[0] != lambdas:  # once per fit, not per block
            self.candidate_solutions = (lambdas, self._solutions(list(lambdas)))
        return [queries.double() @ solution.to(queries.device) for solution in self.candidate_solutions[1]]

    def options(self) -> dict[str, Any]:
        return {"ridge_lambda": self.ridge_lambda}

    def tensors(self) -> dict[str, Tensor]:
        self.solve()
        return {"gram": self.gram, "targets": self.targets, "weights": self.weights}


def _beta_candidates(**_: object) -> list[float]:
    return [1.0, 3.0, 5.5, 10.0, 20.0, 50.0, 100.0, 200.0]


KERNEL_BETA = Setting("beta", float, AUTO, "kernel: sharpness of exp(-beta (1 - cos)) (Tip-Adapter's beta); auto: "
                      "chosen by cross-validation on the support set", low=0.0, open_low=True, auto=True,
                      tunable=_beta_candidates)


@METRICS.register("kernel", settings=[KERNEL_BETA])
class KernelMetric(Metric):
    """Tip-Adapter's cache affinity exp(-beta (1 - <x, w>)) (use L2-normalised queries and proxies)."""

    def __init__(self, beta: float | str = 5.5, **options: Any) -> None:
        super().__init__()
        if beta == AUTO:
            raise ValueError("beta='auto' is resolved by the classifier before the stage is built")
        self.beta = float(beta)

    def forward(self, queries: Tensor, out: Tensor | None = None) -> Tensor:
        scores = torch.mm(queries, self.proxies.T, out=out) if out is not None else queries @ self.proxies.T
        return scores.sub_(1.0).mul_(self.beta).exp_()

    def candidate_scores(self, name: str, values: list[Any], queries: Tensor) -> Iterable[Tensor] | None:
        """Every beta from one matrix of cosines, one beta's scores at a time (there is a column per support
        sample, so holding them all would take len(values) times the memory)."""
        if name != "beta":
            return None
        cosines = queries @ self.proxies.T - 1.0
        return ((cosines * float(value)).exp_() for value in values)

    def to_distance(self, scores: Tensor) -> Tensor:
        return (-torch.log(scores.clamp_min(1e-30)) / self.beta).clamp_min(0.0)

    def options(self) -> dict[str, Any]:
        return {"beta": self.beta}


def _spectrum(statistics: Scatter) -> tuple[Tensor, Tensor, float]:
    """Eigenvalues and eigenvectors (float64) of the covariance of `statistics`, and its mean variance: every
    shrinkage of it is a reweighting of the same eigenvectors. With fewer residuals than dimensions, only the
    r non-zero eigenpairs (d x r vectors, from the n x n Gram matrix of the residuals: n^3 work instead of d^3);
    the other directions have eigenvalue 0."""
    S_scale = max(1, statistics.n - statistics.means)
    d = statistics.outer.shape[0]
    if statistics.rows is not None:
        R = statistics.rows
        gram_values, gram_vectors = torch.linalg.eigh(R @ R.T / S_scale)
        keep = gram_values > max(float(gram_values.max()), 1e-300) * 1e-12
        values = gram_values[keep]
        vectors = (R.T @ gram_vectors[:, keep]) / (values * S_scale).sqrt()
        return values, vectors, float(gram_values.clamp_min(0).sum()) / d
    S = statistics.covariance()
    values, vectors = torch.linalg.eigh(S)
    return values, vectors, float(torch.diagonal(S).sum()) / S.shape[0]


def _shrunk_quadratics(statistics: Scatter, spectrum: tuple[Tensor, Tensor, float], values: list[Any],
                       queries: Tensor, proxies: Tensor) -> list[Tensor]:
    """(x - w)' P_a (x - w) for every query x, proxy w and shrinkage value a, P_a the inverse of the shrunk
    covariance of `statistics` (whose `spectrum` is given). The queries are rotated once, in their own precision
    (as prediction reads them: the one d x d product per query and class), then every value's quadratic x' P_a x
    and cross term x' P_a w come from one float64 product each, for all values at once. With a spectrum of r < d
    eigenpairs, the other d - r directions contribute ||x - w||^2 / (a mu) (their shrunk eigenvalue is a mu)."""
    from imprint.stages.covariance import shrinkage_amount

    eigenvalues, vectors, mu = spectrum
    d = statistics.outer.shape[0]
    thin = vectors.shape[1] < d
    vectors = vectors.to(queries.device)
    U, V = (queries @ vectors.to(queries.dtype)).double(), proxies.double() @ vectors
    inverses, rest = [], []
    for value in values:
        a = shrinkage_amount(statistics, value)
        shrunk = (1.0 - a) * eigenvalues + a * mu if mu > 0 else torch.ones_like(eigenvalues)
        floor = max(float(shrunk.max()) if len(shrunk) else 0.0, a * mu, 1e-300) * 1e-9
        outside = max(a * mu, floor) if mu > 0 else 1.0  # the eigenvalue of the directions left out
        inverses.append(1.0 / shrunk.clamp_min(floor) - (1.0 / outside if thin else 0.0))
        rest.append(1.0 / outside if thin else 0.0)
    inverse = torch.stack(inverses, dim=1).to(queries.device)  # r x values
    if len(inverse):
        query_terms = U.square() @ inverse  # n x values
        proxy_terms = V.square() @ inverse  # p x values
        cross = U @ (V.T[:, :, None] * inverse[:, None, :]).reshape(len(U.T), -1)  # n x (p * values)
        cross = cross.view(len(U), len(V), len(values))
        out = [query_terms[:, i, None] - 2.0 * cross[:, :, i] + proxy_terms[None, :, i] for i in range(len(values))]
    else:  # no variance at all: only the shrinkage's identity part
        out = [torch.zeros(len(U), len(V), dtype=torch.float64, device=queries.device) for _ in values]
    if thin:  # + ||x - w||^2 / (a mu) for every value
        Q, W = queries.double(), proxies.double()
        distances = (Q.square().sum(1)[:, None] - 2.0 * Q @ W.T + W.square().sum(1)[None, :]).clamp_min(0.0)
        out = [scores + distances * extra for scores, extra in zip(out, rest)]
    return out


def make_metric(name: str, settings: dict[str, Any]) -> Metric:
    """Build the metric registered as `name` with the settings it declares."""
    entry = METRICS.entry(name)
    return entry.impl(**{s.name: settings[s.name] for s in entry.settings if s.name in settings})


def restore_metric(name: str, options: dict[str, Any], tensors: dict[str, Tensor], proxies: Tensor,
                   proxy_counts: Tensor) -> Metric:
    """Rebuild a fitted metric from its saved options and tensors and the proxies."""
    metric = METRICS.get(name)(**options, **tensors)
    metric.set_proxies(proxies, proxy_counts)
    return metric
