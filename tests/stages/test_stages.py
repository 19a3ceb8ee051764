"""Tests of ``imprint.stages``: the stages of the imprinting pipeline, declared by name with the settings each reads:
NORM (normalisations, ``norm.py``), GEN (generation of proxies, ``generation.py``), the heads (how a query is
scored against each proxy, ``heads/``, one file per method) and AGG (aggregation, ``aggregation.py``)."""
from __future__ import annotations

import pytest

from imprint import ImprintClassifier, UnknownStageError
from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS


def test_registries_name_every_stage_of_the_paper_and_the_heads_beyond_it():
    assert {"none", "l2", "quantile", "center", "tukey", "random_relu"} <= set(NORMS.names())
    assert {"mean", "kmeans", "all", "kmedoids", "random", "fps", "ls", "kls"} <= set(GENERATORS.names())
    assert {"max", "mean", "mnn", "sum"} <= set(AGGREGATIONS.names())
    assert {"dot", "euclidean", "mahalanobis", "fecam", "ridge", "kernel"} <= set(METRICS.names())
    assert [name for name in GENERATORS.names() if GENERATORS.entry(name).oracle] == ["kls", "ls"]


@pytest.mark.parametrize("setting, value, valid", [("generation", "kmean", "kmeans"), ("norm_pre", "L2", "l2"),
                                                   ("aggregation", "knn", "mnn"), ("metric", "cosine", "euclidean")])
def test_unknown_stage_names_list_the_valid_ones(mixture, setting, value, valid):
    X, y = mixture
    with pytest.raises(UnknownStageError, match=f"unknown .*'{value}'; valid: .*{valid}") as err:
        ImprintClassifier(**{setting: value}).fit(X, y)
    assert "\n" not in str(err.value)
