"""Nothing of the user's is ever lost: commands never delete or overwrite a file imprint did not write, never
write over their own inputs, and leave no debris behind when they are killed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_examples, run

from imprint.io.cache import EmbeddingCache

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def small_folder(tmp_path):
    return copy_examples(tmp_path / "images", per_class=6)


def test_cache_clear_removes_only_the_cache_s_own_entries(tmp_path, capsys, small_folder):
    cache_dir = tmp_path / "mine"  # a folder of the user's, named as the cache by mistake
    cache_dir.mkdir()
    (cache_dir / "thesis.tex").write_text("years of work")
    (cache_dir / "photos").mkdir()
    (cache_dir / "photos" / "a.emb").write_bytes(b"a file of another program with the cache's suffix")
    (cache_dir / "0123456789abcdef01234567").mkdir()  # a folder named like a namespace, holding a user file
    (cache_dir / "0123456789abcdef01234567" / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "embed", small_folder, "-o", tmp_path / "e.npz", "--cache-dir", cache_dir, "--quiet")
    assert code == 0, err
    assert EmbeddingCache(cache_dir).info()["entries"] == 18
    code, out, _ = run(capsys, "cache", "clear", "--cache-dir", cache_dir)
    assert code == 0 and "removed 18" in out
    assert (cache_dir / "thesis.tex").read_text() == "years of work"
    assert (cache_dir / "photos" / "a.emb").is_file()
    assert (cache_dir / "0123456789abcdef01234567" / "notes.txt").read_text() == "keep me"
    left = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*"))
    assert left == ["0123456789abcdef01234567", "0123456789abcdef01234567/notes.txt", "photos", "photos/a.emb",
                    "thesis.tex"]  # the cache's own folders are gone, nothing else


def test_an_output_that_is_an_input_or_a_foreign_file_is_refused_before_any_work(tmp_path, capsys, small_folder):
    cache = ["--cache-dir", tmp_path / "cache", "--quiet"]
    code, _, err = run(capsys, "fit", small_folder, "-o", tmp_path / "clf.safetensors", *cache)
    assert code == 0, err
    image = sorted((small_folder / "bag").iterdir())[0]
    original = image.read_bytes()
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", image, *cache)
    assert code == 2 and "one of this command's inputs" in err and err.count("\n") == 1
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", image, "--force", *cache)
    assert code == 2 and "one of this command's inputs" in err  # --force never replaces an input
    assert image.read_bytes() == original
    code, _, err = run(capsys, "fit", small_folder, "-o", tmp_path / "clf.safetensors", *cache, "--preset", "qi")
    assert code == 0, err  # a classifier imprint wrote may be replaced
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    for argv in (["predict", tmp_path / "clf.safetensors", image, "-o", notes],
                 ["fit", small_folder, "-o", notes],
                 ["eval", tmp_path / "clf.safetensors", small_folder, "--confusion", notes],
                 ["embed", small_folder, "-o", tmp_path / "mine.npz"]):
        if argv[0] == "embed":
            (tmp_path / "mine.npz").write_bytes(b"PK not ours")
        started = time.perf_counter()
        code, _, err = run(capsys, *argv, *cache)
        assert code == 2 and "is not a" in err and "--force" in err and err.count("\n") == 1, (argv, err)
        assert time.perf_counter() - started < 5  # refused before a model is built
    assert notes.read_text() == "my,own,table\n"
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", tmp_path / "p.csv", *cache)
    assert code == 0, err
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", tmp_path / "p.csv", *cache)
    assert code == 0, err  # its own predictions file: replaced without --force
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", image, "-o", notes, "--force", *cache)
    assert code == 0 and notes.read_text().startswith("path,label")


def test_a_grid_never_writes_into_a_folder_of_other_files(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    code, _, err = run(capsys, "grid", ROOT / "configs" / "example_folder.yaml", "--out", out)
    assert code == 2 and "not a grid results folder" in err
    assert (out / "config.json").read_text() == '{"mine": true}'
    code, _, err = run(capsys, "grid", ROOT / "configs" / "example_folder.yaml", "--out", out / "config.json")
    assert code == 2 and "is a file" in err and "free some space" not in err


def test_temporary_files_of_killed_saves_are_cleaned_by_the_next_save(tmp_path):
    script = (f"import time, numpy as np\n"
              f"from imprint.core.atomic import atomic_write_bytes\n"
              f"import imprint.core.atomic as a\n"
              f"import os\n"
              f"real = os.replace\n"
              f"def stuck(*args):\n"
              f"    time.sleep(60)\n"
              f"a.os.replace = stuck\n"
              f"atomic_write_bytes({str(tmp_path / 'clf.safetensors')!r}, b'x' * 1000000)\n")
    seen = set()
    for _ in range(3):  # three saves killed after their data was written, before the rename
        process = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.monotonic() + 60
        while not any(".imprint-" in p.name and p.name.split("-")[-2] == str(process.pid)
                      for p in tmp_path.glob(".clf.safetensors.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        leftovers = list(tmp_path.glob(".clf.safetensors.*.tmp"))
        assert len(leftovers) == 1  # each save removed the leftovers of the killed one before it
        seen.add(leftovers[0].name)
    assert len(seen) == 3
    (tmp_path / "other.txt.imprint-elsewhere-1-x.tmp").write_text("not a leftover of this file")
    from imprint.core.atomic import atomic_write_bytes

    atomic_write_bytes(tmp_path / "clf.safetensors", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.safetensors", "other.txt.imprint-elsewhere-1-x.tmp"]
    assert (tmp_path / "clf.safetensors").read_bytes() == b"whole"


def test_a_full_or_read_only_cache_warns_once_and_the_command_goes_on(tmp_path, capsys, small_folder):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")  # no folder can be made there, even by root
    code, out, err = run(capsys, "fit", small_folder, "-o", tmp_path / "clf.safetensors", "--cache-dir", blocked,
                         "--quiet")
    assert code == 0, err
    assert err.count("cannot be written") == 1 and "going on without caching" in err
    assert (tmp_path / "clf.safetensors").is_file() and "imprinted 3 classes" in out


def test_predictions_of_files_whose_names_are_not_utf8_are_written(tmp_path, capsys, small_folder):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    cache = ["--cache-dir", tmp_path / "cache", "--quiet"]
    assert run(capsys, "fit", small_folder, "-o", tmp_path / "clf.safetensors", *cache)[0] == 0
    odd = os.fsencode(tmp_path) + b"/caf\xe9.png"
    shutil.copy(sorted((small_folder / "bag").iterdir())[0], odd)
    code, _, err = run(capsys, "predict", tmp_path / "clf.safetensors", os.fsdecode(odd), "-o", tmp_path / "p.csv",
                       *cache)
    assert code == 0, err
    data = (tmp_path / "p.csv").read_bytes()
    assert b"caf\xe9.png" in data and data.count(b"\n") == 2
