"""Open set: rejection scores with conformal thresholds from the support set alone, prediction sets, the API and
the command line; realised rates on real EfficientNet-Lite0 embeddings."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.openset import REJECTORS
from imprint.openset.conformal import minimum_samples, threshold

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fashion"


def test_the_conformal_threshold_keeps_the_rejection_rate():
    rng = np.random.default_rng(0)
    rates = []
    for trial in range(400):  # exchangeable scores: calibration and new known-class queries from one law
        scores = rng.normal(size=59)
        rates.append((rng.normal(size=200) > threshold(scores, 0.05)).mean())
    assert np.mean(rates) <= 0.05 + 0.005 and np.mean(rates) > 0.03
    assert minimum_samples(0.05) == 19 and threshold(np.arange(18.0), 0.05) == np.inf
    assert threshold(np.arange(19.0), 0.05) == 18.0


@pytest.mark.parametrize("reject", sorted(REJECTORS.names()))
def test_every_score_rejects_unknowns_and_keeps_its_state_on_disk(mixture, tmp_path, reject):
    X, y = mixture
    known = y < 4
    fit_rows = known & (np.arange(len(y)) % 3 != 0)
    clf = ImprintClassifier(generation="kmeans", k=3, reject=reject, reject_rate=0.1).fit(X[fit_rows], y[fit_rows])
    labels = clf.predict(X)
    assert labels.dtype.kind == "i" and set(labels.tolist()) <= {-1, 0, 1, 2, 3}
    assert (labels[~known] == -1).mean() > 0.5, "most images of classes 4 and 5 should be called unknown"
    assert (labels[known & ~fit_rows] == -1).mean() <= 0.25
    scores = clf.score_unknown(X)
    np.testing.assert_array_equal(labels == -1, scores > clf.threshold_)
    closed = clf.set_params(reject=None).predict(X)  # the same fitted proxies, no rejection
    clf.set_params(reject=reject)
    accepted = labels != -1
    if clf.open_set_.rejector.uses_class_scores:  # labels from the class scores' argmax
        assert (labels[accepted] == closed[accepted]).mean() > 0.99
    else:  # labels exactly as predict gives them without rejection
        np.testing.assert_array_equal(labels[accepted], closed[accepted])
    path = tmp_path / "open.safetensors"
    clf.save(path)
    loaded = ImprintClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(X), labels)
    np.testing.assert_array_equal(loaded.score_unknown(X), scores)


def test_unknown_labels_follow_the_class_type_and_can_be_set(mixture):
    X, y = mixture
    names = np.array([f"class {c}" for c in y])
    clf = ImprintClassifier(generation="mean", reject="max_score", reject_rate=0.2).fit(X[y < 5], names[y < 5])
    assert "unknown" in set(clf.predict(X[y == 5]).tolist())
    custom = ImprintClassifier(generation="mean", reject="max_score", unknown_label="none of these").fit(
        X[y < 5], names[y < 5])
    assert set(custom.predict(X[y == 5]).tolist()) <= {"none of these", *set(names[y < 5])}
    with pytest.raises(ValueError, match="unknown_label 'class 0' is also a class; set unknown_label"):
        ImprintClassifier(reject="knn", unknown_label="class 0").fit(X, names)


def test_bad_rejection_settings_are_one_line_errors(mixture):
    X, y = mixture
    for rate in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"reject_rate must be a number > 0 and < 1; got") as error:
            ImprintClassifier(reject="energy", reject_rate=rate).fit(X, y)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="reject needs an imprinted classifier; generation='ls' is an oracle"):
        ImprintClassifier(generation="ls", reject="max_score", norm_pre="none", norm_post="none").fit(X, y)
    with pytest.raises(ValueError, match="unknown reject 'maxscore'; valid: .*; did you mean 'max_score'"):
        ImprintClassifier(reject="maxscore").fit(X, y)
    with pytest.raises(ValueError, match="reject_rate=0.1 is only used by reject="):
        ImprintClassifier(reject_rate=0.1).fit(X, y)
    with pytest.raises(ValueError, match="score_unknown needs a rejection score"):
        ImprintClassifier().fit(X, y).score_unknown(X)


def test_a_support_set_too_small_for_the_rate_says_so(mixture):
    X, y = mixture
    rows = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    with pytest.warns(UserWarning, match=r"12 support samples are too few to reject at most 0.05 of known images "
                                         r"\(it needs at least 19\); nothing will be rejected"):
        clf = ImprintClassifier(generation="mean", reject="max_score").fit(X[rows], y[rows])
    assert np.isinf(clf.threshold_) and (clf.predict(X) != -1).all()


def test_conformal_prediction_sets_cover_the_true_class(mixture):
    X, y = mixture
    fit_rows = np.arange(len(y)) % 2 == 0
    clf = ImprintClassifier(generation="mean", reject="max_score").fit(X[fit_rows], y[fit_rows])
    for alpha in (0.05, 0.2):
        sets = clf.predict_set(X[~fit_rows], alpha)
        assert sets.shape == (int((~fit_rows).sum()), 6) and sets.any(axis=1).all()
        covered = sets[np.arange(len(sets)), np.searchsorted(clf.classes_, y[~fit_rows])]
        assert covered.mean() >= 1 - alpha - 0.05
    assert clf.predict_set(X[~fit_rows], 0.2).sum() <= clf.predict_set(X[~fit_rows], 0.05).sum()
    with pytest.raises(ValueError, match="predict_set needs conformal calibration"):
        ImprintClassifier().fit(X, y).predict_set(X)
    plain = ImprintClassifier(generation="mean").fit(X[fit_rows], y[fit_rows]).calibrate(X[~fit_rows][::2],
                                                                                        y[~fit_rows][::2])
    assert plain.predict_set(X[~fit_rows][1::2], 0.1).any(axis=1).all()


def test_adding_and_removing_classes_recalibrates(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", reject="knn", reject_rate=0.1).fit(X[y < 3], y[y < 3])
    assert (clf.predict(X[y == 4]) == -1).mean() > 0.5
    clf.add_classes(X[y == 4], y[y == 4])
    assert len(clf.open_set_.support) == int((y < 3).sum() + (y == 4).sum()) and 4 in clf.classes_
    assert (clf.predict(X[y == 4]) == -1).mean() < 0.2
    clf.remove_classes([4])
    assert len(clf.open_set_.support) == int((y < 3).sum()) and (clf.predict(X[y == 4]) == -1).mean() > 0.5


@pytest.mark.slow
def test_realised_rejection_near_the_target_on_real_embeddings(real_embeddings):
    """Fashion-MNIST classes 0-4 known, 5-9 near-unknown, MNIST far-unknown (Lite0, 300 shots): every score keeps
    the known-class rejection near 5% and tells MNIST from Fashion-MNIST."""
    Xs, ys, Xq, yq = real_embeddings("fashion_mnist")
    _, _, mnist, _ = real_embeddings("mnist5k")
    rates = {}
    for reject in REJECTORS.names():
        clf = ImprintClassifier(generation="mean", reject=reject, reject_rate=0.05).fit(Xs[ys < 5], ys[ys < 5])
        known = clf.predict(Xq[yq < 5]) == -1
        rates[reject] = float(known.mean())
        assert 0.01 <= rates[reject] <= 0.10, (reject, rates)  # 500 known test images: binomial sd 1 point
        assert (clf.predict(mnist) == -1).mean() > 0.5, reject
    assert np.mean(list(rates.values())) == pytest.approx(0.05, abs=0.025), rates


def test_the_command_line_rejects_and_reports_open_set_metrics(tmp_path, capsys):
    root = tmp_path / "known"
    for name in ("bag", "sneaker", "trouser", "dress"):
        shutil.copytree(EXAMPLES / name, root / name)
    unknown = tmp_path / "other"
    shutil.copytree(EXAMPLES / "coat", unknown / "coat")
    clf = tmp_path / "clf.safetensors"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["fit", str(root), "-o", str(clf), "--generation", "mean", "--reject", "mahalanobis",
                 "--reject-rate", "0.1", *cache]) == 0
    capsys.readouterr()
    assert main(["predict", str(clf), str(unknown), "-o", str(tmp_path / "p.csv"), *cache]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert "unknown_score" in rows[0] and {r["label"] for r in rows} <= {"unknown", "bag", "sneaker", "trouser",
                                                                          "dress"}
    assert main(["eval", str(clf), str(root), "--unknown", str(unknown), "--format", "json", *cache]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.5 < report["open_set"]["auroc"] <= 1 and report["open_set"]["target_rate"] == 0.1
    assert report["open_set"]["n_unknown"] == 20
    plain = tmp_path / "plain.safetensors"
    assert main(["fit", str(root), "-o", str(plain), "--generation", "mean", *cache]) == 0
    capsys.readouterr()
    assert main(["eval", str(plain), str(root), "--unknown", str(unknown), *cache]) == 2
    assert "has none: fit with --reject" in capsys.readouterr().err
