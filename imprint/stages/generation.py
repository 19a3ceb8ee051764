"""GEN stages: turn each class's (normalised) support embeddings into proxies.

Every generator takes class-sorted embeddings ``X`` (class 0's rows first), the number of rows per
class ``counts`` and the requested proxies per class ``k``, and returns the proxies, also grouped by
class, with their per-class counts. A class with fewer samples than k uses all of its samples.
Generators registered with ``oracle=True`` use cross-class statistics: they are upper-bound
baselines, not imprinting.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from imprint.clustering import batched_kmeans, class_starts, faiss_kmeans, gather_padded, size_buckets
from imprint.registry import Registry


@dataclass(frozen=True)
class GenerationOptions:
    """Settings shared by the generators (each uses the ones it needs)."""

    seed: int = 0
    max_iter: int = 100
    kmeans_backend: str = "batched"
    ls_lambda: float = 1e-4


Generator = Callable[[Tensor, Tensor, int, GenerationOptions], tuple[Tensor, Tensor]]
GENERATORS: Registry[Generator] = Registry("generation")
KMEANS_BACKENDS = ("batched", "faiss")

ROW_CHUNK = 1 << 16


def _class_sums(X: Tensor, counts: Tensor) -> Tensor:
    """Per-class sums accumulated in float64, streamed over row chunks."""
    codes = torch.repeat_interleave(torch.arange(len(counts), device=X.device), counts.to(X.device))
    sums = torch.zeros(len(counts), X.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], ROW_CHUNK):
        sums.index_add_(0, codes[start:start + ROW_CHUNK], X[start:start + ROW_CHUNK].double())
    return sums


def class_means(X: Tensor, counts: Tensor) -> Tensor:
    """Class means (float64) of class-sorted X."""
    return _class_sums(X, counts) / counts.to(X.device, torch.float64)[:, None]


@GENERATORS.register("mean", ignores_k=True)
def mean_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """One proxy per class: the class mean (Qi et al. 2018); k is ignored."""
    return class_means(X, counts).to(X.dtype), torch.ones_like(counts)


@GENERATORS.register("all", ignores_k=True)
def all_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """Every support sample is a proxy (k = n_c); k is ignored."""
    return X, counts


@GENERATORS.register("kmeans")
def kmeans_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """k-means centroids per class (seeded k-means++; batched over classes or per-class FAISS)."""
    if options.kmeans_backend == "faiss":
        clusters = faiss_kmeans(X, counts, k, options.seed, options.max_iter)
    else:
        clusters = batched_kmeans(X, counts, k, options.seed, options.max_iter, with_inertia=False)
    return clusters.centroids, clusters.counts


@GENERATORS.register("random")
def random_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """k support samples per class drawn at random without replacement (seeded)."""
    codes = torch.repeat_interleave(torch.arange(len(counts)), counts.cpu())
    gen = torch.Generator().manual_seed(options.seed)
    order = torch.argsort(codes.double() + torch.rand(len(codes), generator=gen, dtype=torch.float64))
    rank = torch.arange(len(codes)) - class_starts(counts.cpu())[codes]
    keep = order[rank < k]  # within each class, the first k of a random order
    return X[keep.to(X.device)], counts.clamp(max=k)


@GENERATORS.register("fps")
def farthest_point_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """Farthest-point sampling per class from a random first sample: k well-spread samples."""
    starts = class_starts(counts)
    k_per_class = counts.clamp(max=k)
    out = torch.empty(int(k_per_class.sum()), X.shape[1], dtype=X.dtype, device=X.device)
    out_starts = class_starts(k_per_class).tolist()
    gen = torch.Generator().manual_seed(options.seed)
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


@GENERATORS.register("kmedoids")
def kmedoids_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """k-medoids (FasterPAM, from the maintained `kmedoids` package) per class; O(n_c^2) memory."""
    import kmedoids
    from sklearn.metrics import pairwise_distances

    data = X.detach().cpu().numpy()
    pieces = []
    for start, n in zip(class_starts(counts).tolist(), counts.tolist()):
        points = data[start:start + n]
        if n <= k:
            pieces.append(points)
            continue
        dissimilarity = pairwise_distances(points.astype(np.float64), metric="euclidean")
        result = kmedoids.fasterpam(dissimilarity, k, random_state=options.seed, n_cpu=1)
        pieces.append(points[np.sort(np.asarray(result.medoids))])
    return torch.from_numpy(np.concatenate(pieces)).to(X.device), counts.clamp(max=k)


def _least_squares(X: Tensor, targets: Tensor, ls_lambda: float) -> Tensor:
    """Rows (1/G) A^-1 t_g with A = Sigma_T + mu_G mu_G^T + lambda I = X^T X / N + lambda I."""
    gram = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], ROW_CHUNK):
        block = X[start:start + ROW_CHUNK].double()
        gram.addmm_(block.T, block)
    A = gram / X.shape[0] + ls_lambda * torch.eye(X.shape[1], dtype=torch.float64, device=X.device)
    return torch.linalg.solve(A, targets.T).T / targets.shape[0]


@GENERATORS.register("ls", oracle=True, ignores_k=True)
def least_squares_proxies(X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """Oracle: least-squares classifier W = (1/C) M (Sigma_T + mu mu^T + lambda I)^-1 (uses all classes)."""
    return _least_squares(X, class_means(X, counts), options.ls_lambda).to(X.dtype), torch.ones_like(counts)


@GENERATORS.register("kls", oracle=True)
def cluster_least_squares_proxies(X: Tensor, counts: Tensor, k: int,
                                  options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """Oracle: least squares over the k-means clusters of every class, regrouped by class."""
    centroids, k_counts = kmeans_proxies(X, counts, k, options)
    return _least_squares(X, centroids.double(), options.ls_lambda).to(X.dtype), k_counts


def generate(name: str, X: Tensor, counts: Tensor, k: int, options: GenerationOptions) -> tuple[Tensor, Tensor]:
    """Run the GEN stage registered as `name`."""
    return GENERATORS.get(name)(X, counts, k, options)
