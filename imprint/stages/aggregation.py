"""AGG stages: from a query's scores against every proxy to one score per class.

Proxies are stored grouped by class (class 0's proxies first, then class 1's, ...), described by
``proxy_counts`` (proxies per class). Every stage works on a (n_queries, n_proxies) score block.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from imprint.stages import AGGREGATIONS, MNN_WEIGHTS


class Aggregation(nn.Module):
    """Base class holding the proxy-to-class layout."""

    #: whether adding the same constant to all of a query's proxy scores leaves its class ranking unchanged
    shift_invariant = True

    def __init__(self, proxy_counts: Tensor, **options: object) -> None:
        super().__init__()
        counts = torch.as_tensor(proxy_counts, dtype=torch.long)
        self.register_buffer("proxy_counts", counts)
        self.register_buffer("proxy_class", torch.repeat_interleave(torch.arange(len(counts)), counts))
        self.n_classes = len(counts)
        self.equal_counts = bool((counts == counts[0]).all())


class _SegmentReduce(Aggregation):
    reduce = "max"

    def forward(self, scores: Tensor) -> Tensor:
        if self.equal_counts:  # the fast path: a reshape, no gather
            blocks = scores.view(scores.shape[0], self.n_classes, -1)
            return {"max": blocks.amax, "mean": blocks.mean, "sum": blocks.sum}[self.reduce](dim=2)
        if torch.onnx.is_in_onnx_export():  # a graph has no segment reduction: a padded gather of the same values
            return self._padded(scores)
        lengths = self.proxy_counts.to(scores.device).expand(scores.shape[0], -1).contiguous()
        return torch.segment_reduce(scores, self.reduce, lengths=lengths, axis=1)

    def _padded(self, scores: Tensor) -> Tensor:
        """The reduction over a (n, classes, most proxies) gather, padded with a column that changes nothing."""
        counts = self.proxy_counts.cpu()
        width, total = int(counts.max()), int(counts.sum())
        starts = torch.cumsum(counts, 0) - counts
        index = torch.full((self.n_classes, width), total, dtype=torch.long)
        for c, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
            index[c, :count] = torch.arange(start, start + count)
        pad = -torch.inf if self.reduce == "max" else 0.0
        padded = torch.cat([scores, torch.full_like(scores[:, :1], pad)], dim=1)[:, index.to(scores.device)]
        if self.reduce == "max":
            return padded.amax(dim=2)
        total_scores = padded.sum(dim=2)
        return total_scores / counts.to(scores.device, scores.dtype) if self.reduce == "mean" else total_scores


class MaxAggregation(_SegmentReduce):
    """Class score = best score among the class's proxies (1-NN over proxies)."""

    reduce = "max"


class MeanAggregation(_SegmentReduce):
    """Class score = mean score of the class's proxies."""

    reduce = "mean"


class SumAggregation(_SegmentReduce):
    """Class score = sum of its proxies' scores (Tip-Adapter's cache logits with the kernel metric)."""

    reduce = "sum"
    shift_invariant = False  # classes with more proxies gain more from a shift


class MNNAggregation(Aggregation):
    """The m nearest proxies vote; class score = share of the (optionally distance-weighted) votes.

    ``mnn_weights="uniform"`` gives each neighbour 1/m; ``"distance"`` weights by inverse distance (as the
    metric turns scores into distances: cosine distance for dot, the distance itself for euclidean and
    mahalanobis) and normalises the weights to sum to 1. Tied classes resolve to the first class, as
    scikit-learn does.
    """

    def __init__(self, proxy_counts: Tensor, m: int = 1, mnn_weights: str = "uniform",
                 to_distance: Callable[[Tensor], Tensor] | None = None, **options: object) -> None:
        super().__init__(proxy_counts)
        self.m = m
        self.weighting = MNN_WEIGHTS.check(mnn_weights)
        self.to_distance = to_distance
        self.shift_invariant = self.weighting == "uniform"

    def forward(self, scores: Tensor) -> Tensor:
        top_scores, top_index = scores.topk(min(self.m, scores.shape[1]), dim=1)
        return self.vote(top_scores, top_index)

    def vote(self, top_scores: Tensor, top_index: Tensor) -> Tensor:
        """Class scores from each query's nearest proxies (scores and proxy indices, best first)."""
        if self.weighting == "uniform":
            weights = torch.ones_like(top_scores)
        else:
            weights = 1.0 / (self.to_distance(top_scores) + 1e-12)
        weights = weights / weights.sum(dim=1, keepdim=True)
        out = torch.zeros(top_scores.shape[0], self.n_classes, dtype=top_scores.dtype, device=top_scores.device)
        return out.scatter_add_(1, self.proxy_class.to(top_index.device)[top_index], weights)


def make_aggregation(name: str, proxy_counts: Tensor, settings: dict[str, object],
                     to_distance: Callable[[Tensor], Tensor] | None = None) -> Aggregation:
    """Build the AGG stage registered as `name` for the given proxy layout, with the settings it declares."""
    entry = AGGREGATIONS.entry(name)
    own = {s.name: settings[s.name] for s in entry.settings if s.name in settings}
    return entry.impl(proxy_counts, to_distance=to_distance, **own)
