"""Tests of ``imprint.core.presets``: published methods by name: a preset is the set of stage settings that
reproduces one."""
from __future__ import annotations

import pytest

from imprint import ImprintClassifier
from imprint.cli import main


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
