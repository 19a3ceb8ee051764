"""NORM stages: applied to support embeddings (norm_pre), generated weights (norm_post) and queries (norm_inf).

Each stage is an ``nn.Module``: ``fit_transform`` learns what it needs from a fitting set (only
``quantile`` learns anything), ``forward`` applies the fitted stage to new rows.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from imprint.registry import Registry
from imprint.validation import check_choice

NORMS: Registry[type[Norm]] = Registry("normalisation")
UNIT_TOLERANCE = 1e-6  # rows this close to unit norm are left as they are by l2
QUANTILE_REFERENCES = ("pooled", "sequential")


class Norm(nn.Module):
    """Base class: a row-wise normalisation with optional fitted state."""

    def __init__(self, **options: object) -> None:
        super().__init__()

    def fit_transform(self, X: Tensor, groups: Tensor | None = None) -> Tensor:
        """Fit on X (rows grouped by class code `groups`, sorted) and return X transformed."""
        return self(X)

    def fit(self, X: Tensor) -> Norm:
        """Learn the fitted state from X (stateless stages learn nothing)."""
        return self

    def options(self) -> dict[str, object]:
        """JSON-serialisable settings needed to rebuild this stage."""
        return {}

    def tensors(self) -> dict[str, Tensor]:
        """Fitted arrays needed to rebuild this stage."""
        return {}


@NORMS.register("none")
class NoNorm(Norm):
    """Leave rows unchanged."""

    def forward(self, X: Tensor) -> Tensor:
        return X


@NORMS.register("l2")
class L2Norm(Norm):
    """Scale each row to unit Euclidean norm (all-zero rows stay zero)."""

    def forward(self, X: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(X, dim=1, keepdim=True)
        unit = (norms - 1).abs() <= UNIT_TOLERANCE
        if bool(unit.all()):  # already unit rows: no copy of a large set
            return X
        # row by row, so a row's result never depends on the other rows of its batch
        return torch.where(unit, X, X / norms.clamp_min(1e-12))  # faster than F.normalize


def _quantile_grid(values: np.ndarray, d: int) -> np.ndarray:
    """The d quantiles Q((i + 0.5) / d), i = 0..d-1, of `values` (float64 for accuracy)."""
    probs = (np.arange(d, dtype=np.float64) + 0.5) / d
    return np.quantile(values.astype(np.float64, copy=False).ravel(), probs).astype(np.float32)


@NORMS.register("quantile")
class QuantileNorm(Norm):
    """Replace each row's entries, in rank order, by the quantiles of a reference distribution.

    Every transformed row holds the same multiset of values. ``reference="pooled"`` (default) takes
    the pooled values of all rows of the fitting set, so the result does not depend on class order.
    ``reference="sequential"`` reproduces the IMPRINT paper: the first class is left unchanged and each
    later class is mapped onto the values of all classes before it (order-dependent, O(C N d)).
    After fitting, new rows (queries, classes added later) use the pooled reference of the fitted rows.
    """

    def __init__(self, reference: str = "pooled", values: Tensor | None = None, **options: object) -> None:
        super().__init__()
        self.reference = check_choice(reference, "quantile_reference", QUANTILE_REFERENCES)
        self.register_buffer("values", values)

    def _map(self, X: Tensor, sorted_values: Tensor) -> Tensor:
        ranks = X.argsort(dim=1).argsort(dim=1)
        return sorted_values.to(X.device, X.dtype)[ranks]

    def fit_transform(self, X: Tensor, groups: Tensor | None = None) -> Tensor:
        d = X.shape[1]
        if self.reference == "pooled" or groups is None:
            return self.fit(X)._map(X, self.values)
        out = X.clone()
        bounds = [0] + torch.searchsorted(groups, torch.unique(groups), right=True).tolist()
        for start, stop in zip(bounds[1:-1], bounds[2:]):  # the first class stays unchanged
            reference = torch.from_numpy(_quantile_grid(out[:start].cpu().numpy(), d))
            out[start:stop] = self._map(X[start:stop], reference)
        self.values = torch.from_numpy(_quantile_grid(out.cpu().numpy(), d))
        return out

    def fit(self, X: Tensor) -> QuantileNorm:
        self.values = torch.from_numpy(_quantile_grid(X.cpu().numpy(), X.shape[1]))
        return self

    def forward(self, X: Tensor) -> Tensor:
        if self.values is None:
            raise RuntimeError("quantile normalisation used before it was fitted")
        if X.shape[1] != self.values.numel():
            raise ValueError(f"quantile normalisation was fitted on {self.values.numel()} features, got {X.shape[1]}")
        return self._map(X, self.values)

    def options(self) -> dict[str, object]:
        return {"reference": self.reference}

    def tensors(self) -> dict[str, Tensor]:
        return {} if self.values is None else {"values": self.values}


def make_norm(name: str, **options: object) -> Norm:
    """Build the NORM stage registered as `name`."""
    return NORMS.get(name)(**options)
