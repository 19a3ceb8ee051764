"""AGG stages: from a query's scores against every proxy to one score per class.

Proxies are stored grouped by class (class 0's proxies first, then class 1's, ...), described by
``proxy_counts`` (proxies per class). Every stage works on a (n_queries, n_proxies) score block.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from imprint.registry import Registry
from imprint.stages.metric import scores_to_distances
from imprint.validation import check_choice

AGGREGATIONS: Registry[type[Aggregation]] = Registry("aggregation")
MNN_WEIGHTINGS = ("uniform", "distance")


class Aggregation(nn.Module):
    """Base class holding the proxy-to-class layout."""

    def __init__(self, proxy_counts: Tensor, m: int = 1, weighting: str = "uniform", metric: str = "dot") -> None:
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
            return blocks.amax(dim=2) if self.reduce == "max" else blocks.mean(dim=2)
        lengths = self.proxy_counts.to(scores.device).expand(scores.shape[0], -1).contiguous()
        return torch.segment_reduce(scores, self.reduce, lengths=lengths, axis=1)


@AGGREGATIONS.register("max")
class MaxAggregation(_SegmentReduce):
    """Class score = best score among the class's proxies (1-NN over proxies)."""

    reduce = "max"


@AGGREGATIONS.register("mean")
class MeanAggregation(_SegmentReduce):
    """Class score = mean score of the class's proxies."""

    reduce = "mean"


@AGGREGATIONS.register("mnn")
class MNNAggregation(Aggregation):
    """The m nearest proxies vote; class score = share of the (optionally distance-weighted) votes.

    ``weighting="uniform"`` gives each neighbour 1/m; ``"distance"`` weights by inverse distance
    (sqrt(-score) for the euclidean metric, 1 - score, the cosine distance, for dot) and normalises
    the weights to sum to 1. Tied classes resolve to the first class, as scikit-learn does.
    """

    def __init__(self, proxy_counts: Tensor, m: int = 1, weighting: str = "uniform", metric: str = "dot") -> None:
        super().__init__(proxy_counts)
        self.m, self.metric = m, metric
        self.weighting = check_choice(weighting, "mnn_weights", MNN_WEIGHTINGS)

    def forward(self, scores: Tensor) -> Tensor:
        top_scores, top_index = scores.topk(min(self.m, scores.shape[1]), dim=1)
        return self.vote(top_scores, top_index)

    def vote(self, top_scores: Tensor, top_index: Tensor) -> Tensor:
        """Class scores from each query's nearest proxies (scores and proxy indices, best first)."""
        if self.weighting == "uniform":
            weights = torch.ones_like(top_scores)
        else:
            weights = 1.0 / (scores_to_distances(top_scores, self.metric) + 1e-12)
        weights = weights / weights.sum(dim=1, keepdim=True)
        out = torch.zeros(top_scores.shape[0], self.n_classes, dtype=top_scores.dtype, device=top_scores.device)
        return out.scatter_add_(1, self.proxy_class.to(top_index.device)[top_index], weights)


def make_aggregation(name: str, proxy_counts: Tensor, **options: object) -> Aggregation:
    """Build the AGG stage registered as `name` for the given proxy layout."""
    return AGGREGATIONS.get(name)(proxy_counts, **options)
