"""Tests of ``imprint.io.outputs``: where a command writes: never over one of its own inputs, never over a file
imprint did not write."""
from __future__ import annotations

import time

from conftest import run


def test_an_output_that_is_an_input_or_a_foreign_file_is_refused_before_any_work(tmp_path, capsys, six_per_class,
                                                                                 cache_flags):
    code, _, err = run(capsys, "fit", six_per_class, "-o", tmp_path / "clf.safetensors", *cache_flags)
    assert code == 0, err
    image = sorted((six_per_class / "bag").iterdir())[0]
    original = image.read_bytes()
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", image, *cache_flags)
    assert code == 2 and "one of this command's inputs" in err and err.count("\n") == 1
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", image, "--force", *cache_flags)
    assert code == 2 and "one of this command's inputs" in err  # --force never replaces an input
    assert image.read_bytes() == original
    code, _, err = run(capsys, "fit", six_per_class, "-o", tmp_path / "clf.safetensors", *cache_flags, "--preset", "qi")
    assert code == 0, err  # a classifier imprint wrote may be replaced
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    for argv in (["predict", tmp_path / "clf.safetensors", image, "-o", notes],
                 ["fit", six_per_class, "-o", notes],
                 ["eval", tmp_path / "clf.safetensors", six_per_class, "--confusion", notes],
                 ["embed", six_per_class, "-o", tmp_path / "mine.npz"]):
        if argv[0] == "embed":
            (tmp_path / "mine.npz").write_bytes(b"PK not ours")
        started = time.perf_counter()
        code, _, err = run(capsys, *argv, *cache_flags)
        assert code == 2 and "is not a" in err and "--force" in err and err.count("\n") == 1, (argv, err)
        assert time.perf_counter() - started < 5  # refused before a model is built
    assert notes.read_text() == "my,own,table\n"
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", tmp_path / "p.csv", *cache_flags)
    assert code == 0, err
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", tmp_path / "p.csv", *cache_flags)
    assert code == 0, err  # its own predictions file: replaced without --force
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", notes, "--force", *cache_flags)
    assert code == 0 and notes.read_text().startswith("path,label")
