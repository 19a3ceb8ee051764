"""``k="auto"``: proxies per class chosen from the support set itself, never from test data.

Two steps. (1) How many proxies per support sample: the ratio is chosen by repeated 2-fold
cross-validation on the support set over a ladder of k (each half imprints, the other half is scored,
and back), then carried over to the full support set (a class with twice the samples gets twice the
proxies).
(2) Which classes get them: the budget is shared out in proportion to each class's spread relative to
its nearest class, ``tr(Sigma_c) / min_c' ||mu_c - mu_c'||^2``, a per-class NC1: classes far from
collapse get more proxies (the paper's finding), collapsed ones fewer, and the mean stays the same so
no class's proxies crowd out the others'.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from imprint.core.sampling import ranked_by_class
from imprint.core.settings import PerClassRule
from imprint.core.support import Support, class_means, squared_norms

LADDER = (1, 2, 3, 5, 10, 20, 50, 100)
REPEATS = 2  # random half-splits averaged, to steady the choice


def halves(codes: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask putting a random half of every class in the first fold."""
    order, rank = ranked_by_class(codes, np.random.default_rng(seed))
    first = np.zeros(len(codes), dtype=bool)
    first[order] = rank < (np.bincount(codes) // 2)[codes[order]]
    return first


def proxy_ratio(codes: np.ndarray, score: Callable[[int, np.ndarray, np.ndarray], float], seed: int = 0,
                repeats: int = REPEATS) -> float:
    """Proxies per support sample chosen by repeated 2-fold cross-validation over LADDER.

    `score(k, train_mask, test_mask)` imprints with k on the train rows and returns accuracy on the
    test rows. Of the k whose accuracy is within one standard error of the best, the largest is taken:
    each fold has half the samples, so it under-rates proxies that the full support set will fill.
    """
    folds = [halves(codes, seed + r) for r in range(repeats)]
    half = float(np.median(np.bincount(codes[folds[0]])))
    ladder = [k for k in LADDER if k <= max(1.0, half)]
    accuracy = np.array([np.mean([score(k, f, ~f) + score(k, ~f, f) for f in folds]) / 2 for k in ladder])
    standard_error = np.sqrt(accuracy.max() * (1 - accuracy.max()) / (repeats * len(codes)))
    chosen = max(k for k, a in zip(ladder, accuracy) if a >= accuracy.max() - standard_error)
    return chosen / max(half, 1.0)


def spread_ratios(X: torch.Tensor | Support, counts: torch.Tensor) -> torch.Tensor:
    """Per class: mean squared distance to its mean over the squared distance to the nearest other mean
    (sums streamed block by block: no float64 copy of the support set)."""
    support = X if isinstance(X, Support) else Support.of_sorted(X, counts)
    means = class_means(support, counts)
    squares = torch.zeros(len(counts), dtype=torch.float64, device=means.device)
    for codes, block in support.blocks():
        squares.index_add_(0, codes.to(means.device), squared_norms(block).to(means.device))
    within = squares / counts.to(means.device, torch.float64) - means.square().sum(1)  # E||x||^2 - ||mu||^2
    gaps = torch.cdist(means, means).square().fill_diagonal_(torch.inf).min(1).values
    return (within / gaps.clamp_min(1e-12)).cpu()


def per_class_k(X: torch.Tensor | Support, counts: torch.Tensor, ratio: float) -> torch.Tensor:
    """k_c = ratio x n_c x (spread_c / mean spread), at least 1 and at most n_c."""
    spread = spread_ratios(X, counts) if len(counts) > 1 else torch.ones(len(counts), dtype=torch.float64)
    weight = spread / spread.mean().clamp_min(1e-12)
    k = torch.round(ratio * counts.cpu().double() * weight).long()
    return torch.minimum(k.clamp_min(1), counts.cpu())


class ProxyRatio(PerClassRule):
    """k="auto" once chosen: `ratio` proxies per support sample, shared out by class spread when fitted, plain for
    classes added later, and the median class's share for models fitted on folds."""

    def __init__(self, ratio: float) -> None:
        self.ratio = float(ratio)

    def per_class(self, support: Support, counts: torch.Tensor) -> torch.Tensor:
        return per_class_k(support, counts, self.ratio)

    def for_new_classes(self, counts: torch.Tensor) -> torch.Tensor:
        return torch.round(self.ratio * counts.double()).long().clamp_min(1)

    def for_fold(self, counts: np.ndarray, n_folds: int) -> int:
        return max(1, int(round(self.ratio * np.median(counts) * (n_folds - 1) / n_folds)))


def choose(codes: np.ndarray, score: Callable[[int, np.ndarray, np.ndarray], float], seed: int = 0) -> ProxyRatio:
    """The rule for k="auto" (declared on the setting): proxies per support sample by cross-validation."""
    return ProxyRatio(proxy_ratio(codes, score, seed=seed))
