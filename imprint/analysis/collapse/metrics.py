"""Neural-collapse metrics (definitions in shared/design/collapse.md), from streamed class statistics.

Centring convention: by default the global mean is the sample-weighted mean of all embeddings
(``centring="weighted"``); ``centring="unweighted"`` uses the plain mean of the class means instead.
The two differ only for imbalanced classes. Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
Sigma_B = (1/K) sum_c m_c m_c^T with m_c = mu_c - mu_G. Everything accumulates in float64 about a
shift (the first batch's mean), so uncentred float32 features lose no precision, and pseudo-inverses
are truncated at an explicit rank (at most K - 1) instead of numpy's default rcond.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from scipy.optimize import nnls

from imprint.core.errors import UserError
from imprint.core.validation import check_embeddings

CENTRINGS = ("weighted", "unweighted")


@dataclass
class CollapseStats:
    """Streaming class statistics: counts, sums, squared norms and the total second moment (d x d).

    Feed batches with ``update(X, y)`` (labels as integer codes 0..K-1 or any hashable, mapped on the
    fly); N is bounded by time, not memory. Never holds per-class d x d matrices.
    """

    device: str = "cpu"
    labels: list = field(default_factory=list)
    _index: dict = field(default_factory=dict)
    counts: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    sq_norms: torch.Tensor | None = None
    second: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    def update(self, X: Any, y: Any) -> "CollapseStats":
        X = check_embeddings(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise UserError(f"X and y have different lengths: {len(X)} embeddings but {len(y)} labels")
        batch_labels, inverse = np.unique(y, return_inverse=True)
        codes = np.array([self._code(label) for label in batch_labels.tolist()], dtype=np.int64)[inverse]
        h = torch.from_numpy(X).to(self.device, torch.float64)
        if self.shift is None:
            self.shift = h.mean(0)
            d = h.shape[1]
            self.second = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        h = h - self.shift
        K = len(self.labels)
        self.counts = _grow(self.counts, K, (), self.device)
        self.sums = _grow(self.sums, K, (h.shape[1],), self.device)
        self.sq_norms = _grow(self.sq_norms, K, (), self.device)
        idx = torch.from_numpy(codes).to(self.device)
        self.counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64, device=self.device))
        self.sums.index_add_(0, idx, h)
        self.sq_norms.index_add_(0, idx, (h * h).sum(1))
        self.second.addmm_(h.T, h)
        return self

    def _code(self, label: Any) -> int:
        if label not in self._index:
            self._index[label] = len(self.labels)
            self.labels.append(label)
        return self._index[label]

    @classmethod
    def from_arrays(cls, X: Any, y: Any, batch_size: int = 65536, device: str | None = None) -> "CollapseStats":
        """Statistics of in-memory embeddings, streamed in batches."""
        stats = cls(device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        X = check_embeddings(X)
        y = np.asarray(y)
        for start in range(0, len(X), batch_size):
            stats.update(X[start:start + batch_size], y[start:start + batch_size])
        return stats

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[Any, Any]], device: str = "cpu") -> "CollapseStats":
        stats = cls(device=device)
        for X, y in batches:
            stats.update(X, y)
        return stats

    # ---------------------------------------------------------------- derived quantities
    @property
    def n(self) -> float:
        return float(self.counts.sum())

    @property
    def means(self) -> torch.Tensor:
        """Class means about the shift (K x d)."""
        return self.sums / self.counts[:, None]

    def centred_means(self, centring: str = "weighted") -> torch.Tensor:
        if centring not in CENTRINGS:
            raise UserError(f"unknown centring {centring!r}; valid: {', '.join(CENTRINGS)}")
        mu = self.means
        global_mean = self.sums.sum(0) / self.n if centring == "weighted" else mu.mean(0)
        return mu - global_mean

    def class_variances(self) -> torch.Tensor:
        """Var_c = E||h - mu_c||^2 (population variance, so 1-shot classes are defined as 0)."""
        return (self.sq_norms / self.counts - (self.means ** 2).sum(1)).clamp_min(0.0)

    def within(self) -> torch.Tensor:
        """Sigma_W (d x d)."""
        mu = self.means
        return (self.second - (mu * self.counts[:, None]).T @ mu) / self.n

    def total(self) -> torch.Tensor:
        """Sigma_T, the total covariance about the sample-weighted mean (d x d)."""
        mean = self.sums.sum(0) / self.n
        return self.second / self.n - torch.outer(mean, mean)


def _grow(tensor: torch.Tensor | None, size: int, tail: tuple, device: str) -> torch.Tensor:
    """Zero-padded to `size` rows, for classes first seen in this batch."""
    if tensor is not None and tensor.shape[0] == size:
        return tensor
    new = torch.zeros((size, *tail), dtype=torch.float64, device=device)
    if tensor is not None:
        new[: tensor.shape[0]] = tensor
    return new


def _stats(X: Any, y: Any) -> CollapseStats:
    if isinstance(X, CollapseStats):
        return X
    return CollapseStats.from_arrays(X, y)


def _gram_eig(M: torch.Tensor, max_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (s^2, U) of the K x K Gram M M^T, truncated at rank `max_rank` and at float64 noise."""
    values, vectors = torch.linalg.eigh(M @ M.T)
    values, vectors = values.flip(0), vectors.flip(1)
    tol = values[0].clamp_min(0) * max(M.shape) * torch.finfo(torch.float64).eps
    keep = min(max_rank, int((values > tol).sum()))
    return values[:keep], vectors[:, :keep]


def nc1(X: Any, y: Any = None, centring: str = "weighted") -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / K (Papyan et al.; Zhu et al.'s 1/K), via the K x K route.

    With M = U S V^T, tr(Sigma_W Sigma_B^+)/K = sum_i u_i^T (M Sigma_W M^T) u_i / s_i^4: no d x d
    pseudo-inverse, rank truncated at min(K - 1, d).
    """
    stats = _stats(X, y)
    M = stats.centred_means(centring)
    K, d = M.shape
    s2, U = _gram_eig(M, min(K - 1, d))
    A = M @ stats.within() @ M.T
    return float(((U * (A @ U)).sum(0) / s2 ** 2).sum())


def nc1_quotient(X: Any, y: Any = None, centring: str = "weighted") -> float:
    """tr(Sigma_W) / tr(Sigma_B): scale-free, no inverse."""
    stats = _stats(X, y)
    M = stats.centred_means(centring)
    return float(torch.trace(stats.within()) / ((M ** 2).sum() / M.shape[0]))


def vci(X: Any, y: Any = None, centring: str = "weighted") -> float:
    """VCI = 1 - tr(Sigma_T^+ Sigma_B) / rank(Sigma_B) (Xu and Liu 2023); invariant to invertible maps.

    Informative only with more samples than dimensions plus classes: with N <= d + K the whitened
    within-class and between-class spans separate exactly and VCI is 0 for any features.
    """
    stats = _stats(X, y)
    M = stats.centred_means(centring)
    K, d = M.shape
    values, vectors = torch.linalg.eigh(stats.total())
    tol = values.max().clamp_min(0) * d * torch.finfo(torch.float64).eps
    keep = values > tol
    projected = M @ vectors[:, keep]
    trace = ((projected ** 2) / values[keep]).sum() / K
    rank = len(_gram_eig(M, min(K - 1, d))[0])
    return float(1.0 - trace / rank)


def _pairwise_sq(points: torch.Tensor) -> torch.Tensor:
    sq = (points ** 2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * points @ points.T).clamp_min(0.0)


def cdnv(X: Any, y: Any = None) -> float:
    """Mean over class pairs i != j of (Var_i + Var_j) / (2 ||mu_i - mu_j||^2) (Galanti et al. 2022)."""
    stats = _stats(X, y)
    var = stats.class_variances()
    dist = _pairwise_sq(stats.means)
    K = len(var)
    off = ~torch.eye(K, dtype=torch.bool, device=dist.device)
    return float(((var[:, None] + var[None, :]) / (2 * dist))[off].mean())


def _cosines(M: torch.Tensor) -> torch.Tensor:
    unit = M / torch.linalg.vector_norm(M, dim=1, keepdim=True)
    cos = unit @ unit.T
    return cos[~torch.eye(len(M), dtype=torch.bool, device=M.device)]


def nc2_equinorm(X: Any, y: Any = None, centring: str = "weighted") -> float:
    """Coefficient of variation (std / mean) of the centred class-mean norms ||m_c||."""
    norms = torch.linalg.vector_norm(_stats(X, y).centred_means(centring), dim=1)
    return float(norms.std(unbiased=False) / norms.mean())


def nc2_equiangularity(X: Any, y: Any = None, centring: str = "weighted") -> float:
    """Std over pairs c != c' of cos(m_c, m_c'); 0 for a simplex ETF (impossible when K > d + 1)."""
    return float(_cosines(_stats(X, y).centred_means(centring)).std(unbiased=False))


def welch_bound(K: int, d: int) -> float | None:
    """Lower bound on max |cos| of K unit vectors in d dims when K > d + 1 (else None)."""
    return float(np.sqrt((K - d) / (d * (K - 1)))) if K > d + 1 else None


def _class_weights(W: Any, W_labels: Any, labels: list) -> torch.Tensor:
    """One weight per class, in `labels` order: the mean of that class's rows of W."""
    W = torch.from_numpy(check_embeddings(W, name="W")).double()
    W_labels = np.asarray(W_labels if W_labels is not None else labels)
    if len(W_labels) != len(W):
        raise UserError(f"W has {len(W)} rows but W_labels has {len(W_labels)}")
    rows = []
    for label in labels:
        mine = np.flatnonzero(W_labels == label)
        if not len(mine):
            raise UserError(f"W has no weight for class {label!r}")
        rows.append(W[mine].mean(0))
    return torch.stack(rows)


def nc3(X: Any, y: Any, W: Any, W_labels: Any = None, centred: bool = True, centring: str = "weighted") -> float:
    """Self-duality ||W/||W||_F - M/||M||_F||_F between class weights and class means.

    ``centred=True`` compares with the centred means m_c (Papyan); ``False`` with the raw means mu_c,
    which is what imprinted weights are built from. Several proxies per class are averaged first.
    """
    stats = _stats(X, y)
    weights = _class_weights(W, W_labels, stats.labels).to(stats.means.device)
    means = stats.centred_means(centring) if centred else stats.means + stats.shift
    if centred:
        weights = weights - weights.mean(0)
    return float(torch.linalg.norm(weights / torch.linalg.norm(weights) - means / torch.linalg.norm(means)))


def nc4(X: Any, y: Any, W: Any, W_labels: Any = None) -> float:
    """Share of X on which nearest-class-mean and the linear classifier argmax_w <w, h> agree."""
    X = check_embeddings(X)
    stats = CollapseStats.from_arrays(X, y, device="cpu")
    W = check_embeddings(W, name="W", n_features=X.shape[1], owner="X")
    W_labels = np.asarray(W_labels if W_labels is not None else stats.labels)
    position = {label: i for i, label in enumerate(stats.labels)}
    unknown = set(W_labels.tolist()) - set(position)
    if unknown:
        raise UserError(f"W has weights for classes not in y: {sorted(map(str, unknown))[:3]}")
    proxy_class = np.array([position[label] for label in W_labels.tolist()])
    means = (stats.means + stats.shift).float().numpy()
    mean_sq = (means ** 2).sum(1)
    agree = 0
    for start in range(0, len(X), 8192):
        h = X[start:start + 8192]
        ncc = (mean_sq[None, :] - 2 * h @ means.T).argmin(1)  # ||h||^2 is the same for every class
        agree += int((ncc == proxy_class[(h @ W.T).argmax(1)]).sum())
    return agree / len(X)


def _unit_class_weights(W: Any, W_labels: Any = None) -> torch.Tensor:
    """Unit-norm weights, one per class (several proxies of a class averaged first)."""
    if W_labels is None:
        weights = torch.from_numpy(check_embeddings(W, name="W")).double()
    else:
        weights = _class_weights(W, W_labels, list(dict.fromkeys(np.asarray(W_labels).tolist())))
    return weights / torch.linalg.vector_norm(weights, dim=1, keepdim=True)


def margin_1vr(W: Any, W_labels: Any = None) -> float:
    """Generalized-collapse one-vs-rest margin min_k dist(w_k, conv{w_j : j != k}) of unit weights.

    Each distance is a small QP (nonnegative weights summing to one), solved exactly by NNLS with the
    sum constraint as a heavily weighted extra row. Simplex ETF: K/(K-1); regular K-gon: 1 - cos(2 pi/K).
    """
    unit = _unit_class_weights(W, W_labels).cpu().numpy()
    K = len(unit)
    penalty = 1e4
    best = np.inf
    for k in range(K):
        others = np.delete(unit, k, axis=0).T  # d x (K-1)
        A = np.vstack([others, penalty * np.ones((1, K - 1))])
        b = np.concatenate([unit[k], [penalty]])
        weights, _ = nnls(A, b, maxiter=50 * K)
        best = min(best, float(np.linalg.norm(unit[k] - others @ (weights / weights.sum()))))
    return best


def min_pairwise_distance(W: Any, W_labels: Any = None) -> float:
    """Smallest distance between two unit-normalised class weights (Tammes); an upper bound of margin_1vr."""
    unit = _unit_class_weights(W, W_labels)
    dist = _pairwise_sq(unit)
    dist.fill_diagonal_(np.inf)
    return float(dist.min().sqrt())


def collapse_report(X: Any, y: Any, W: Any = None, W_labels: Any = None, centring: str = "weighted") -> dict:
    """All metrics in one dict (one streaming pass over X); weight metrics only when W is given."""
    stats = _stats(X, y)
    K, d = stats.sums.shape
    report = {
        "n_samples": int(stats.n), "n_classes": K, "dim": d, "centring": centring,
        "nc1": nc1(stats, centring=centring), "nc1_quotient": nc1_quotient(stats, centring=centring),
        "vci": vci(stats, centring=centring), "cdnv": cdnv(stats),
        "nc2_equinorm": nc2_equinorm(stats, centring=centring),
        "nc2_equiangularity": nc2_equiangularity(stats, centring=centring),
        "nc2_max_coherence": float(_cosines(stats.centred_means(centring)).abs().max()),
        "welch_bound": welch_bound(K, d),
    }
    if W is not None:
        report.update({
            "nc3": nc3(stats, None, W, W_labels, centred=True, centring=centring),
            "nc3_uncentred": nc3(stats, None, W, W_labels, centred=False),
            "margin_1vr": margin_1vr(W, W_labels),
            "min_pairwise_distance": min_pairwise_distance(W, W_labels),
        })
        if not isinstance(X, CollapseStats):
            report["nc4"] = nc4(X, y, W, W_labels)
    return report
