"""Ridge regression onto one-hot proxy targets; with random_relu features, RanPAC (McDonnell, Gong, Parvaneh,
Abbasnejad, van den Hengel, NeurIPS 2023)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from imprint.core.settings import AUTO
from imprint.core.support import Support
from imprint.stages.covariance import second_moment
from imprint.stages.heads.base import Metric, NotIncrementalError, new_proxies_mask
from imprint.stages.kmeans import nearest_own_centroid
from imprint.stages.ridge_solve import RidgeFolds, ridge_solve, uses_dual


class RidgeMetric(Metric):
    """Ridge regression onto one-hot proxy targets: scores x' (G + lambda tr(G)/d I)^-1 Q with G = sum x x'
    and Q_j the sum of the rows nearest to proxy j (RanPAC with random_relu features).

    With fewer rows N than features d (RanPAC's wide projections on a few-shot support set) it solves the same
    system in its dual form, H' (H H' + lambda tr(G)/d I)^-1 A (A the rows' one-hot proxies): N^3 instead of
    d^3 work, the same weights. The Gram matrix G (its sufficient statistic, what is saved and what classes
    are added to) is then formed only when needed."""

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
        is_new = new_proxies_mask(new, proxy_counts, proxies.device)
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

