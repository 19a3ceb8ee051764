"""GDA / LDA (Wang, Lu, Ke, Wang, ICLR 2024): one within-class covariance shared by every class, shrunk; with class
means as proxies, the hard-to-beat linear discriminant of frozen embeddings."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from imprint.core.settings import AUTO
from imprint.core.support import Support
from imprint.stages.covariance import Scatter, cholesky_factor, precision, shrunk_covariance
from imprint.stages.heads.base import (
    Metric,
    NotIncrementalError,
    class_of_proxy,
    log_prior,
    new_proxies_mask,
    residual_statistics,
    shrunk_quadratics,
    spectrum,
)


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
        new_proxies = proxies[new_proxies_mask(new, proxy_counts, proxies.device)]
        self.scatter = self.scatter + residual_statistics(support, new_proxies, proxy_counts[new])
        self.merge_class_counts(new, counts)
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
        P = precision(covariance.to(proxies.device))  # from the saved statistics alone: a loaded file scores the same
        W = proxies.double() @ P
        self.precision_matrix = P.to(proxies.dtype)
        self.weights = W.to(proxies.dtype)
        self.bias = (-0.5 * (W * proxies.double()).sum(1) + self._proxylog_prior()).to(proxies.dtype)

    def _proxylog_prior(self) -> Tensor:
        """The log prior of each proxy's class (float64, on the proxies' device)."""
        device = self.proxies.device
        prior = log_prior(self.class_counts.to(device), self.prior, torch.float64)
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
        prior = self._proxylog_prior()
        if self.spectrum is None:  # once per fit, not once per block of queries
            self.spectrum = spectrum(self.scatter)
        return [-0.5 * quadratic + prior for quadratic in
                shrunk_quadratics(self.scatter, self.spectrum, values, queries, self.proxies)]

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
        return (-0.5 * quadratic + self._proxylog_prior()).to(queries.dtype)

    def options(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "prior": self.prior}

    def tensors(self) -> dict[str, Tensor]:
        tensors = self.scatter.tensors()
        return {"outer": tensors["outer"], "stats": tensors["counts"], "class_counts": self.class_counts}

