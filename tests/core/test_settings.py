"""Tests of ``imprint.core.settings``: settings declared once, with the stage that uses them, and the registries that
name the stages."""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
from conftest import TESTS

from imprint import ClassifierFileError, ImprintClassifier
from imprint.core.settings import SETTINGS, Setting


@pytest.fixture(scope="module")
def plugin():
    sys.path.insert(0, str(TESTS))
    import plugin_stage

    return plugin_stage


def test_the_classifier_parameters_are_the_declared_settings():
    params = list(inspect.signature(ImprintClassifier).parameters)
    assert params[:6] == ["generation", "norm_pre", "norm_post", "norm_inf", "metric", "aggregation"]
    assert set(params) == set(SETTINGS.names())
    clf = ImprintClassifier()
    assert clf.get_params() == SETTINGS.defaults()
    assert {stage for _, stage in SETTINGS.users("k")} >= {"kmeans", "random", "fps", "kmedoids", "kls"}
    with pytest.raises(TypeError, match="no setting 'kk'; valid: generation"):
        ImprintClassifier(kk=3)


def test_a_shared_setting_must_be_declared_identically():
    with pytest.raises(RuntimeError, match="declared twice with different definitions"):
        SETTINGS.declare(Setting("k", int, 5, "another k", low=1), ("generation", "elsewhere"))


def test_settings_of_a_stage_that_is_not_chosen_are_refused_in_one_line(mixture):
    X, y = mixture
    with pytest.raises(ValueError, match=r"k=8 is only used by generation='kmeans'/.*; got generation='all'"):
        ImprintClassifier(generation="all", k=8).fit(X, y)
    with pytest.raises(ValueError, match="shrinkage=0.5 is only used by metric='mahalanobis'/'fecam'; got metric="):
        ImprintClassifier(shrinkage=0.5).fit(X, y)
    with pytest.raises(ValueError, match=r"beta must be a number > 0, or 'auto'; got -1"):
        ImprintClassifier(metric="kernel", beta=-1).fit(X, y)


def test_a_plugin_stage_works_like_a_builtin_one(plugin, mixture, tmp_path):
    X, y = mixture
    clf = ImprintClassifier(generation="trimmed_mean", trim=0.3, norm_pre="none", norm_post="none").fit(
        X, y, encoder_id="test:encoder")
    expected = []
    for c in range(6):
        Z = X[y == c].astype(np.float64)
        nearest = np.argsort(((Z - Z.mean(0)) ** 2).sum(1))[:int(np.ceil(0.7 * len(Z)))]
        expected.append(Z[nearest].mean(0))
    np.testing.assert_allclose(clf.proxies_, np.array(expected), atol=1e-5)
    assert "trim" in inspect.signature(ImprintClassifier).parameters
    path = tmp_path / "plugin.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert loaded.get_params()["trim"] == 0.3
    with pytest.raises(ValueError, match=r"trim must be a number >= 0 and < 0.5; got 0.7"):
        ImprintClassifier(generation="trimmed_mean", trim=0.7).fit(X, y)


def test_loading_a_plugin_classifier_without_the_plugin_names_it(plugin, mixture, tmp_path):
    X, y = mixture
    path = tmp_path / "plugin.safetensors"
    ImprintClassifier(generation="trimmed_mean").fit(X, y).save(path)
    code = (f"from imprint import ImprintClassifier\nImprintClassifier.load({str(path)!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "uses generation 'trimmed_mean', which is not registered here: import plugin_stage before loading " \
           "(command line: --plugin plugin_stage)" in last
    assert ClassifierFileError.__name__ in last
