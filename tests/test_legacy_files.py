"""Classifier files written by earlier imprint versions load and give the answers they gave when written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imprint import ImprintClassifier

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_file_from_an_earlier_version_loads_to_the_same_answers(name):
    queries = np.load(FIXTURES / "queries.npy")
    clf = ImprintClassifier.load(FIXTURES / f"{name}.safetensors")
    np.testing.assert_allclose(clf.decision_function(queries), np.asarray(EXPECTED[name]["scores"]),
                               rtol=1e-5, atol=1e-5)
    assert clf.predict(queries).tolist() == EXPECTED[name]["predicted"]
