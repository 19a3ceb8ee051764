"""GEN stages: turn each class's (normalised) support embeddings into proxies.

Every generator takes class-sorted embeddings ``X`` (class 0's rows first; a generator registered with
``streaming=True`` gets an ``imprint.core.support.Support`` instead, to read one block or bucket of classes at a
time), the number of rows per class ``counts`` and its settings (``k`` proxies per class, one number or one
per class, and the others it declares, plus ``seed``), and returns the proxies, also grouped by class, with
their per-class counts. A class with fewer samples than k uses all of its samples. Generators registered
with ``oracle=True`` use cross-class statistics: they are upper-bound baselines, not imprinting.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from imprint.core.support import Support, class_means  # class_means: also for plug-in generators
from imprint.stages import GENERATORS
from imprint.stages.kmeans import batched_kmeans, class_starts, faiss_kmeans, gather_padded, size_buckets

Generator = Callable[[Tensor, Tensor, dict[str, Any]], tuple[Tensor, Tensor]]

ROW_CHUNK = 1 << 16


def mean_proxies(X: Support, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """One proxy per class: the class mean (Qi et al. 2018); k is ignored."""
    return class_means(X, counts).float(), torch.ones_like(counts)


def all_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Every support sample is a proxy (k = n_c); k is ignored."""
    return X, counts


def kmeans_proxies(X: Support | Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """k-means centroids per class (seeded k-means++; batched over classes or per-class FAISS)."""
    k, seed, max_iter = options["k"], options.get("seed", 0), options.get("kmeans_max_iter", 100)
    if options.get("kmeans_backend", "batched") == "faiss":
        clusters = faiss_kmeans(X, counts, k, seed, max_iter)
    else:
        clusters = batched_kmeans(X, counts, k, seed, max_iter, with_inertia=False)
    return clusters.centroids, clusters.counts


def random_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """k support samples per class drawn at random without replacement (seeded)."""
    k = options["k"]
    codes = torch.repeat_interleave(torch.arange(len(counts)), counts.cpu())
    gen = torch.Generator().manual_seed(options.get("seed", 0))
    order = torch.argsort(codes.double() + torch.rand(len(codes), generator=gen, dtype=torch.float64))
    rank = torch.arange(len(codes)) - class_starts(counts.cpu())[codes]
    keep = order[rank < k]  # within each class, the first k of a random order
    return X[keep.to(X.device)], counts.clamp(max=k)


def farthest_point_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Farthest-point sampling per class from a random first sample: k well-spread samples."""
    k = options["k"]
    starts = class_starts(counts)
    k_per_class = counts.clamp(max=k)
    out = torch.empty(int(k_per_class.sum()), X.shape[1], dtype=X.dtype, device=X.device)
    out_starts = class_starts(k_per_class).tolist()
    gen = torch.Generator().manual_seed(options.get("seed", 0))
    sizes = counts.cpu().numpy()
    for bucket in size_buckets(np.arange(len(sizes)), sizes, X.shape[1]):
        P, mask = gather_padded(X, starts, counts, bucket)
        batch = torch.arange(len(bucket), device=X.device)
        steps = int(k_per_class[torch.as_tensor(bucket)].max())
        chosen = torch.empty(len(bucket), steps, dtype=torch.long, device=X.device)
        chosen[:, 0] = (torch.rand(len(bucket), generator=gen) * mask.sum(1).cpu()).long().to(X.device)
        closest = torch.full(mask.shape, torch.inf, dtype=X.dtype, device=X.device)
        for j in range(1, steps):
            latest = P[batch, chosen[:, j - 1]]
            closest = torch.minimum(closest, ((P - latest[:, None, :]) ** 2).sum(-1))
            chosen[:, j] = closest.masked_fill(~mask, -1.0).argmax(1)
        for row, c in enumerate(bucket):
            kc = int(k_per_class[c])
            out[out_starts[c]: out_starts[c] + kc] = P[row, chosen[row, :kc]]
    return out, k_per_class


def kmedoids_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """k-medoids (FasterPAM, from the maintained `kmedoids` package) per class; O(n_c^2) memory."""
    import kmedoids
    from sklearn.metrics import pairwise_distances

    k = options["k"]
    data = X.detach().cpu().numpy()
    pieces = []
    for start, n in zip(class_starts(counts).tolist(), counts.tolist()):
        points = data[start:start + n]
        if n <= k:
            pieces.append(points)
            continue
        dissimilarity = pairwise_distances(points.astype(np.float64), metric="euclidean")
        result = kmedoids.fasterpam(dissimilarity, k, random_state=options.get("seed", 0), n_cpu=1)
        pieces.append(points[np.sort(np.asarray(result.medoids))])
    return torch.from_numpy(np.concatenate(pieces)).to(X.device), counts.clamp(max=k)


def _least_squares(X: Tensor, targets: Tensor, ls_lambda: float) -> Tensor:
    """Rows (1/G) A^-1 t_g with A = Sigma_T + mu_G mu_G^T + lambda I = X^T X / N + lambda I. With fewer rows than
    dimensions the same solve in the rows' space (Woodbury: A^-1 = (I - X^T (N lambda I + X X^T)^-1 X) / lambda),
    an N x N system where the direct one is D x D (120 x 1280: 85 ms -> 3 ms)."""
    n, dim = X.shape
    if n < dim:
        rows = X.double()
        targets = targets.double()
        inner = rows @ rows.T + n * ls_lambda * torch.eye(n, dtype=torch.float64, device=X.device)
        solved = targets.T - rows.T @ torch.linalg.solve(inner, rows @ targets.T)
        return solved.T / (ls_lambda * targets.shape[0])
    gram = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], ROW_CHUNK):
        block = X[start:start + ROW_CHUNK].double()
        gram.addmm_(block.T, block)
    A = gram / X.shape[0] + ls_lambda * torch.eye(X.shape[1], dtype=torch.float64, device=X.device)
    return torch.linalg.solve(A, targets.T).T / targets.shape[0]


def least_squares_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Oracle: least-squares classifier W = (1/C) M (Sigma_T + mu mu^T + lambda I)^-1 (uses all classes)."""
    return _least_squares(X, class_means(X, counts), options.get("ls_lambda", 1e-4)).to(X.dtype), \
        torch.ones_like(counts)


def cluster_least_squares_proxies(X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Oracle: least squares over the k-means clusters of every class, regrouped by class."""
    centroids, k_counts = kmeans_proxies(X, counts, options)
    return _least_squares(X, centroids.double(), options.get("ls_lambda", 1e-4)).to(X.dtype), k_counts


def generation_options(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings generator `name` declares, taken from `settings`, plus the seed."""
    own = {s.name: settings[s.name] for s in GENERATORS.entry(name).settings if s.name in settings}
    return {**own, "seed": settings.get("seed", 0)}


def generate(name: str, X: Tensor, counts: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Run the GEN stage registered as `name` with its settings (see ``generation_options``)."""
    if isinstance(options.get("k"), str):
        raise ValueError("k='auto' is resolved by the classifier before generation")
    return GENERATORS.get(name)(X, counts, options)
