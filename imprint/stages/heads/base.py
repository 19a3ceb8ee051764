"""What every head shares: the ``Metric`` base class (scores of queries against stored proxies), the residual
statistics and spectra the covariance heads read, and how a head is built and restored by name."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from imprint.core.errors import UserError
from imprint.core.support import Support
from imprint.stages.covariance import Scatter
from imprint.stages.heads import METRICS
from imprint.stages.kmeans import nearest_own_centroid


class NotIncrementalError(UserError):
    """A metric whose fitted statistics cannot lose (or gain) classes exactly."""


def class_of_proxy(proxy_counts: Tensor) -> Tensor:
    """Class index of every proxy (proxies are grouped by class)."""
    return torch.repeat_interleave(torch.arange(len(proxy_counts), device=proxy_counts.device), proxy_counts)


def new_proxies_mask(new: Tensor, proxy_counts: Tensor, device: torch.device) -> Tensor:
    """Which proxies belong to the classes marked in `new` (one flag per class), on `device`: what ``extend``
    imprints afresh while the other classes keep their state."""
    return new.to(device)[class_of_proxy(proxy_counts.to(device))]


class Metric(nn.Module):
    """Base class: scores of queries against stored proxies. Stateless metrics only hold the proxies."""

    #: whether ``ranking`` may drop a per-query constant from ``forward`` (true for the distances)
    has_query_term = False
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

    def merge_class_counts(self, new: Tensor, counts: Tensor) -> None:
        """``class_counts`` after ``extend`` (for heads that weigh classes by their samples): `counts` for the new
        classes marked in `new`, the counts kept for the others."""
        merged = torch.empty(len(new), dtype=torch.long)
        merged[new.cpu()] = counts.cpu().long()
        merged[~new.cpu()] = self.class_counts
        self.class_counts = merged

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


def log_prior(counts: Tensor, prior: str, dtype: torch.dtype) -> Tensor:
    if prior == "uniform":
        return torch.zeros(len(counts), dtype=dtype, device=counts.device)
    return (counts.double() / counts.sum()).log().to(dtype)


def spectrum(statistics: Scatter) -> tuple[Tensor, Tensor, float]:
    """Eigenvalues and eigenvectors (float64) of the covariance of `statistics`, and its mean variance: every
    shrinkage of it is a reweighting of the same eigenvectors. With fewer residuals than dimensions, only the
    r non-zero eigenpairs (d x r vectors, from the n x n Gram matrix of the residuals: n^3 work instead of d^3);
    the other directions have eigenvalue 0."""
    S_scale = max(1, statistics.n - statistics.means)
    d = statistics.dim
    if statistics.rows is not None:
        R = statistics.rows.double()
        gram_values, gram_vectors = torch.linalg.eigh(statistics.gram() / S_scale)
        keep = gram_values > max(float(gram_values.max()), 1e-300) * 1e-12
        values = gram_values[keep]
        vectors = (R.T @ gram_vectors[:, keep]) / (values * S_scale).sqrt()
        return values, vectors, float(gram_values.clamp_min(0).sum()) / d
    S = statistics.covariance()
    values, vectors = torch.linalg.eigh(S)
    return values, vectors, float(torch.diagonal(S).sum()) / S.shape[0]


def shrunk_quadratics(statistics: Scatter, spectrum: tuple[Tensor, Tensor, float], values: list[Any],
                       queries: Tensor, proxies: Tensor) -> list[Tensor]:
    """(x - w)' P_a (x - w) for every query x, proxy w and shrinkage value a, P_a the inverse of the shrunk
    covariance of `statistics` (whose `spectrum` is given). The queries are rotated once, in their own precision
    (as prediction reads them: the one d x d product per query and class), then every value's quadratic x' P_a x
    and cross term x' P_a w come from one float64 product each, for all values at once. With a spectrum of r < d
    eigenpairs, the other d - r directions contribute ||x - w||^2 / (a mu) (their shrunk eigenvalue is a mu)."""
    from imprint.stages.covariance import shrinkage_amount

    eigenvalues, vectors, mu = spectrum
    d = statistics.dim
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
