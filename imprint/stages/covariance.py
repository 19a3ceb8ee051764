"""Within-class covariance from streamed sufficient statistics, shrunk so it can always be inverted.

The statistics of residuals r (a sample minus its class's or proxy's mean) are kept as sums: the scatter
sum r r' (d x d, float64), sum ||r||^4 (for Ledoit-Wolf) and the counts. They add up exactly when classes
are added, and they never need the samples again. Shrinkage blends the covariance S with a multiple of the
identity, (1 - a) S + a (tr(S) / d) I, with ``a`` from Ledoit-Wolf, OAS (both as in scikit-learn, from the
same sums), the GDA paper's trace rule (P = d (N S + tr(S) I)^-1, i.e. a = d / (N + d)) or a fixed number.
With fewer samples than dimensions S is singular; the shrunk estimate is not, and a covariance with no
variance at all (every residual zero) falls back to the identity, so scores stay finite.
"""
from __future__ import annotations

import torch
from torch import Tensor

from imprint.core.errors import UserError
from imprint.stages.heads import ESTIMATORS

ROW_BLOCK = 1 << 12  # rows per block: float32 sums of 4096 products, then float64


def second_moment(R: Tensor) -> Tensor:
    """sum r r' over the rows of R (float64): each block's products in R's precision (float32: twice the speed of
    float64), their sums in float64."""
    outer = torch.zeros(R.shape[1], R.shape[1], dtype=torch.float64, device=R.device)
    for block in R.split(ROW_BLOCK):
        outer += (block.T @ block).double()
    return outer


class Scatter:
    """Sufficient statistics of residuals: sum r r' (float64), sum ||r||^4, residual count, means removed. While
    there are fewer residuals than dimensions the residual rows are kept (`rows`, in their own precision, not
    saved), and the covariance's eigendecomposition comes from their small n x n Gram matrix; for at most half as
    many residuals as dimensions sum r r' is only formed when asked for, its trace and Frobenius norm also coming
    from the Gram matrix (a fold model or a class of few samples never builds the d x d matrix)."""

    def __init__(self, outer: Tensor | None, fourth: float, n: int, means: int, rows: Tensor | None = None) -> None:
        if outer is None and rows is None:
            raise ValueError("a Scatter needs its sum of outer products or its rows")
        self._outer, self.fourth, self.n, self.means, self.rows = outer, fourth, n, means, rows
        self._gram: Tensor | None = None
        self._norms: tuple[float, float] | None = None  # (trace, squared Frobenius norm) of sum r r'

    @classmethod
    def of(cls, R: Tensor, means: int) -> Scatter:
        """Statistics of the residual rows R (the fourth moments summed in float64). The d x d scatter is deferred
        for at most half as many rows as dimensions, where the n x n Gram matrix costs at most half as much."""
        fourth = sum(float(block.double().square().sum(1).square().sum()) for block in R.split(ROW_BLOCK))
        if 2 * len(R) <= R.shape[1]:
            return cls(None, fourth, len(R), means, R)
        return cls(second_moment(R), fourth, len(R), means, R if len(R) < R.shape[1] else None)

    @property
    def dim(self) -> int:
        return int((self.rows if self._outer is None else self._outer).shape[1])

    @property
    def outer(self) -> Tensor:
        """sum r r' (d x d, float64), formed from the rows on first use."""
        if self._outer is None:
            self._outer = second_moment(self.rows)
        return self._outer

    def trace(self) -> float:
        """tr(sum r r'): the summed squared norms of the residuals."""
        return self._trace_and_frobenius()[0]

    def frobenius_squared(self) -> float:
        """||sum r r'||_F^2: the same norm as the n x n Gram matrix's, from which it is taken without the d x d."""
        return self._trace_and_frobenius()[1]

    def gram(self) -> Tensor:
        """R R' (n x n, float64) of the kept residual rows R, formed once."""
        if self._gram is None:
            rows = self.rows.double()
            self._gram = rows @ rows.T
        return self._gram

    def _trace_and_frobenius(self) -> tuple[float, float]:
        if self._norms is None:
            square = self.gram() if self._outer is None else self._outer
            self._norms = (float(torch.diagonal(square).sum()), float(square.square().sum()))
        return self._norms

    def covariance(self) -> Tensor:
        """The unbiased covariance: the scatter over the residuals less the degrees of freedom of the means."""
        return self.outer / max(1, self.n - self.means)

    def __add__(self, other: Scatter) -> Scatter:
        n, fourth, means = self.n + other.n, self.fourth + other.fourth, self.means + other.means
        rows = None
        if self.rows is not None and other.rows is not None and n < self.dim:
            dtype = torch.promote_types(self.rows.dtype, other.rows.dtype)
            rows = torch.cat([self.rows.to(dtype), other.rows.to(self.rows.device, dtype)])
            if 2 * n <= self.dim and self._outer is None and other._outer is None:
                return Scatter(None, fourth, n, means, rows)
        return Scatter(self.outer + other.outer.to(self.outer.device), fourth, n, means, rows)

    def tensors(self) -> dict[str, Tensor]:
        return {"outer": self.outer, "counts": torch.tensor([self.fourth, self.n, self.means], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, outer: Tensor, counts: Tensor) -> Scatter:
        return cls(outer.double(), float(counts[0]), int(counts[1]), int(counts[2]))


def shrinkage_amount(stats: Scatter, shrinkage: float | str) -> float:
    """The blend a in [0, 1] towards the scaled identity for a setting value (a number or an estimator)."""
    if not isinstance(shrinkage, str):
        return float(shrinkage)
    d, n = stats.dim, max(1, stats.n)
    if shrinkage == "gda":
        return d / (n + d)
    # S = sum r r' / n, the empirical (biased) covariance, as scikit-learn's estimators use
    mu = stats.trace() / n / d
    frob = stats.frobenius_squared() / n ** 2
    if mu == 0.0:
        return 1.0
    if shrinkage == "ledoit_wolf":
        beta = (stats.fourth / n - frob) / (d * n)
        delta = (frob - 2.0 * mu * mu * d + d * mu * mu) / d
        beta = min(beta, delta)
        return 0.0 if beta <= 0 else float(beta / delta)
    if shrinkage == "oas":
        alpha = frob / d ** 2
        den = (n + 1) * (alpha - mu * mu / d)
        return 1.0 if den <= 0 else float(min((alpha + mu * mu) / den, 1.0))
    raise UserError(f"unknown shrinkage {shrinkage!r}; valid: a number in [0, 1], {', '.join(ESTIMATORS)}")


def shrunk_covariance(stats: Scatter, shrinkage: float | str) -> tuple[Tensor, float]:
    """The shrunk pooled covariance (float64) and the blend used. Degrees of freedom: residuals minus means."""
    d = stats.dim
    S = stats.covariance()
    a = shrinkage_amount(stats, shrinkage)
    mu = float(torch.diagonal(S).sum()) / d
    eye = torch.eye(d, dtype=torch.float64, device=S.device)
    if mu <= 0.0 or not torch.isfinite(S).all():  # no within-class variance at all: plain distances
        return eye, 1.0
    return (1.0 - a) * S + a * mu * eye, a


def shrunk_precision(stats: Scatter, shrinkage: float | str) -> tuple[Tensor, float]:
    """The inverse of ``shrunk_covariance(stats, shrinkage)`` and the blend used. With fewer residuals than
    dimensions (the rows kept) it comes from the n x n system of the Woodbury identity,
    (b I + c R'R)^-1 = (I - R' (b/c I + R R')^-1 R) / b, in O(n^2 d + n d^2) work rather than O(d^3)."""
    covariance, a = shrunk_covariance(stats, shrinkage)
    rows = stats.rows
    if rows is None or not 0.0 < a < 1.0:
        return precision(covariance), a
    d = covariance.shape[0]
    degrees = max(1, stats.n - stats.means)
    b = a * stats.trace() / degrees / d  # a mu
    c = (1.0 - a) / degrees
    rows = rows.to(covariance.device, torch.float64)
    system = rows @ rows.T + (b / c) * torch.eye(len(rows), dtype=torch.float64, device=rows.device)
    inverse = (torch.eye(d, dtype=torch.float64, device=rows.device) - rows.T @ torch.linalg.solve(system, rows)) / b
    return (inverse if torch.isfinite(inverse).all() else precision(covariance)), a


def cholesky_factor(covariance: Tensor) -> Tensor | None:
    """The lower Cholesky factor of a well-conditioned symmetric matrix (a shrunk covariance), or None where its
    diagonal spans more than 10^6 or the factorisation fails."""
    diagonal = torch.diagonal(covariance)
    if not float(diagonal.min()) > 1e-6 * float(diagonal.max()):
        return None
    factor, info = torch.linalg.cholesky_ex(covariance)
    return factor if int(info) == 0 else None


def precision(covariance: Tensor) -> Tensor:
    """Inverse of a symmetric positive semi-definite matrix (float64): by Cholesky when the matrix is well
    conditioned (a shrunk covariance), else by eigendecomposition with eigenvalues floored at 1e-9 of the
    largest, so the inverse is always finite."""
    factor = cholesky_factor(covariance)
    if factor is not None:
        inverse = torch.cholesky_inverse(factor).contiguous()  # row-major, as when read back from a file
        if torch.isfinite(inverse).all():
            return inverse
    values, vectors = torch.linalg.eigh(covariance)
    floor = max(float(values.max()), 1e-300) * 1e-9
    return ((vectors / values.clamp_min(floor)) @ vectors.T).contiguous()
