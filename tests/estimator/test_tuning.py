"""Tests of ``imprint.estimator.tuning``: ``"auto"`` settings chosen on the support set alone, by stratified cross-
validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint import ImprintClassifier
from imprint.core.presets import AUTO_CANDIDATES


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


def test_auto_hyperparameters_are_chosen_on_the_support_set_and_recorded(correlated):
    X, y = correlated
    clf = ImprintClassifier.from_preset("gda").fit(X, y)
    assert set(clf.tuned_) == {"shrinkage"} and len(clf.tuning_.scores["shrinkage"]) == 7 and clf.temperature_ > 0
    tip = ImprintClassifier.from_preset("tip_adapter").fit(X, y)
    assert tip.tuned_["beta"] in (1.0, 3.0, 5.5, 8.0, 12.0, 20.0)


@pytest.mark.parametrize("metric, name, values, extra", [
    ("mahalanobis", "shrinkage", ["ledoit_wolf", "oas", "gda", 0.05, 0.5], {}),
    ("fecam", "shrinkage", ["ledoit_wolf", "oas", 0.05, 0.5], {}),
    ("fecam", "shrinkage", [0.2, 0.8], {"generation": "kmeans", "k": 3}),
    ("ridge", "ridge_lambda", [1e-3, 1e-1, 10.0], {}),
    ("kernel", "beta", [1.0, 5.5, 20.0], {}),
])
def test_tuning_shortcut_scores_every_value_as_a_separate_fit_would(correlated, metric, name, values, extra):
    """Cross-validation scores every candidate from one fit (one decomposition, one Gram matrix): those scores,
    asked for block after block of queries, are the scores of a classifier fitted with that value."""
    X, y = correlated
    settings = {"generation": "mean", "metric": metric, "aggregation": "max", **extra}
    first = ImprintClassifier(**settings, **{name: values[0]}).fit(X, y)
    queries = first.pipeline_.model.norm_inf(torch.as_tensor(X, dtype=torch.float32))
    for block in (queries[:70], queries[70:]):  # the second block reuses what the first computed
        shortcut = first.pipeline_.metric.candidate_scores(name, values, block)
        assert shortcut is not None
        shortcut = list(shortcut)  # one value's scores at a time (a generator) or all at once
        assert len(shortcut) == len(values)
        for value, scores in zip(values, shortcut):
            separate = ImprintClassifier(**settings, **{name: value}).fit(X, y)
            expected = separate.pipeline_.metric(block).double()
            np.testing.assert_allclose(scores.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4 * float(
                expected.abs().max()))
