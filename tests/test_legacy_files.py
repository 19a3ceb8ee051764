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
    if "proba" in EXPECTED[name]:  # the calibrated temperature is read from where the format kept it
        np.testing.assert_allclose(clf.predict_proba(queries), np.asarray(EXPECTED[name]["proba"]), atol=1e-6)


def test_a_format_3_file_keeps_its_taught_examples_and_what_was_chosen():
    taught = ImprintClassifier.load(FIXTURES / "v3_taught.safetensors")
    assert len(taught.examples_.of("sneaker")) == 30 and taught.examples_.thumbnails_of("sneaker")[3] == \
        b"\xff\xd8jpeg\x03"
    auto = ImprintClassifier.load(FIXTURES / "v3_auto_default.safetensors")
    assert auto.tuned_ == {"method": "tukey_gda", "shrinkage": "ledoit_wolf"}  # settings only
    assert auto.tuning_report_ == {"method_cv_accuracy": 1.0} and auto.temperature_ > 0
    resaved = FIXTURES.parent / "resaved.safetensors"
    try:  # written again, it is a file of the current format with the same answers
        auto.save(resaved)
        again = ImprintClassifier.load(resaved)
        queries = np.load(FIXTURES / "queries.npy")
        np.testing.assert_allclose(again.predict_proba(queries), auto.predict_proba(queries), atol=1e-12)
    finally:
        resaved.unlink(missing_ok=True)
