"""The default is the best method for the data at hand (method="auto", chosen on the support set alone), and the
probabilities mean what they say (a temperature fitted by cross-fitting on the support set)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES, run

from imprint import ImprintClassifier
from imprint.core.presets import AUTO_CANDIDATES
from imprint.estimator.calibration import fit_temperature, softmax
from imprint.workflows.evaluate import expected_calibration_error


def test_the_default_chooses_a_published_method_on_the_support_set_and_records_it(mixture, tmp_path):
    X, y = mixture
    clf = ImprintClassifier().fit(X[::2], y[::2])
    method = clf.tuned_["method"]
    assert method in AUTO_CANDIDATES and 0.5 < clf.tuning_report_["method_cv_accuracy"] <= 1.0
    assert set(clf.tuning_.method_scores) == set(AUTO_CANDIDATES)
    scores = clf.tuning_.method_scores  # the preferred method unless another is better by more than the noise
    best = max(scores.values())
    margin = np.sqrt(best * (1 - best) / len(y[::2]))
    assert clf.tuning_report_["method_cv_accuracy"] == pytest.approx(scores[method], abs=1e-6)
    assert scores[method] >= best - margin - 1e-9
    assert all(scores[earlier] < best - margin for earlier in AUTO_CANDIDATES[:AUTO_CANDIDATES.index(method)])
    same = ImprintClassifier.from_preset(method).fit(X[::2], y[::2])  # exactly the chosen method
    np.testing.assert_allclose(clf.decision_function(X[1::2]), same.decision_function(X[1::2]), rtol=1e-5,
                               atol=1e-5)
    clf.save(tmp_path / "auto.safetensors")
    loaded = ImprintClassifier.load(tmp_path / "auto.safetensors")
    np.testing.assert_array_equal(loaded.decision_function(X[1::2]), clf.decision_function(X[1::2]))
    assert loaded.tuned_["method"] == method and loaded.get_params() == clf.get_params()


def test_the_method_is_the_preferred_one_unless_another_is_better_by_more_than_one_standard_error():
    """Cross-validation on a few held-out images cannot tell methods a point apart: the first method listed
    stays unless another beats it by more than one standard error of the best accuracy."""
    from imprint.estimator.tuning import within_one_standard_error

    scores = {"tukey_gda": 0.80, "gda": 0.82, "ranpac": 0.70}
    assert within_one_standard_error(scores, 100) == "tukey_gda"  # one standard error: 0.038
    assert within_one_standard_error(scores, 10_000) == "gda"  # 0.0038
    assert within_one_standard_error({"tukey_gda": 0.5, "gda": 1.0}, 100) == "gda"  # no noise at 100%


def test_a_large_support_set_chooses_on_a_sample_and_calibrates_on_every_row(real_embeddings, monkeypatch):
    """Above SETTING_ROWS rows the method and settings are those a fit on a seeded stratified sample chooses, a
    fixed shrinkage carried to the whole set as the same weight in rows; the temperature is the whole set's."""
    import imprint.estimator.tuning as tuning
    from imprint.core.sampling import stratified_sample
    from imprint.stages.heads import carried_shrinkage as _carried_shrinkage

    Xs, ys, _, _ = real_embeddings("fashion_mnist")  # 3,000 rows, classes 0-9
    monkeypatch.setattr(tuning, "SETTING_ROWS", 500)
    rows = stratified_sample(ys, 500, seed=0)
    assert len(rows) == 500 and (np.bincount(ys[rows]) == 50).all()
    for make in (lambda **kw: ImprintClassifier.from_preset("tukey_gda", **kw), ImprintClassifier):
        whole, sample = make().fit(Xs, ys), make().fit(Xs[rows], ys[rows])
        assert whole.tuning_report_["tuned_on_rows"] == 500 and "tuned_on_rows" not in sample.tuning_report_
        assert whole.tuned_.get("method") == sample.tuned_.get("method")
        assert whole.tuning_report_.get("method_cv_accuracy") == sample.tuning_report_.get("method_cv_accuracy")
        carried = _carried_shrinkage(sample.tuned_["shrinkage"], 3000 / 500) if "shrinkage" in sample.tuned_ else None
        assert whole.tuned_.get("shrinkage") == carried
        fixed = {"shrinkage": carried} if carried is not None else {}  # nothing left to choose: every row calibrates
        pinned = ImprintClassifier.from_preset(whole.tuned_.get("method", "tukey_gda"), **fixed).fit(Xs, ys)
        assert whole.temperature_ == pytest.approx(pinned.temperature_, rel=1e-9)


def test_a_fixed_shrinkage_carries_to_more_rows_as_the_same_weight_in_rows():
    """a = n0 / (n0 + n): chosen on n rows, for r n rows a' = n0 / (n0 + r n); the GDA trace rule (n0 = d) is
    carried exactly; estimators recompute themselves, 0 and 1 stay."""
    from imprint.stages.heads import carried_shrinkage as _carried_shrinkage

    assert _carried_shrinkage(0.2, 4.0) == pytest.approx(0.2 / (0.2 + 0.8 * 4.0))
    assert _carried_shrinkage(1280 / (1280 + 1333), 6.0) == pytest.approx(1280 / (1280 + 6.0 * 1333))
    assert _carried_shrinkage(0.35, 1.0) == pytest.approx(0.35)
    assert [_carried_shrinkage(v, 5.0) for v in ("ledoit_wolf", 0.0, 1.0)] == ["ledoit_wolf", 0.0, 1.0]


def test_a_stage_setting_given_pins_the_method_and_custom_pins_the_default_pipeline(mixture):
    X, y = mixture
    assert "method" not in ImprintClassifier(k=3).fit(X, y).tuned_
    custom = ImprintClassifier(method="custom").fit(X, y)
    assert "method" not in custom.tuned_ and custom.pipeline_.settings["generation"] == "kmeans"
    gda = ImprintClassifier(method="gda").fit(X, y)
    assert gda.pipeline_.settings["metric"] == "mahalanobis" and "shrinkage" in gda.tuned_
    with pytest.raises(ValueError, match="method must be|unknown method"):
        ImprintClassifier(method="gdaa").fit(X, y)


def test_the_command_line_shows_the_chosen_method(tmp_path, capsys):
    code, out, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--test-fraction", "0.3",
                         "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 0, err
    assert "method=" in out and "method_cv_accuracy=" in out and "held-out accuracy" in out
    code, out, _ = run(capsys, "info", tmp_path / "c.safetensors")
    assert code == 0 and "chosen on the support set: method=" in out and "generation=kmeans" not in out
    code, out, _ = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "i.safetensors", "--preset", "imprint",
                       "--cache-dir", tmp_path / "cache", "--quiet")
    assert code == 0 and "method=" not in out  # the paper's configuration, one word away


def test_a_fitted_temperature_is_the_likelihood_s_and_improves_calibration(real_embeddings):
    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    support = np.concatenate([np.flatnonzero(ys == c)[:32] for c in range(10)])
    fixed = ImprintClassifier.from_preset("gda", temperature=0.01).fit(Xs[support], ys[support])
    fitted = ImprintClassifier.from_preset("gda").fit(Xs[support], ys[support])
    assert fitted.temperature_ > 0
    before = expected_calibration_error(fixed.predict_proba(Xq), yq)
    after = expected_calibration_error(fitted.predict_proba(Xq), yq)
    assert after < before and after < 0.06, (before, after)
    np.testing.assert_array_equal(fixed.predict(Xq), fitted.predict(Xq))  # labels unchanged
    scores = fitted.decision_function(Xq)  # the held-out optimum by calibrate() beats both neighbours
    t = fitted.calibrate(Xq, yq).temperature_
    assert t == pytest.approx(fit_temperature(scores, yq), rel=1e-6)
    nll = [-np.log(softmax(scores, t * f)[np.arange(len(yq)), yq]).mean() for f in (0.8, 1.0, 1.25)]
    assert nll[1] <= nll[0] and nll[1] <= nll[2]


def test_the_temperature_carries_to_the_full_model_in_units_of_its_score_spread(real_embeddings):
    """At 2 images per class a GDA fold model (one per class) scores about 10^-4 as widely as the full model: a
    temperature read off the fold models made the full model certain of every answer. Fitted in units of each
    model's score spread, it is near the one the test images want, and so is the calibration error."""
    from imprint.estimator.calibration import score_spread

    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    support = np.concatenate([np.flatnonzero(ys == c)[:2] for c in range(10)])
    clf = ImprintClassifier.from_preset("gda", shrinkage=0.05).fit(Xs[support], ys[support])
    scores = clf.decision_function(Xq)
    best = fit_temperature(scores, yq)
    t = clf.temperature_
    assert best / 3 < t < best * 3, (t, best)
    assert expected_calibration_error(clf.predict_proba(Xq), yq) < 0.15
    unit = t / score_spread(clf.decision_function(Xs[support]))  # the same temperature in units of the spread
    assert 0.01 < unit < 10


def test_held_out_scores_all_right_give_the_rule_of_succession_not_certainty():
    """Where every held-out row's true class scores highest, the likelihood grows as T falls to 0; the temperature
    instead makes the mean probability of the true class (n + 1) / (n + 2). One wrong row: the likelihood's."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 48)
    scores = rng.normal(size=(48, 3))
    scores[np.arange(48), truth] += 5.0
    t = fit_temperature(scores, truth)
    assert softmax(scores, t)[np.arange(48), truth].mean() == pytest.approx(49 / 50, abs=1e-5)
    scores[0, truth[0]] -= 20.0  # now wrong
    t = fit_temperature(scores, truth)
    nll = [-np.log(softmax(scores, t * f)[np.arange(48), truth]).mean() for f in (0.8, 1.0, 1.25)]
    assert nll[1] <= nll[0] and nll[1] <= nll[2]


def test_eval_draws_a_reliability_diagram_and_reports_rejection_apart(tmp_path, capsys):
    cache = ["--cache-dir", tmp_path / "cache", "--quiet"]
    assert run(capsys, "fit", EXAMPLES, "-o", tmp_path / "r.safetensors", "--preset", "gda", "--reject", "max_score",
               *cache)[0] == 0
    code, out, err = run(capsys, "eval", tmp_path / "r.safetensors", EXAMPLES, "--calibration", tmp_path / "rel.png",
                         *cache)
    assert code == 0, err
    assert "closed set: every image gets its best class" in out and "rejected as unknown" in out
    assert "expected calibration error" in out
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run(capsys, "info", tmp_path / "r.safetensors")
    assert "threshold" in out
    code, out, _ = run(capsys, "predict", tmp_path / "r.safetensors", EXAMPLES / "bag", "--format", "table", *cache)
    assert code == 0 and "unknown score vs threshold" in out
