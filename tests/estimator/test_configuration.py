"""Tests of ``imprint.estimator.configuration``: the classifier's settings: the stage chosen at each pipeline point,
the settings that apply whatever the stages, and the rules for combinations of settings, each written once."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run

from imprint import ImprintClassifier


def test_a_stage_setting_given_pins_the_method_and_custom_pins_the_default_pipeline(mixture):
    X, y = mixture
    assert "method" not in ImprintClassifier(k=3).fit(X, y).tuned_
    custom = ImprintClassifier(method="custom").fit(X, y)
    assert "method" not in custom.tuned_ and custom.pipeline_.settings["generation"] == "kmeans"
    gda = ImprintClassifier(method="gda").fit(X, y)
    assert gda.pipeline_.settings["metric"] == "mahalanobis" and "shrinkage" in gda.tuned_
    with pytest.raises(ValueError, match="method must be|unknown method"):
        ImprintClassifier(method="gdaa").fit(X, y)


def test_seeds_beyond_what_a_generator_takes_are_refused_up_front(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("datasets: [fashion_mnist]\nseeds: [100000000000000000000]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and "seeds must be integers from 0 to 2^32 - 1" in err
    with pytest.raises(ValueError, match="seed must be"):
        ImprintClassifier(seed=2**40).fit(np.eye(4), [0, 0, 1, 1])
