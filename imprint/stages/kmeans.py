"""k-means for many classes at once.

``batched_kmeans`` runs seeded greedy k-means++ and Lloyd iterations for every class in lock-step,
as batched matrix products over classes padded to similar sizes (torch, on the GPU when the data is
there). The per-class Python loop of the paper's code is gone: Python loops over size buckets only.
``faiss_kmeans`` is the per-class FAISS alternative, with its traps (silent subsampling, warnings
for small classes, failure when n < k) disarmed.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from imprint.core.errors import UserError
from imprint.core.support import Support

BUCKET_ELEMENTS = 1 << 25  # padded floats per bucket (128 MiB at float32)
SAMPLE_ROWS = 50_000  # a class with more rows learns its centroids from a seeded sample of this many (as FAISS
#                       samples): a centroid is placed as well by 2,500 points as by more, and memory stays bounded
SEED_DIMS = 64  # width of the random projection used for seeding wide embeddings
SHIFT_BLOCK = 256  # classes per block when measuring how far the centres moved


@dataclass
class Clusters:
    """Centroids grouped by class, with per-class counts and within-cluster sum of squares."""

    centroids: Tensor
    counts: Tensor
    inertia: Tensor | None  # per class, float64 (only when asked for)


def class_starts(counts: Tensor) -> Tensor:
    """Start row of each class's segment in class-sorted data."""
    return torch.cumsum(counts, 0) - counts


def size_buckets(classes: np.ndarray, sizes: np.ndarray, d: int,
                 budget: int = BUCKET_ELEMENTS) -> Iterator[np.ndarray]:
    """Group classes of similar size (within 2x) so padding wastes at most half of a bucket's memory."""
    order = classes[np.argsort(-sizes[classes], kind="stable")]
    bucket: list[int] = []
    width = 0
    for c in order:
        n = int(sizes[c])
        if bucket and (n * 2 < width or (len(bucket) + 1) * width * d > budget):
            yield np.asarray(bucket)
            bucket = []
        if not bucket:
            width = n
        bucket.append(int(c))
    if bucket:
        yield np.asarray(bucket)


def gather_padded(X: Tensor, starts: Tensor, counts: Tensor, classes: np.ndarray) -> tuple[Tensor, Tensor]:
    """The given classes of class-sorted X as a (B, n_max, d) block with zero padding, plus a validity mask.

    Consecutive classes of equal size are a free view of X; anything else is copied.
    """
    cls = torch.as_tensor(classes, device=X.device)
    n = counts[cls].to(X.device)
    width = int(n.max())
    offsets = torch.arange(width, device=X.device)
    mask = offsets[None, :] < n[:, None]
    first = int(starts[cls[0]])
    if bool((n == width).all()) and bool((cls == cls[0] + torch.arange(len(cls), device=X.device)).all()):
        return X[first: first + width * len(cls)].view(len(cls), width, X.shape[1]), mask
    rows = starts[cls].to(X.device)[:, None] + torch.where(mask, offsets[None, :], 0)
    return X[rows] * mask[:, :, None], mask


def _sq_dists(points: Tensor, point_sq: Tensor, centers: Tensor, center_sq: Tensor) -> Tensor:
    """Squared distances (B, n, k) between padded points and centres, via one batched product."""
    d2 = torch.baddbmm(point_sq[:, :, None], points, centers.transpose(1, 2), alpha=-2.0)
    return d2.add_(center_sq[:, None, :]).clamp_(min=0.0)


def _kmeans_plusplus(P: Tensor, P_sq: Tensor, mask: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (as scikit-learn's) for every class of the bucket; returns row indices (B, k)."""
    B, n, d = P.shape
    batch = torch.arange(B, device=P.device)
    trials = 2 + int(math.log(k))
    chosen = torch.empty(B, k, dtype=torch.long, device=P.device)
    chosen[:, 0] = (torch.rand(B, generator=gen, device=gen.device).to(P.device) * mask.sum(1)).long()
    first = P[batch, chosen[:, 0]]
    closest = _sq_dists(P, P_sq, first[:, None], P_sq[batch, chosen[:, 0]][:, None])[:, :, 0] * mask
    weights_floor = 1e-30 * mask  # classes of identical points still draw valid points
    for j in range(1, k):
        cand = torch.multinomial((closest + weights_floor).to(gen.device), trials, replacement=True,
                                 generator=gen).to(P.device)
        d2 = _sq_dists(P, P_sq, P[batch[:, None], cand], P_sq.gather(1, cand))  # (B, n, T)
        new_closest = torch.minimum(closest[:, :, None], d2)  # padding stays 0: closest is 0 there
        best = new_closest.sum(1).argmin(1)
        chosen[:, j] = cand[batch, best]
        closest = new_closest[batch, :, best]
    return chosen


def _seed(P: Tensor, P_sq: Tensor, mask: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Initial centres (B, k, d). Wide embeddings are seeded in a random SEED_DIMS-dim projection
    (Johnson-Lindenstrauss): seeding makes k passes over the data, and a narrow copy makes them cheap
    (measured 3x on 512 dims); the seeds are still real samples and Lloyd runs in full width."""
    B, n, d = P.shape
    if d > 2 * SEED_DIMS:
        R = torch.randn(d, SEED_DIMS, generator=gen, device=gen.device).to(P.device, P.dtype)
        Q = P @ R
        chosen = _kmeans_plusplus(Q, torch.linalg.vector_norm(Q, dim=2).square_(), mask, k, gen)
    else:
        chosen = _kmeans_plusplus(P, P_sq, mask, k, gen)
    return P[torch.arange(B, device=P.device)[:, None], chosen]


def _lloyd_step(P: Tensor, P_sq: Tensor, mask: Tensor, centers: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One assignment + update step: (new centres, assignments, distances, empty-cluster mask)."""
    B, n, d = P.shape
    k = centers.shape[1]
    dist, assign = _sq_dists(P, P_sq, centers, (centers * centers).sum(-1)).min(dim=2)
    slot = torch.where(mask, assign + torch.arange(B, device=P.device)[:, None] * k, B * k)  # padding -> dummy
    sums = torch.zeros(B * k + 1, d, dtype=P.dtype, device=P.device).index_add_(0, slot.view(-1), P.view(-1, d))
    members = torch.bincount(slot.view(-1), minlength=B * k + 1)[:-1].view(B, k)
    new = sums[:-1].view(B, k, d).div_(members.clamp_min(1)[:, :, None].to(P.dtype))  # in place: no extra copy
    return new, assign, dist, members == 0


def _kmeans_bucket(P: Tensor, mask: Tensor, k: int, gen: torch.Generator, max_iter: int, tol: float,
                   out: Tensor, rows: Tensor, with_inertia: bool) -> Tensor | None:
    """Lloyd iterations for a padded bucket of classes, writing class b's centres to out[rows[b]];
    returns the inertia per class (B,) if asked.

    A class stops when its assignments no longer change or its centres move less than scikit-learn's
    tolerance (tol times the mean per-feature variance); finished classes leave the working set, their
    centres written straight into `out`, so only the working centres are held besides it.
    """
    B, n, d = P.shape
    P_sq = torch.linalg.vector_norm(P, dim=2).square_()
    sizes = mask.sum(1).to(P.dtype)
    mean = P.sum(1) / sizes[:, None]  # padding rows are zero
    tolerance = tol * ((P_sq.sum(1) / sizes - (mean * mean).sum(1)).clamp_min(0) / d)
    # the working set: classes still iterating (plus converged ones, until half of the set has converged)
    work_ids, wP, wP_sq, wmask, wtol = torch.arange(B, device=P.device), P, P_sq, mask, tolerance
    wcenters = _seed(P, P_sq, mask, k, gen)
    previous = torch.full((B, n), -1, dtype=torch.long, device=P.device)
    live = torch.ones(B, dtype=torch.bool, device=P.device)
    for _ in range(max_iter):
        new, assign, dist, empty = _lloyd_step(wP, wP_sq, wmask, wcenters)
        if empty.any():
            _relocate_empty(new, empty, wP, torch.where(wmask, dist, -1.0))
        shift = torch.cat([torch.sub(a, b).square_().sum((1, 2))  # by blocks of classes: small temporaries
                           for a, b in zip(new.split(SHIFT_BLOCK), wcenters.split(SHIFT_BLOCK))])
        done = live & ((shift <= wtol) | (assign == previous).all(1))
        new[~live] = wcenters[~live]  # finished classes keep their centres; no full-size temporary
        wcenters = new
        previous = torch.where(live[:, None], assign, previous)
        live &= ~done
        remaining = int(live.sum())
        if remaining == 0:
            break
        if remaining * 2 <= len(live):  # shrink: write out the finished, keep iterating the rest
            out[rows[work_ids[~live]].reshape(-1)] = wcenters[~live].reshape(-1, d)
            work_ids, wP, wP_sq, wmask, wtol = (t[live] for t in (work_ids, wP, wP_sq, wmask, wtol))
            wcenters, previous, live = wcenters[live], previous[live], live[live]
    out[rows[work_ids].reshape(-1)] = wcenters.reshape(-1, d)
    if not with_inertia:
        return None
    centers = out[rows]
    dist = _sq_dists(P, P_sq, centers, (centers * centers).sum(-1)).min(dim=2).values
    return (dist.double() * mask).sum(1)


def _relocate_empty(centers: Tensor, empty: Tensor, P: Tensor, dist: Tensor) -> None:
    """Move each empty cluster onto the point farthest from its centre, as scikit-learn does."""
    for b in torch.nonzero(empty.any(1))[:, 0].tolist():
        slots = torch.nonzero(empty[b])[:, 0]
        far = dist[b].topk(len(slots)).indices
        centers[b, slots] = P[b, far]


def capped_k(counts: Tensor, k: int | Tensor) -> Tensor:
    """Centroids per class: k (one number, or one per class) capped at the class size."""
    return torch.minimum(counts, torch.as_tensor(k, dtype=counts.dtype, device=counts.device).expand_as(counts))


def _as_support(X: Tensor | Support, counts: Tensor) -> Support:
    return X if isinstance(X, Support) else Support.of_sorted(X, counts)


def batched_kmeans(X: Tensor | Support, counts: Tensor, k: int | Tensor, seed: int = 0, max_iter: int = 100,
                   tol: float = 1e-4, with_inertia: bool = True) -> Clusters:
    """k-means with k_c = min(k_c, n_c) centroids for every class (k: one or per class) of class-sorted X or of a
    Support (read one bucket of classes at a time: the support set is never copied whole).

    A class with at most k_c samples keeps all of them as centroids (documented, never an error); a class with
    more than SAMPLE_ROWS learns its centroids from a seeded sample of SAMPLE_ROWS of them. Classes are batched
    by equal k and similar size. `with_inertia` adds a final pass for the within-cluster sums of squares (of
    the rows clustered).
    """
    support = _as_support(X, counts)
    device, dim = support.device, support.dim
    k_per_class = capped_k(counts, torch.as_tensor(k).to(counts.device))
    sizes, ks = counts.cpu().numpy(), k_per_class.cpu().numpy()
    small = np.flatnonzero(sizes <= ks)  # these classes keep every sample, in order
    kept = support.rows_of(small)
    out = torch.empty(int(k_per_class.sum()), dim, dtype=kept.dtype, device=device)
    out_starts = class_starts(k_per_class)
    inertia = torch.zeros(len(counts), dtype=torch.float64)
    out[torch.repeat_interleave(torch.from_numpy(sizes <= ks), k_per_class.cpu()).to(device)] = kept
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)
    sampled = np.minimum(sizes, max(SAMPLE_ROWS, 0))
    for kv in np.unique(ks[sizes > ks]):
        for bucket in size_buckets(np.flatnonzero((sizes > ks) & (ks == kv)), sampled, dim):
            P, mask = support.padded(bucket, limit=SAMPLE_ROWS, seed=seed)
            rows = out_starts[torch.as_tensor(bucket)].to(device)[:, None] + torch.arange(int(kv), device=device)
            bucket_inertia = _kmeans_bucket(P, mask, int(kv), gen, max_iter, tol, out, rows, with_inertia)
            if with_inertia:
                inertia[torch.as_tensor(bucket)] = bucket_inertia.cpu()
    return Clusters(out, k_per_class, inertia if with_inertia else None)


def faiss_kmeans(X: Tensor | Support, counts: Tensor, k: int | Tensor, seed: int = 0,
                 max_iter: int = 100) -> Clusters:
    """Per-class FAISS k-means (GPU when faiss has one): k capped at n_c, no warnings, and FAISS's own silent
    subsampling (256 points per centroid) off; a class of more than SAMPLE_ROWS rows learns its centroids from a
    seeded sample of SAMPLE_ROWS of them, as the batched backend does (its inertia is the sample's)."""
    try:
        import faiss
    except ImportError:
        raise UserError("kmeans_backend='faiss' needs FAISS, part of imprint's install: pip install faiss-cpu (or "
                        "the GPU build, docs/python.md), or use kmeans_backend='batched'") from None

    support = _as_support(X, counts)
    use_gpu = faiss.get_num_gpus() > 0
    k_per_class = capped_k(counts, torch.as_tensor(k).to(counts.device))
    pieces, inertia = [], []
    for c, (n, kc) in enumerate(zip(counts.tolist(), k_per_class.tolist())):
        rows = support.padded(np.array([c]), limit=SAMPLE_ROWS, seed=seed + c)[0][0]
        points = np.ascontiguousarray(rows.detach().cpu().numpy(), dtype=np.float32)
        if n <= kc:
            pieces.append(points)
            inertia.append(0.0)
            continue
        km = faiss.Kmeans(points.shape[1], kc, niter=max_iter, seed=seed, verbose=False, gpu=use_gpu,
                          min_points_per_centroid=1, max_points_per_centroid=len(points))
        km.train(points)
        pieces.append(km.centroids)
        inertia.append(float(km.index.search(points, 1)[0].sum()))
    centroids = torch.from_numpy(np.concatenate(pieces)).to(support.device)
    return Clusters(centroids, k_per_class, torch.tensor(inertia, dtype=torch.float64))


def nearest_own_centroid(support: Support, centroids: Tensor, centroid_counts: Tensor) -> Iterator[
        tuple[np.ndarray, Tensor, Tensor]]:
    """Per bucket of classes: (classes, their rows as a padded (B, n, d) block with its mask, index into
    `centroids` of each row's nearest centroid of its own class). Class by class: never a rows x all-centroids
    matrix, and the support set is read one bucket at a time."""
    counts = support.counts_np
    ks = centroid_counts.cpu().numpy()
    centroid_starts = class_starts(centroid_counts.cpu())
    for kv in np.unique(ks[counts > 0]):
        for bucket in size_buckets(np.flatnonzero((ks == kv) & (counts > 0)), counts, centroids.shape[1]):
            P, mask = support.padded(bucket)
            offsets = centroid_starts[torch.as_tensor(bucket)].to(P.device)[:, None]
            if kv == 1:
                nearest = offsets.expand(-1, P.shape[1])
            else:
                C = centroids.to(P.device, P.dtype)[offsets + torch.arange(int(kv), device=P.device)]
                nearest = offsets + _sq_dists(P, torch.linalg.vector_norm(P, dim=2).square_(), C,
                                              (C * C).sum(-1)).argmin(dim=2)
            yield bucket, (P, mask), nearest
