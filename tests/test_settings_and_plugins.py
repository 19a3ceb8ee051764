"""One settings table: every setting declared once, beside its stage, and derived everywhere; plug-in stages
(tests/plugin_stage.py) work in the classifier, the command line, grid YAML and classifier files."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imprint import ClassifierFileError, ImprintClassifier
from imprint.cli import main
from imprint.core.settings import SETTINGS, Setting

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


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


def test_the_command_line_takes_plugins_and_their_settings(plugin, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "clf.safetensors"
    code = main(["fit", str(ROOT / "examples" / "fashion"), "-o", str(out), "--plugin", "plugin_stage",
                 "--generation", "trimmed_mean", "--trim", "0.25", "--quiet", "--shots", "5",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    assert "generation=trimmed_mean" in capsys.readouterr().out
    assert main(["fit", "--help", "--plugin", "plugin_stage"]) == 0
    assert "--trim TRIM" in capsys.readouterr().out
    assert main(["fit", str(ROOT / "examples" / "fashion"), "-o", str(out), "--plugin", "no_such_module_here"]) == 2
    assert "--plugin no_such_module_here: cannot import it" in capsys.readouterr().err


def test_grid_yaml_takes_plugins_and_presets(plugin, monkeypatch):
    from imprint.grid.config import ConfigError, parse_config
    from imprint.grid.expand import expand

    monkeypatch.syspath_prepend(str(TESTS))
    config = parse_config({"datasets": ["digits"], "plugins": ["plugin_stage"],
                           "variants": [{"name": "trimmed", "generation": "trimmed_mean", "trim": [0.1, 0.3]},
                                        {"preset": "gda"}, {"name": "gda ledoit-wolf", "preset": "gda",
                                                            "shrinkage": "ledoit_wolf"}]})
    cells = expand(config).cells
    assert [c.variant for c in cells] == ["trimmed (trim=0.1)", "trimmed (trim=0.3)", "gda", "gda ledoit-wolf"]
    assert cells[2].method["metric"] == "mahalanobis" and cells[2].method["shrinkage"] == "auto"
    assert cells[3].method["shrinkage"] == "ledoit_wolf" and cells[3].method["generation"] == "mean"
    with pytest.raises(ConfigError, match="plug-in module 'missing_plugin' cannot be imported"):
        parse_config({"datasets": ["digits"], "plugins": ["missing_plugin"]})


def test_the_grid_default_generation_is_the_classifiers(tmp_path):
    from imprint.grid.config import parse_config

    config = parse_config({"datasets": ["digits"]})
    assert config.generation == [ImprintClassifier().generation] and config.k == [ImprintClassifier().k]


def test_presets_name_published_methods(mixture, capsys):
    from imprint.core.presets import PRESETS

    X, y = mixture
    assert {"qi", "hosoda", "janson", "imprint", "simpleshot", "gda", "fecam", "ranpac", "tip_adapter"} <= set(PRESETS)
    for name in PRESETS:
        clf = ImprintClassifier.from_preset(name, seed=1)
        assert clf.seed == 1 and clf.get_params()["generation"] == PRESETS[name].settings["generation"]
        assert clf.fit(X[::2], y[::2]).score(X[1::2], y[1::2]) > 0.8, name
    assert ImprintClassifier.from_preset("imprint", k=5).k == 5
    with pytest.raises(ValueError, match="unknown preset 'gdaa'; valid: qi"):
        ImprintClassifier.from_preset("gdaa")
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "gda:" in out and "ICLR 2024" in out and "metric=mahalanobis" in out
