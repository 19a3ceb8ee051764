"""FeCAM (Goswami, Liu, Twardowski, van de Weijer, NeurIPS 2023): one shrunk covariance per class, normalised to a
correlation; low-rank where a class has fewer samples than dimensions."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from imprint.core.settings import AUTO
from imprint.core.support import Support
from imprint.stages.covariance import Scatter, precision, shrunk_covariance
from imprint.stages.heads.base import (
    Metric,
    class_of_proxy,
    log_prior,
    new_proxies_mask,
    residual_statistics,
    shrunk_quadratics,
    spectrum,
)


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
        new_proxies = proxies[new_proxies_mask(new, proxy_counts, proxies.device)]
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
        self.merge_class_counts(new, counts)
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
        prior = log_prior(self.class_counts.to(proxies.device), self.prior, proxies.dtype)
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
        prior = log_prior(self.class_counts.to(self.proxies.device), self.prior, torch.float64)
        out = [torch.empty(len(queries), len(self.proxies), dtype=torch.float64, device=queries.device)
               for _ in values]
        if self.spectra is None:  # once per fit, not once per block of queries
            self.spectra = [spectrum(statistics) for statistics in self.statistics]
        for c, (statistics, eigen) in enumerate(zip(self.statistics, self.spectra)):
            columns = torch.nonzero(owner == c)[:, 0]
            for i, quadratic in enumerate(shrunk_quadratics(statistics, eigen, values, queries,
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

        d = statistics[0].dim
        parts = []
        for stats in statistics:
            values, vectors, mu = spectrum(stats)
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

