"""Tests of ``imprint.grid.report.stats``: comparing variants over groups as the IMPRINT paper does: average ranks,
Friedman test, pairwise Wilcoxon signed-rank tests with Holm's correction, and the cliques a critical-difference
diagram draws."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from imprint.grid.report.stats import average_ranks, compare, holm


def test_average_ranks_give_rank_one_to_the_best_and_share_ties():
    scores = np.array([[0.9, 0.8, 0.8], [0.7, 0.9, 0.5]])
    assert average_ranks(scores).tolist() == pytest.approx([1.5, 1.75, 2.75])
    assert average_ranks(scores).sum() == pytest.approx(6.0)  # V (V + 1) / 2 per group


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_compare_needs_enough_groups_and_variants():
    rng = np.random.default_rng(0)
    assert compare(rng.random((4, 5))) is None
    assert compare(rng.random((10, 2))) is None


def test_a_clearly_better_variant_is_separated_and_equal_ones_are_joined():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.8, size=(30, 1))
    scores = np.hstack([base + 0.1, base + rng.normal(0, 0.01, (30, 1)), base + rng.normal(0, 0.01, (30, 1))])
    comparison = compare(scores)
    assert comparison.friedman_p == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)
    assert comparison.friedman_p < 1e-6
    assert comparison.pairwise_p[0, 1] < 0.05 and comparison.pairwise_p[0, 2] < 0.05
    assert comparison.pairwise_p[1, 2] >= 0.05
    ranks = average_ranks(scores)
    assert ranks[0] == 1.0
    assert comparison.cliques(ranks) == [[1, 2]] or comparison.cliques(ranks) == [[2, 1]]


def test_identical_variants_are_one_clique():
    scores = np.tile(np.linspace(0.5, 0.9, 8)[:, None], (1, 3))
    comparison = compare(scores)
    assert comparison.friedman_p == 1.0
    assert sorted(comparison.cliques(average_ranks(scores))[0]) == [0, 1, 2]
