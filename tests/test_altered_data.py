"""Nothing altered is ever trusted: an embeddings store or a classifier file changed on disk (class names
swapped, rows moved or re-marked, checksums deleted, an old format claimed, fields deleted or retyped) gives
either the answers it gave before or one line naming the damage, never a traceback or a changed answer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imprint import ClassifierFileError, ImprintClassifier
from imprint.cli import main
from imprint.io.classifier_file import file_digest
from imprint.io.store import EmbeddingStore, StoreError

FIXTURES = Path(__file__).parent / "fixtures"


def _filled_store(path: Path) -> EmbeddingStore:
    rng = np.random.default_rng(0)
    store = EmbeddingStore.create(path, encoder_id="test:enc", encoder_key="k", dim=8,
                                  paths=[f"/img/{i}.png" for i in range(30)], labels=np.arange(30) % 3,
                                  class_names=["bag", "boot", "coat"])
    centres = rng.normal(size=(3, 8)) * 4
    store.write(np.arange(29), (centres[np.arange(29) % 3] + rng.normal(size=(29, 8))).astype(np.float32))
    store.mark_unreadable(np.array([29]))
    return store


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def _refused(path: Path, match: str) -> None:
    with pytest.raises(StoreError, match=match) as info:
        EmbeddingStore.open(path).labelled()
    assert "\n" not in str(info.value)


def test_swapped_class_names_in_a_store_are_refused(tmp_path):
    _filled_store(tmp_path / "s")
    meta = _meta(tmp_path / "s")
    meta["class_names"] = ["boot", "bag", "coat"]
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path / "s", "class names, encoder, image list or labels were altered")


@pytest.mark.parametrize("row, state", [(4, -1), (4, 0), (29, 1), (4, 2), (4, -7)])
def test_a_store_row_marked_by_hand_is_refused_or_recomputed_never_dropped(tmp_path, row, state):
    _filled_store(tmp_path / "s")
    states = np.load(tmp_path / "s" / "state.npy", mmap_mode="r+")
    states[row] = state
    states.flush()
    del states
    if state in (2, -7):
        _refused(tmp_path / "s", "row states other than")
    elif state == 0:
        _refused(tmp_path / "s", "unfinished")  # pending: the next embed computes it again
    else:
        _refused(tmp_path / "s", "row\\(s\\) altered on disk")


def test_rows_moved_with_their_checksums_are_refused(tmp_path):
    _filled_store(tmp_path / "s")
    for name in ("embeddings", "digests"):
        array = np.load(tmp_path / "s" / f"{name}.npy", mmap_mode="r+")
        array[[0, 1]] = array[[1, 0]]
        array.flush()
        del array
    _refused(tmp_path / "s", "altered on disk")


def test_a_store_without_its_checksums_is_not_read_as_an_old_one(tmp_path):
    _filled_store(tmp_path / "s")
    (tmp_path / "s" / "digests.npy").unlink()
    _refused(tmp_path / "s", "digests.npy is missing")
    meta = _meta(tmp_path / "s")
    meta["format_version"] = 1
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    _refused(tmp_path / "s", "says format 1 but has the files of a newer one")


@pytest.mark.parametrize("change", [
    lambda m: m.pop("count"), lambda m: m.pop("class_names"), lambda m: m.update(class_names=["bag", "boot"]),
    lambda m: m.update(class_names="bag"), lambda m: m.update(count="30"), lambda m: m.update(dim=-1),
    lambda m: m.update(encoder=7), lambda m: m.update(format_version="3"), lambda m: m.update(format_version=9),
])
def test_store_metadata_missing_or_of_the_wrong_type_is_one_line(tmp_path, change):
    _filled_store(tmp_path / "s")
    meta = _meta(tmp_path / "s")
    change(meta)
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError) as info:
        EmbeddingStore.open(tmp_path / "s").labelled()
    assert "\n" not in str(info.value)


def _rewrite(source: Path, target: Path, change, sign: bool) -> Path:
    """A copy of a classifier file with its metadata changed (and its checksum recomputed over the change if
    `sign`: a file that looks consistent)."""
    from safetensors.numpy import load_file

    data = source.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = json.loads(header["__metadata__"]["imprint"])
    change(meta)
    if sign and meta.get("format_version") == 3:
        meta["digest"] = file_digest(meta, load_file(source))
    blob = json.dumps(dict(header, __metadata__={"imprint": json.dumps(meta)})).encode()
    blob += b" " * (-len(blob) % 8)
    target.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + size:])
    return target


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mixture):
    X, y = mixture
    labels = np.array([f"c{c}" for c in y])
    folder = tmp_path_factory.mktemp("classifiers")
    clf = ImprintClassifier(generation="mean", metric="mahalanobis", norm_post="none", reject="max_score").fit(
        X, labels, encoder_id="timm:tf_efficientnet_lite0")
    clf.save(folder / "clf.safetensors")
    return folder / "clf.safetensors", X, clf.predict(X)


def test_an_unsigned_change_to_a_classifier_s_metadata_is_refused(saved, tmp_path):
    path, _, _ = saved
    for change in (lambda m: m.update(classes=m["classes"][::-1]), lambda m: m.update(threshold=1e9),
                   lambda m: m["settings"].update(reject=None)):
        edited = _rewrite(path, tmp_path / "e.safetensors", change, sign=False)
        with pytest.raises(ClassifierFileError, match="altered or damaged"):
            ImprintClassifier.load(edited)


def test_a_classifier_claiming_an_old_format_is_refused(saved, tmp_path):
    path, _, _ = saved
    for version in (1, 2):
        edited = _rewrite(path, tmp_path / "old.safetensors", lambda m: m.update(format_version=version), sign=False)
        with pytest.raises(ClassifierFileError, match="altered|layout"):
            ImprintClassifier.load(edited)


def _mutations(meta: dict, rng: np.random.Generator) -> list:
    """Random deletions and type changes of the header's fields, at every depth (a new value of the same type is
    an edit no checksum-free old format could notice, and in the current format the checksum refuses it)."""
    paths = []

    def walk(value, trail):
        paths.append(trail)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, trail + [key])
        elif isinstance(value, list):
            for i, item in enumerate(value[:3]):
                walk(item, trail + [i])

    walk(meta, [])
    replacements = [None, 7, -1, 2.5, "x", "", [], {}, [1, 2], {"a": 1}, True, float("inf")]
    chosen = []
    for trail in [paths[i] for i in rng.choice(len(paths), min(40, len(paths)), replace=False)]:
        if not trail:
            continue
        value = meta
        for key in trail:
            value = value[key]
        chosen.append((trail, "delete"))
        other_types = [r for r in replacements if type(r) is not type(value)]  # a type change, not a new value
        chosen.append((trail, other_types[int(rng.integers(len(other_types)))]))
    return chosen


def _apply(meta: dict, trail: list, action) -> None:
    target = meta
    for key in trail[:-1]:
        target = target[key]
    if action == "delete":
        if isinstance(target, dict):
            target.pop(trail[-1], None)
        else:
            target.pop(trail[-1])
    else:
        target[trail[-1]] = action


@pytest.mark.parametrize("name", ["clf", "v2_gda_reject", "v2_ranpac", "v2_text_blend", "v1_kmeans"])
def test_fuzzed_classifier_files_load_to_the_same_answers_or_fail_in_one_line(saved, tmp_path, capsys, name):
    """Random field deletions, type changes and truncations, signed so the checksum does not stop them first:
    every case loads to the original answers or is refused in one line, through the API and `imprint info`."""
    path, X, _ = saved
    if name != "clf":
        path = FIXTURES / f"{name}.safetensors"
        X = np.load(FIXTURES / "queries.npy")
    original = ImprintClassifier.load(path)
    expected, predicted = original.decision_function(X), original.predict(X)
    data = path.read_bytes()
    meta = json.loads(json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]["imprint"])
    rng = np.random.default_rng(sum(map(ord, name)))
    outcomes = {"same": 0, "refused": 0}
    for i, (trail, action) in enumerate(_mutations(meta, rng)):
        target = _rewrite(path, tmp_path / f"m{i}.safetensors", lambda m: _apply(m, trail, action), sign=True)
        try:
            loaded = ImprintClassifier.load(target)
            scores, labels = loaded.decision_function(X), loaded.predict(X)
        except (ClassifierFileError, ValueError) as error:
            assert "\n" not in str(error) and len(str(error)) < 500, (trail, action, error)
            outcomes["refused"] += 1
        else:
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5, err_msg=f"{trail} {action}")
            assert loaded.classes_.tolist() == original.classes_.tolist()
            assert labels.tolist() == predicted.tolist(), (trail, action)
            outcomes["same"] += 1
        code = main(["info", str(target)])
        assert code in (0, 2)
        err = capsys.readouterr().err
        assert code == 0 or err.count("\n") == 1, (trail, action, err)
    for cut in (9, 100, len(data) // 3, len(data) - 5):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(ClassifierFileError):
            ImprintClassifier.load(tmp_path / "cut.safetensors")
    assert outcomes["refused"] > 0


def test_fuzzed_store_metadata_is_refused_in_one_line_or_read_the_same(tmp_path):
    _filled_store(tmp_path / "good")
    X, y = EmbeddingStore.open(tmp_path / "good").labelled()
    meta = _meta(tmp_path / "good")
    rng = np.random.default_rng(3)
    for i, (trail, action) in enumerate(_mutations(meta, rng)):
        copy = tmp_path / f"s{i}"
        shutil.copytree(tmp_path / "good", copy)
        edited = json.loads(json.dumps(meta))
        _apply(edited, trail, action)
        (copy / "meta.json").write_text(json.dumps(edited))
        try:
            X2, y2 = EmbeddingStore.open(copy).labelled()
        except StoreError as error:
            assert "\n" not in str(error)
        else:
            assert np.array_equal(np.asarray(X2), np.asarray(X)) and y2.tolist() == y.tolist(), (trail, action)
        shutil.rmtree(copy)


def test_a_grid_cell_file_that_is_not_a_cell_is_run_again_not_reported(tmp_path, capsys):
    root = Path(__file__).resolve().parent.parent
    config = tmp_path / "grid.yaml"
    config.write_text(f"datasets: [{{folder: {root / 'examples' / 'fashion'}, support_per_class: 5, "
                      "val_per_class: 0, test_per_class: 3}]\ngeneration: mean\nseeds: [0]\n")
    assert main(["grid", str(config), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    cell = next((tmp_path / "out" / "cells").glob("*.json"))
    good = json.loads(cell.read_text())
    cell.write_text("[1, 2, 3]")
    assert main(["report", str(tmp_path / "out")]) == 2  # no finished cell left to report
    assert "damaged" in capsys.readouterr().err
    assert main(["grid", str(config), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "0 already done, 1 to run" in out
    assert json.loads(cell.read_text())["accuracy"] == good["accuracy"]


def test_a_grid_rerun_after_the_folder_changed_computes_again(tmp_path, capsys):
    root = Path(__file__).resolve().parent.parent
    images = tmp_path / "images"
    shutil.copytree(root / "examples" / "fashion", images)
    config = tmp_path / "grid.yaml"
    config.write_text(f"datasets: [{{folder: {images}, support_per_class: 5, val_per_class: 0, "
                      "test_per_class: 3}]\ngeneration: mean\n")
    assert main(["grid", str(config), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    assert "0 already done, 1 to run" in capsys.readouterr().out
    assert main(["grid", str(config), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    assert "1 already done, 0 to run" in capsys.readouterr().out
    victim = sorted((images / "bag").iterdir())[0]
    shutil.copy(sorted((images / "coat").iterdir())[0], victim)  # an image replaced by another
    assert main(["grid", str(config), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"]) == 0
    assert "0 already done, 1 to run" in capsys.readouterr().out


def test_two_grid_variants_of_one_name_are_refused(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("datasets: [fashion_mnist]\nvariants:\n  - {preset: gda}\n  - {preset: gda, shrinkage: 0.5}\n")
    assert main(["grid", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "two variants are named 'gda'" in capsys.readouterr().err
