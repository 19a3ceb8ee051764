"""Which unlabelled images to label next: k-means over the unlabelled embeddings (one cluster per pick, so the
picks cover the data rather than crowd one confusing corner), and in every cluster the image that best mixes
uncertainty (a small margin between the classifier's two most likely classes) with typicality (closeness to the
cluster's centre). Picks are ranked by the size of their cluster: the first n of the list are a good set of n."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

UNCERTAINTY_WEIGHT = 0.5  # within a cluster: 0 picks the most typical image, 1 the most uncertain


@dataclass
class Picks:
    """Rows of the unlabelled set to label, best first, with their uncertainty (1 - margin), cluster size and
    the class the classifier expects."""

    rows: np.ndarray
    uncertainty: np.ndarray
    cluster_size: np.ndarray
    expected: np.ndarray


def _within_rank(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Every value's rank within its group, scaled to [0, 1] (1: the largest)."""
    order = np.lexsort((values, groups))
    ranks = np.empty(len(values))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    position = np.arange(len(values)) - np.repeat(starts, sizes)
    ranks[order] = position / np.maximum(np.repeat(sizes, sizes) - 1, 1)
    return ranks


def pick_to_label(proba: np.ndarray, embeddings: np.ndarray, budget: int, seed: int = 0) -> Picks:
    """`budget` rows of the unlabelled set (its class probabilities `proba` under a classifier fitted on the
    labelled support, and its `embeddings`), ranked best first."""
    from imprint.analysis.inspection.duplicates import unit_rows
    from imprint.core.search import nearest
    from imprint.stages.kmeans import batched_kmeans

    n = len(embeddings)
    budget = min(int(budget), n)
    top2 = np.sort(proba, axis=1)[:, -2:] if proba.shape[1] > 1 else np.c_[np.zeros(n), proba]
    uncertainty = 1.0 - (top2[:, 1] - top2[:, 0])
    units = unit_rows(embeddings)
    clusters = batched_kmeans(torch.from_numpy(units), torch.tensor([n]), budget, seed=seed, with_inertia=False)
    centres = clusters.centroids.numpy().astype(np.float32)
    similarity, assigned = nearest(units, centres, 1)  # the centre of largest inner product, in blocks
    similarity, assigned = similarity[:, 0], assigned[:, 0]
    sizes = np.bincount(assigned, minlength=len(centres))
    merit = UNCERTAINTY_WEIGHT * _within_rank(uncertainty, assigned) + \
        (1 - UNCERTAINTY_WEIGHT) * _within_rank(similarity, assigned)
    order = np.lexsort((-merit, assigned))
    first_of_cluster = order[np.r_[True, assigned[order][1:] != assigned[order][:-1]]]
    chosen = first_of_cluster[np.argsort(-sizes[assigned[first_of_cluster]], kind="stable")]
    if len(chosen) < budget:  # fewer distinct clusters than picks: the most uncertain of the rest
        rest = np.setdiff1d(np.arange(n), chosen)
        chosen = np.r_[chosen, rest[np.argsort(-uncertainty[rest], kind="stable")][:budget - len(chosen)]]
    chosen = chosen[:budget]
    return Picks(chosen, uncertainty[chosen], sizes[assigned[chosen]], proba[chosen].argmax(axis=1))
