"""Tests of ``imprint.analysis.inspection``: know your data: likely wrong labels, duplicates and leaks, outliers,
class health and which images to label next, all from the embeddings and cross-fitted closed-form classifiers
(``imprint inspect``)."""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, copy_examples, headless_browser, mixture_embeddings, run
from PIL import Image


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the command, on real images
@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, Path]:
    """The bundled examples (4 classes) with a mislabelled image, a blank, a resized copy and a leak planted."""
    root = tmp_path_factory.mktemp("inspect")
    support = copy_examples(root / "support", ("bag", "sneaker", "trouser", "dress"))
    sneaker = sorted((EXAMPLES / "sneaker").iterdir())[0]
    shutil.copy(sneaker, support / "bag" / "mislabelled_sneaker.png")
    Image.new("RGB", (28, 28), (255, 255, 255)).save(support / "dress" / "blank.png")
    dress = sorted((EXAMPLES / "dress").iterdir())[1]
    Image.open(dress).resize((56, 56)).save(support / "dress" / "bigger_copy.png")
    (root / "test" / "trouser").mkdir(parents=True)
    leak = sorted((EXAMPLES / "trouser").iterdir())[2]
    Image.open(leak).save(root / "test" / "trouser" / "recompressed.jpg", quality=60)
    (root / "pool").mkdir()
    for name in ("coat", "sandal", "bag", "trouser"):
        for image in sorted((EXAMPLES / name).iterdir())[-4:]:
            shutil.copy(image, root / "pool" / f"{name}_{image.name}")
    return {"root": root, "support": support, "test": root / "test", "pool": root / "pool",
            "sneaker": sneaker, "dress": dress, "leak": leak}


@pytest.fixture(scope="module")
def report(planted, tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    from imprint.cli import main

    before = _snapshot(planted["root"])
    out = tmp_path_factory.mktemp("report") / "report"
    args = ["inspect", planted["support"], "-o", out, "--test-dir", planted["test"], "--unlabelled",
            planted["pool"], "--budget", "6", "--fix", "--quiet"]
    assert main([str(a) for a in args]) == 0
    return out, _snapshot(planted["root"]), before


# ---------------------------------------------------------------- the parts, on embeddings
def test_confident_learning_finds_flipped_labels_on_real_embeddings(real_embeddings):
    from imprint.analysis.inspection.crossfit import cross_fitted_proba
    from imprint.analysis.inspection.labels import find_label_issues

    X, y, _, _ = real_embeddings("fashion_mnist")
    rows = np.concatenate([np.flatnonzero(y == c)[:100] for c in np.unique(y)])
    X, y = X[rows], y[rows]
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), len(y) // 10, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    proba = cross_fitted_proba(X, noisy, 10, preset="gda", n_folds=5, seed=0)
    found = find_label_issues(proba, noisy)
    truth = np.isin(np.arange(len(y)), flipped)
    precision = (found.flagged & truth).sum() / found.flagged.sum()
    recall = (found.flagged & truth).sum() / truth.sum()
    assert precision >= 0.4 and recall >= 0.6, (precision, recall)  # measured: 0.6 / 0.8; random flags: 0.1
    suggested_right = (found.suggested[flipped] == y[flipped])[found.flagged[flipped]].mean()
    assert suggested_right >= 0.7  # the suggestion is mostly the true class
    assert found.score[found.flagged].mean() > found.score[~found.flagged].mean()


def test_confident_learning_rules_on_known_probabilities():
    from imprint.analysis.inspection.labels import find_label_issues

    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.7, 0.3], [np.nan, np.nan]])
    codes = np.array([0, 0, 1, 1, 1, 0])
    found = find_label_issues(proba, codes)
    # thresholds: class 0 (0.9 + 0.8) / 2 = 0.85; class 1 (0.7 + 0.8 + 0.3) / 3 = 0.6
    assert found.thresholds == pytest.approx([0.85, 0.6])
    assert found.flagged.tolist() == [False, False, False, False, False, False]  # 0.7 < 0.85: not confident
    found = find_label_issues(np.array([[0.9, 0.1], [0.95, 0.05], [0.1, 0.9], [0.96, 0.04]]), np.array([0, 0, 1, 1]))
    assert found.flagged.tolist() == [False, False, False, True] and found.suggested[3] == 0
    assert np.isnan(find_label_issues(proba, codes).score[5])  # a row nothing could judge has no score


def test_neighbour_votes_leave_the_row_itself_out():
    from imprint.analysis.inspection.crossfit import neighbour_votes

    codes = np.array([0, 0, 1, 1])
    indices = np.array([[0, 1, 2], [0, 1, 3], [2, 3, 1], [2, 3, -1]])  # row 1 is not first in its own list
    votes = neighbour_votes(indices, codes, 2, k=2)
    assert votes.tolist() == [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0]]


def test_approximate_search_of_a_large_set_finds_most_true_neighbours(real_embeddings, monkeypatch):
    from imprint.analysis.inspection.duplicates import unit_rows
    from imprint.core import search

    X = unit_rows(real_embeddings("fashion_mnist")[0])  # 3,000 real embeddings
    exact_s, exact_i, how = search.nearest_within(X, 16)
    assert how == "exact"
    monkeypatch.setattr(search, "EXACT_LIMIT", 1000)
    found_s, found_i, how = search.nearest_within(X, 16)
    assert how.startswith("approximate") and found_i.shape == (len(X), 16)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(found_i.tolist(), exact_i.tolist())])
    assert recall >= 0.9, recall  # measured 0.998 (candidates from 128 principal directions)
    assert np.all(np.diff(found_s, axis=1) <= 1e-6)  # best first
    true_s = np.einsum("nd,nkd->nk", X, X[found_i])  # the similarities given are those of the rows named
    np.testing.assert_allclose(found_s, true_s, atol=1e-4)
    assert np.all(found_s <= exact_s + 1e-4)  # never better than the true neighbours


def test_knn_outlier_scores_from_the_shared_search_are_the_classifiers(real_embeddings):
    from imprint.analysis.inspection.duplicates import unit_rows
    from imprint.analysis.inspection.outliers import classifier_scores, knn_scores, knn_width
    from imprint.core.search import nearest_within

    X, y, _, _ = real_embeddings("fashion_mnist")
    rows = np.concatenate([np.flatnonzero(y == c)[:120] for c in np.unique(y)])
    X, codes = X[rows], y[rows]
    width = knn_width("gda", "knn", codes)
    assert width == 13 and knn_width("tukey_gda", "knn", codes) == 0 and knn_width("gda", "energy", codes) == 0
    shared = knn_scores(nearest_within(unit_rows(X), 16)[0], width)
    theirs = classifier_scores(X, codes, preset="gda", reject="knn", rate=0.01, seed=0)
    np.testing.assert_allclose(shared, theirs, atol=1e-5)


def test_near_duplicates_within_and_across_sets_never_form_all_pairs():
    from imprint.analysis.inspection.duplicates import find_duplicates, identical_files, merge, similar_pairs, unit_rows

    X, _ = mixture_embeddings(n_classes=3, per_class=50, dim=16)
    X = X.copy()
    X[10] = X[3] * 1.5 + 1e-4  # a scaled copy: cosine ~1
    pairs = similar_pairs(unit_rows(X), None, 0.999, "embedding")
    assert [(p.first, p.second) for p in pairs] == [(3, 10)]
    other = X[[10, 40]] + 1e-5
    across = similar_pairs(unit_rows(X), unit_rows(other), 0.999, "embedding")
    assert {(p.first, p.second) for p in across} == {(3, 0), (10, 0), (40, 1)}
    assert [(p.first, p.second) for p in identical_files(["a", None, "a", "b"], None)] == [(0, 2)]
    assert [(p.first, p.second) for p in identical_files(["a", "b"], ["b", None])] == [(1, 0)]
    kept = merge(pairs + identical_files([None] * 3 + ["x"] + [None] * 6 + ["x"], None))
    assert len(kept) == 1 and kept[0].how == "identical file"
    assert find_duplicates(X[:0], None, threshold=0.9, pixel_threshold=0.9) == []


def test_a_slight_crop_of_a_texture_is_found_by_the_coarse_thumbnail(tmp_path):
    from imprint.analysis.inspection.duplicates import COARSE, find_duplicates
    from imprint.data.builtin import folder_of
    from imprint.data.folder import scan_folder

    textures = scan_folder(folder_of("textile")).paths[:40]  # real simulated textile images, noise-like
    image = Image.open(textures[7])
    w, h = image.size
    crop = tmp_path / "crop.png"
    image.crop((int(w * 0.03), int(h * 0.03), int(w * 0.97), int(h * 0.97))).save(crop)
    paths = [*textures, crop]
    unrelated = np.eye(len(paths), dtype=np.float32)  # embeddings that find nothing: the pixels must
    pairs = find_duplicates(unrelated, paths, threshold=0.92, pixel_threshold=0.98)
    assert [(p.first, p.second, p.how) for p in pairs] == [(7, len(textures), COARSE.how)]


def test_picks_cover_the_clusters_and_respect_the_budget():
    from imprint.analysis.inspection.selection import pick_to_label

    X, y = mixture_embeddings(n_classes=4, per_class=60, dim=16, modes=2)
    proba = np.full((len(y), 4), 0.25)
    picks = pick_to_label(proba, X, 8, seed=0)
    assert len(picks.rows) == len(set(picks.rows.tolist())) == 8
    assert len(set(y[picks.rows].tolist())) == 4  # every class reached by 8 picks over 8 well-separated modes
    assert np.all(np.diff(picks.cluster_size) <= 0)  # biggest clusters first
    assert len(pick_to_label(proba[:5], X[:5], 50).rows) == 5  # never more than there is


def test_inspect_finds_the_planted_problems_and_changes_nothing_of_the_user(planted, report):
    out, after, before = report
    assert after == before  # nothing in the user's folders created, changed or touched
    rows = (out / "issues.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["path", "kind", "score", "given_label", "suggested_label", "other_path",
                                      "detail"]
    data = json.loads((out / "issues.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    findings = data["findings"]
    support = planted["support"]
    labels = [f for f in findings if f["kind"] == "label"]
    assert labels[0]["path"] == str(support / "bag" / "mislabelled_sneaker.png")  # the most certain finding
    assert labels[0]["given_label"] == "bag" and labels[0]["suggested_label"] == "sneaker"
    outliers = [f for f in findings if f["kind"] == "outlier"]
    assert outliers[0]["path"] == str(support / "dress" / "blank.png")
    pairs = {(f["path"], f["other_path"]) for f in findings if f["kind"] == "duplicate"}
    assert (str(support / "sneaker" / planted["sneaker"].name), str(support / "bag" / "mislabelled_sneaker.png")) \
        in pairs or (str(support / "bag" / "mislabelled_sneaker.png"),
                     str(support / "sneaker" / planted["sneaker"].name)) in pairs
    assert any({a, b} == {str(support / "dress" / planted["dress"].name), str(support / "dress" / "bigger_copy.png")}
               for a, b in pairs)
    assert (str(support / "trouser" / planted["leak"].name), str(planted["test"] / "trouser" / "recompressed.jpg")) \
        in pairs
    alike = [f for f in findings if f["kind"] == "similar"]  # look-alikes are kept apart from copies
    assert alike and all("not a copy" in f["detail"] for f in alike)
    assert all("a copy" in f["detail"] or "identical" in f["detail"] for f in findings if f["kind"] == "duplicate")
    assert len(data["to_label"]) == 6 and len({p["path"] for p in data["to_label"]}) == 6
    assert all(p["path"].startswith(str(planted["pool"])) for p in data["to_label"])
    health = {c["name"]: c for c in data["classes"]}
    assert set(health) == {"bag", "sneaker", "trouser", "dress"} and health["bag"]["count"] == 21
    relabelled = dict(line.rsplit(",", 1) for line in (out / "relabelled.csv").read_text().splitlines()[1:])
    assert relabelled[str(support / "bag" / "mislabelled_sneaker.png")] == "sneaker"
    assert len(relabelled) == sum(1 for _ in support.rglob("*.png"))
    assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "index.html", "issues.csv", "issues.json",
                                                      "relabelled.csv", "to_label.csv"]


def test_the_report_page_shows_every_section_with_thumbnails(report, tmp_path):
    from selenium.webdriver.common.by import By

    out = report[0]
    browser = headless_browser()
    try:
        browser.get((out / "index.html").resolve().as_uri())
        assert browser.find_element(By.TAG_NAME, "h1").text == "imprint inspect"
        headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
        assert [h.split(" (")[0] for h in headings] == ["Likely wrong labels", "Duplicates and leaks",
                                                         "Very similar, not copies", "Outliers", "Class health",
                                                         "Label next"]
        label_table = browser.find_element(By.CSS_SELECTOR, "h2#label + table")
        assert "why" in label_table.text and " = " in label_table.text  # p(given) = ..., p(suggested) = ...
        copies = browser.find_element(By.CSS_SELECTOR, "h2#duplicate + table").text
        assert "identical files" in copies and "grey levels at best alignment: a copy" in copies
        images = browser.find_elements(By.TAG_NAME, "img")
        assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
        browser.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        browser.quit()


def test_inspect_refuses_bad_requests_in_one_line_before_any_work(planted, tmp_path, capsys):
    support = planted["support"]
    cases = [
        (["-o", support / "report"], "inside"),
        (["-o", tmp_path / "r", "--budget", "5"], "--unlabelled"),
        (["-o", tmp_path / "r", "--unlabelled", planted["pool"], "--budget", "0"], "--budget"),
        (["-o", tmp_path / "r", "--folds", "1"], "--folds"),
        (["-o", tmp_path / "r", "--outlier-rate", "2"], "--outlier-rate"),
        (["-o", tmp_path / "r", "--test-dir", tmp_path / "missing"], "missing"),
        (["-o", tmp_path / "r", "--preset", "nonsense"], "nonsense"),
    ]
    for extra, words in cases:
        code, _, err = run(capsys, "inspect", support, *extra)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (extra, err)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "inspect", support, "-o", tmp_path / "taken")
    assert code == 2 and "--force" in err and (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert not (support / "report").exists() and not (tmp_path / "r").exists()


def test_inspect_reads_an_embeddings_file_and_names_rows_by_their_paths(real_embeddings, tmp_path):
    import imprint
    from imprint.io.embeddings_file import write_embeddings_file

    X, y, _, _ = real_embeddings("fashion_mnist")
    rows = np.concatenate([np.flatnonzero(y == c)[:30] for c in range(5)])
    labels = np.array([f"class{c}" for c in y[rows]])
    labels[0] = "class4"  # one wrong label, far from its given class
    write_embeddings_file(tmp_path / "emb.npz", X[rows], labels, [f"img/{i}.png" for i in range(len(rows))],
                          "timm:tf_efficientnet_lite0")
    found = imprint.inspect_data(tmp_path / "emb.npz", tmp_path / "report", progress=False)
    flagged = [f.path for f in found.findings if f.kind == "label"]
    assert "img/0.png" in flagged[:5]
    assert all(f.path.startswith("img/") for f in found.findings)
    assert "<img" not in (tmp_path / "report" / "index.html").read_text()  # no files to show: no thumbnails


def test_a_grid_warns_when_its_test_images_copy_pool_images():
    from imprint.grid.data import EmbeddedDataset
    from imprint.grid.runner import _warn_of_leaks

    X, y = mixture_embeddings(n_classes=3, per_class=40, dim=16)
    is_test = np.arange(len(y)) % 4 == 0
    clean = EmbeddedDataset(X, y, is_test, ["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_of_leaks(clean, "mixture")
    leaked = X.copy()
    leaked[0] = leaked[1] * 1.01  # test row 0 is pool row 1, barely changed
    with pytest.warns(UserWarning, match="mixture: 1 test image"):
        _warn_of_leaks(EmbeddedDataset(leaked, y, is_test, ["a", "b", "c"]), "mixture")


def test_a_rerun_into_the_same_report_leaves_no_file_of_the_earlier_run(planted, report, tmp_path):
    from imprint.cli import main

    again = tmp_path / "report"
    shutil.copytree(report[0], again)
    assert (again / "relabelled.csv").exists() and (again / "to_label.csv").exists()
    assert main(["inspect", str(planted["support"]), "-o", str(again), "--quiet"]) == 0  # no --fix, no --unlabelled
    assert sorted(p.name for p in again.iterdir()) == ["classes.csv", "index.html", "issues.csv", "issues.json"]


def test_inspect_writes_a_report_for_file_and_folder_names_that_are_not_utf8(tmp_path):
    import os

    from imprint.cli import main

    support = copy_examples(tmp_path / "support", ("bag", "sneaker"), per_class=8)
    odd = os.fsdecode(b"caf\xe9")  # a latin-1 name on a UTF-8 file system
    os.rename(support / "sneaker", support / odd)
    first = sorted((support / "bag").iterdir())[0]
    os.rename(first, first.with_name(os.fsdecode(b"t\xe9st.png")))
    assert main(["inspect", str(support), "-o", str(tmp_path / "report"), "--quiet", "--folds", "2"]) == 0
    rows = (tmp_path / "report" / "issues.csv").read_bytes()
    assert (tmp_path / "report" / "index.html").stat().st_size > 0
    health = (tmp_path / "report" / "classes.csv").read_bytes()
    assert b"caf\xe9" in health and rows.startswith(b"path,kind")


def test_look_alike_digits_are_very_similar_not_duplicates(tmp_path):
    """300 real digits: the review found 28 'duplicates', none a copy (26 same-label look-alikes, one a 1 and a 9).
    Copies planted among them are still found as copies."""
    from imprint.data.builtin import load_dataset

    data = load_dataset("mnist5k")
    rows = np.random.default_rng(0).choice(len(data.labels), 300, replace=False)
    for i, row in enumerate(rows):
        folder = tmp_path / "digits" / str(data.labels[row])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[row]).save(folder / f"{i:03d}.png")
    first = sorted((tmp_path / "digits" / "3").glob("*.png"))[0]
    Image.open(first).resize((56, 56)).save(first.with_name("bigger_copy.png"))
    import imprint

    found = imprint.inspect_data(tmp_path / "digits", tmp_path / "report", progress=False)
    copies = [f for f in found.findings if f.kind == "duplicate"]
    assert [(Path(f.path).name, Path(f.other_path).name) for f in copies] in (
        [(first.name, "bigger_copy.png")], [("bigger_copy.png", first.name)])
    assert found.counts["similar"] >= 10  # the look-alikes, told apart from copies
