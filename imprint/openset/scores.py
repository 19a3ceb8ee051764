"""Rejection scores: how unlike the known classes a query is (higher = more likely unknown).

Each score is a registered stage (``reject=NAME``) fitted on the support set; it sees the raw support
embeddings with their classes and the fitted classifier, so it works with every generator, aggregation
and head. See shared/design/open-set.md for the definitions.

- ``max_score``: minus the best class score.
- ``energy``: minus T log sum exp(class scores / T), T the classifier's temperature.
- ``knn``: minus the cosine similarity to the k-th nearest support sample in the classifier's query space
  (Sun et al. 2022), an exact search in fixed blocks (FAISS's brute force, batch-invariant).
- ``mahalanobis``: Mahalanobis++ (Mueller and Hein 2025): the smallest squared Mahalanobis distance of the
  L2-normalised embedding to a class mean, with one shared Ledoit-Wolf covariance.
- ``neco``: NECO (Ammar et al. 2024): one minus the share of the (centred, L2-normalised) embedding's norm
  inside the principal subspace of the support set, where neural collapse puts the known classes.

Calibration needs the scores of support samples as a model that never saw them would give: leave one out
where that is exact and cheap (knn: each sample against the others), else from the classifier's cross-fitted
fold models.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from imprint.core.settings import AUTO
from imprint.openset import REJECTORS
from imprint.stages.covariance import Scatter, shrunk_precision
from imprint.stages.norm import unit_rows


class Rejector:
    """Base class: fitted on the support set; ``score`` gives one unknown-score per query."""

    #: needs the class scores of the queries (else only the embeddings)
    uses_class_scores = False
    #: its calibration scores come from leave-one-out on the full support set (else from fold models)
    leave_one_out = False

    def __init__(self, **options: Any) -> None:
        self.options_ = {}

    def fit(self, X: Tensor, codes: Tensor, model: Any) -> Rejector:
        """Learn from raw support embeddings X (class codes `codes`) and the fitted ImprintedModel."""
        return self

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        raise NotImplementedError

    def leave_one_out_scores(self, X: Tensor, codes: Tensor, model: Any) -> Tensor:
        raise NotImplementedError

    def traceable_score(self, queries: Tensor, class_scores: Tensor, model: Any) -> Tensor:
        """``score`` in operations a graph export can trace (the same numbers)."""
        return self.score(queries, class_scores, model)

    def options(self) -> dict[str, Any]:
        return dict(self.options_)

    def tensors(self) -> dict[str, Tensor]:
        return {}

    @classmethod
    def restore(cls, options: dict[str, Any], tensors: dict[str, Tensor]) -> Rejector:
        rejector = cls(**options)
        rejector.load_tensors(tensors)
        return rejector

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for name, value in tensors.items():
            setattr(self, name, value)


class MaxScore(Rejector):
    """Minus the best class score (for cosine heads: one minus the best cosine)."""

    uses_class_scores = True

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        return -class_scores.max(dim=1).values


class Energy(Rejector):
    """Minus the free energy T log sum exp(scores / T) of the class scores (T: the classifier's temperature)."""

    uses_class_scores = True

    def __init__(self, temperature: float = 0.01, **options: Any) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.options_ = {"temperature": self.temperature}

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        return -self.temperature * torch.logsumexp(class_scores.double() / self.temperature, dim=1)


def auto_knn_k(counts: np.ndarray) -> int:
    """knn_k "auto" for classes of `counts` support samples: a tenth of the smallest class, from 1 to 50."""
    return max(1, min(50, int(np.min(counts)) // 10))


class KNN(Rejector):
    """Minus the cosine similarity to the k-th nearest support sample in the classifier's query space."""

    leave_one_out = True

    def __init__(self, knn_k: int | str = AUTO, **options: Any) -> None:
        super().__init__()
        self.k = knn_k
        self.support: Tensor | None = None

    def fit(self, X: Tensor, codes: Tensor, model: Any) -> KNN:
        with torch.no_grad():
            self.support = unit_rows(model.norm_inf(X.to(model.proxies.dtype))).contiguous()
        if self.k == AUTO:
            self.k = auto_knn_k(torch.bincount(codes).cpu().numpy())
        self.k = min(int(self.k), len(self.support))
        self.options_ = {"knn_k": self.k}
        return self

    def _kth(self, queries: Tensor, k: int) -> Tensor:
        from imprint.core.search import kth_similarity

        return kth_similarity(queries, self.support, k)

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        return -self._kth(unit_rows(model.norm_inf(queries.to(model.proxies.dtype))), self.k)

    def traceable_score(self, queries: Tensor, class_scores: Tensor, model: Any) -> Tensor:
        """The k-th largest similarity from one product and a top-k (FAISS does not trace)."""
        similarities = unit_rows(model.norm_inf(queries.to(model.proxies.dtype))) @ self.support.T
        return -similarities.topk(min(self.k, self.support.shape[0]), dim=1).values[:, -1]

    def leave_one_out_scores(self, X: Tensor, codes: Tensor, model: Any) -> Tensor:
        """Each support sample against the others: its own row (similarity 1) is the nearest, so take k + 1."""
        return -self._kth(self.support, min(self.k + 1, len(self.support)))

    def tensors(self) -> dict[str, Tensor]:
        return {"support": self.support}


class MahalanobisPlusPlus(Rejector):
    """Smallest squared Mahalanobis distance of the L2-normalised embedding to a class mean (shared, shrunk
    Ledoit-Wolf covariance): Mahalanobis++."""

    leave_one_out = False

    def fit(self, X: Tensor, codes: Tensor, model: Any) -> MahalanobisPlusPlus:
        Z = unit_rows(X.double())
        counts = torch.bincount(codes)
        means = torch.zeros(len(counts), Z.shape[1], dtype=torch.float64, device=Z.device).index_add_(0, codes, Z)
        self.means = means / counts[:, None]
        self.precision, _ = shrunk_precision(Scatter.of(Z - self.means[codes], len(counts)), "ledoit_wolf")
        self.counts = counts.double()
        self.cast = None  # the float32 copies _distances makes
        return self

    def _distances(self, Z: Tensor) -> Tensor:
        """(z - mu_c)' P (z - mu_c) for every row and class: the d x d product in the queries' precision (as the
        classifier scores them; float64 would double the cost of rejection), the three terms summed in float64."""
        if getattr(self, "cast", None) is None or self.cast[0].dtype != Z.dtype:  # once, not once per block
            constant = ((self.means @ self.precision) * self.means).sum(1)
            self.cast = (self.precision.to(Z.dtype), self.means.to(Z.dtype).T.contiguous(), constant)
        precision_, means_t, constant = self.cast
        ZP = Z @ precision_
        return ((ZP * Z).sum(1, keepdim=True).double() - 2.0 * (ZP @ means_t).double() + constant).clamp_min(0.0)

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        return self._distances(unit_rows(queries.float())).min(dim=1).values

    def tensors(self) -> dict[str, Tensor]:
        return {"means": self.means, "precision": self.precision, "counts": self.counts}


class NECO(Rejector):
    """One minus the share of the centred, L2-normalised embedding's norm in the support set's principal
    subspace."""

    def __init__(self, neco_dim: int | str = AUTO, **options: Any) -> None:
        super().__init__()
        self.dim = neco_dim

    def fit(self, X: Tensor, codes: Tensor, model: Any) -> NECO:
        Z = unit_rows(X.double())
        self.center = Z.mean(0)
        centred = Z - self.center
        if len(centred) < centred.shape[1]:  # fewer rows than dimensions: a thin SVD of the rows, not a d x d eigh
            _, singular, rows_t = torch.linalg.svd(centred, full_matrices=False)  # descending
            variance, directions = singular.square(), rows_t.T
        else:
            variance, directions = torch.linalg.eigh(centred.T @ centred)  # ascending: the principal ones last
            variance, directions = variance.flip(0).clamp_min(0.0), directions.flip(1)
        if self.dim == AUTO:
            share = torch.cumsum(variance, 0) / variance.sum().clamp_min(1e-300)
            self.dim = int(torch.searchsorted(share, torch.tensor(0.9, dtype=share.dtype))) + 1
        self.dim = min(int(self.dim), directions.shape[1])
        self.basis = directions[:, :self.dim].contiguous()
        self.options_ = {"neco_dim": self.dim}
        return self

    def score(self, queries: Tensor, class_scores: Tensor | None, model: Any) -> Tensor:
        Z = unit_rows(queries.float()) - self.center.float()  # the queries' precision, as the classifier scores them
        inside = torch.linalg.vector_norm(Z @ self.basis.float(), dim=1).double()
        return 1.0 - inside / torch.linalg.vector_norm(Z, dim=1).double().clamp_min(1e-12)

    def tensors(self) -> dict[str, Tensor]:
        return {"center": self.center, "basis": self.basis}


def make_rejector(name: str, settings: dict[str, Any]) -> Rejector:
    """Build the rejection score `name` with the settings it declares (and the temperature for energy)."""
    entry = REJECTORS.entry(name)
    own = {s.name: settings[s.name] for s in entry.settings if s.name in settings and s.name not in
           ("reject_rate", "unknown_label")}
    return entry.impl(**own, temperature=settings.get("temperature", 0.01))
