"""Comparing variants over groups as the IMPRINT paper does: average ranks, Friedman test, pairwise
Wilcoxon signed-rank tests with Holm's correction, and the cliques a critical-difference diagram draws."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_GROUPS = 5  # fewer groups make the Friedman test and the diagram meaningless
ALPHA = 0.05


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Mean rank of each variant (column) over groups (rows); rank 1 = highest score, ties share ranks."""
    return stats.rankdata(-scores, axis=1).mean(axis=0)


@dataclass
class Comparison:
    """Friedman test over all variants and Holm-corrected pairwise Wilcoxon p-values."""

    friedman_statistic: float
    friedman_p: float
    pairwise_p: np.ndarray  # (V, V), Holm-adjusted, 1 on the diagonal

    def cliques(self, ranks: np.ndarray) -> list[list[int]]:
        """Maximal runs of variants (in rank order) with no significant difference between any two."""
        order = list(np.argsort(ranks))
        runs = []
        for start in range(len(order)):
            end = start
            while end + 1 < len(order) and all(self.pairwise_p[order[i], order[end + 1]] >= ALPHA
                                               for i in range(start, end + 1)):
                end += 1
            if end > start and not any(s <= start and end <= e for s, e in runs):
                runs.append((start, end))
        return [order[s:e + 1] for s, e in runs]


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values."""
    order = np.argsort(p_values)
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p_values) - np.arange(len(p_values))) * p_values[order]))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def _wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)


def compare(scores: np.ndarray) -> Comparison | None:
    """Tests over a (groups x variants) score matrix, or None with fewer than MIN_GROUPS groups or 3 variants."""
    n_groups, n_variants = scores.shape
    if n_groups < MIN_GROUPS or n_variants < 3:
        return None
    if np.ptp(scores, axis=1).max() == 0:  # every variant equal in every group
        statistic, p = 0.0, 1.0
    else:
        statistic, p = stats.friedmanchisquare(*scores.T)
    pairs = list(itertools.combinations(range(n_variants), 2))
    adjusted = holm(np.array([_wilcoxon_p(scores[:, i], scores[:, j]) for i, j in pairs]))
    pairwise = np.ones((n_variants, n_variants))
    for (i, j), value in zip(pairs, adjusted):
        pairwise[i, j] = pairwise[j, i] = value
    return Comparison(float(statistic), float(p), pairwise)
