"""Tests of ``imprint.io.classifier_file``: classifier files: safetensors arrays + JSON metadata in one file, no
pickle, checked when read."""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    FIXTURES,
    apply_mutation,
    error_lines,
    header_mutations,
    one_line_error,
    run,
    unprivileged,
)

from imprint import ClassifierFileError, ImprintClassifier
from imprint.cli import main
from imprint.io.classifier_file import file_digest

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _save_with_file_size_limit(path: Path, limit: int) -> subprocess.CompletedProcess:
    """Save a classifier in a child process whose files may not grow beyond `limit` bytes (a full disk)."""
    code = (f"import numpy as np\nfrom imprint.cli import main\nimport sys\n"
            f"sys.exit(main(['fit', {str(EXAMPLES)!r}, '-o', {str(path)!r}, '--quiet', '--shots', '10', "
            f"'--generation', 'all', '--cache-dir', {str(path.parent / 'cache')!r}]))")

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit_files)


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


def test_classifier_files_from_elsewhere_are_refused_in_one_line(tmp_path, capsys, mixture):
    X, y = mixture
    path = tmp_path / "c.safetensors"
    ImprintClassifier(generation="mean").fit(X, y, encoder_id="timm:tf_efficientnet_lite0").save(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one byte of the proxies flipped on disk
    altered = tmp_path / "altered.safetensors"
    altered.write_bytes(bytes(data))
    with pytest.raises(ClassifierFileError, match="altered or damaged since it was written"):
        ImprintClassifier.load(altered)
    code = main(["predict", str(path), str(EXAMPLES / "bag"), "--encoder", "lite1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1
    assert "was fitted with timm:tf_efficientnet_lite0, not lite1; name no encoder (encoder= in Python" in err


def test_a_full_disk_while_saving_keeps_the_previous_classifier_and_says_so(tmp_path: Path, capsys):
    path = tmp_path / "clf.safetensors"
    assert main(["fit", str(EXAMPLES), "-o", str(path), "--quiet", "--shots", "2", "--generation", "mean"]) == 0
    before = path.read_bytes()
    done = _save_with_file_size_limit(path, 200_000)  # the new file (100 proxies x 1280) needs ~520 kB
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("imprint: error: ")]
    assert len(lines) == 1 and f"cannot write {path}: File too large; any earlier version of it is unchanged" \
        in lines[0]
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before and ImprintClassifier.load(path).proxies_.shape[0] == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["clf.safetensors"]  # no debris


def test_a_read_only_folder_keeps_the_previous_classifier_and_says_so(tmp_path: Path, mixture):
    X, y = mixture
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "clf.safetensors"
    ImprintClassifier(generation="mean").fit(X, y).save(path)
    before = path.read_bytes()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    script = ("import numpy as np, sys\nfrom imprint import ImprintClassifier\n"
              f"X, y = np.load({str(tmp_path / 'X.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})\n"
              "try:\n"
              f"    ImprintClassifier(generation='kmeans', k=2).fit(X, y).save({str(path)!r})\n"
              "except OSError as error:\n    print(error)\n")
    folder.chmod(0o555)
    try:
        done = subprocess.run(unprivileged([sys.executable, "-c", script]), capture_output=True, text=True,
                              timeout=300)
    finally:
        folder.chmod(0o755)
    assert f"cannot write {path}: Permission denied; any earlier version of it is unchanged" in done.stdout, \
        done.stdout + done.stderr
    assert path.read_bytes() == before


def test_a_plugin_hint_from_a_file_never_repeats_shell_text(tmp_path, capsys, mixture):
    import json

    from safetensors.numpy import load_file

    from imprint.io.classifier_file import file_digest

    X, y = mixture
    path = tmp_path / "clf.safetensors"
    ImprintClassifier(generation="mean").fit(X, y).save(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = json.loads(header["__metadata__"]["imprint"])
    meta["settings"]["generation"] = "evil"
    meta["plugins"] = {"generation": "x; rm -rf ~"}
    meta["digest"] = file_digest(meta, load_file(path))
    blob = json.dumps(dict(header, __metadata__={"imprint": json.dumps(meta)})).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + size:])
    code, _, err = run(capsys, "info", path)
    with pytest.raises(ValueError) as info:
        ImprintClassifier.load(path)
    assert "rm -rf" not in str(info.value) and "not a valid module name" in str(info.value)


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
    for i, (trail, action) in enumerate(header_mutations(meta, rng)):
        target = _rewrite(path, tmp_path / f"m{i}.safetensors", lambda m: apply_mutation(m, trail, action), sign=True)
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


@pytest.mark.parametrize("array", ["proxies", "metric.0.stats"])
def test_a_resigned_file_with_a_nan_in_its_arrays_is_refused_on_load(tmp_path, mixture, array):
    """Its checksum matches (recomputed over the change), but a NaN would make every answer NaN."""
    from safetensors.numpy import load_file, save_file

    from imprint.io.classifier_file import file_digest, read_header

    X, y = mixture
    path = tmp_path / "clf.safetensors"
    ImprintClassifier.from_preset("gda").fit(X, y).save(path)
    meta = read_header(path)
    arrays = load_file(path)
    name = next(n for n in arrays if n.startswith(array))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[-1] = np.nan
    meta["digest"] = file_digest(meta, arrays)
    save_file(arrays, path, metadata={"imprint": json.dumps(meta)})
    one_line_error(lambda: ImprintClassifier.load(path), f"{name} must be finite numbers", ClassifierFileError)
