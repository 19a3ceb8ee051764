"""No input exhausts the machine: thin images, YAML alias bombs, zip bombs and lying array headers are refused
in one line, quickly and in bounded memory, before the work that would have taken the memory starts."""
from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import EXAMPLES, run
from PIL import Image

from imprint.cli import main


def test_a_thin_image_is_refused_in_bounded_memory(tmp_path):
    Image.new("L", (60000, 1)).save(tmp_path / "thin.png")  # a few hundred bytes
    assert (tmp_path / "thin.png").stat().st_size < 1000
    Image.new("L", (1, 60000)).save(tmp_path / "tall.png")
    clf = tmp_path / "clf.safetensors"
    cache = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["fit", str(EXAMPLES), "-o", str(clf), "--preset", "qi", *cache]) == 0
    # VmHWM is this process's own peak; ru_maxrss would inherit the pytest parent's across fork and exec
    script = ("import sys\nfrom imprint.cli import main\n"
              f"code = main(['predict', {str(clf)!r}, {str(tmp_path / 'thin.png')!r}, {str(tmp_path / 'tall.png')!r},"
              f" *{cache!r}])\n"
              "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
              "print(int(peak) // 1024, file=sys.stderr)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    peak_mib = int(lines[-1])
    assert done.returncode == 2 and "none of the 2 image(s) could be read" in done.stderr
    assert "aspect ratio above 100:1" in done.stderr and "crop it" in done.stderr
    assert peak_mib < 2500, f"peak memory {peak_mib} MiB"  # the model and torch; 16 GB before the fix


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path, capsys):
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nname: *a9\ndatasets: [fashion_mnist]\n")
    assert bomb.stat().st_size < 700
    started = time.perf_counter()
    code, _, err = run(capsys, "grid", bomb, "--out", tmp_path / "out")
    assert code == 2 and time.perf_counter() - started < 5
    assert "aliases" in err and "write the values out" in err and len(err) < 400 and err.count("\n") == 1
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("name: &x [*x]\ndatasets: [fashion_mnist]\n")
    code, _, err = run(capsys, "grid", recursive, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1


def test_a_long_value_is_quoted_short_in_an_error(tmp_path, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("name: [" + ", ".join(["x" * 50] * 5000) + "]\ndatasets: [fashion_mnist]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and len(err) < 400 and err.count("\n") == 1


def test_a_key_given_twice_in_yaml_is_refused(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("datasets: [fashion_mnist]\nshots: [1]\nshots: [5]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and "'shots' is given twice" in err and "line 2" in err


def _npz_with(member: str, header_shape: tuple, payload: bytes, *, compress: bool) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        with archive.open(member, "w", force_zip64=True) as handle:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": header_shape})
            handle.write(header.getvalue())
            for start in range(0, len(payload), 1 << 24):
                handle.write(payload[start:start + (1 << 24)])
        archive.writestr("labels.npy", _npy(np.array(["a", "b"])))
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_zip_bomb_npz_is_refused_before_it_is_inflated(tmp_path, capsys):
    zeros = bytes(300 * 2**20)  # 300 MiB of zeros deflate to about 300 KB
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(_npz_with("embeddings.npy", (len(zeros) // 2048, 512), zeros, compress=True))
    assert bomb.stat().st_size < 2 * 2**20
    code, _, err = run(capsys, "fit", bomb, "-o", tmp_path / "clf.safetensors")
    assert code == 2 and "zip bomb" in err and err.count("\n") == 1
    liar = tmp_path / "liar.npz"  # an array header that declares 2 GB over 4 KB of data
    liar.write_bytes(_npz_with("embeddings.npy", (1_000_000, 512), bytes(4096), compress=False))
    code, _, err = run(capsys, "fit", liar, "-o", tmp_path / "clf.safetensors")
    assert code == 2 and "declares" in err and err.count("\n") == 1


@pytest.mark.parametrize("embeddings, labels, message", [
    (np.array([["a", "b"], ["c", "d"]]), np.array(["x", "y"]), "must be a non-empty 2-D array of numbers"),
    (np.ones((2, 4), np.float32), np.array([["x"], ["y"]]), "one label"),
    (np.ones((2, 4), np.float32), np.array(["x"]), "one label"),
])
def test_embeddings_files_of_the_wrong_shapes_or_types_are_one_line(tmp_path, capsys, embeddings, labels, message):
    path = tmp_path / "odd.npz"
    np.savez(path, embeddings=embeddings, labels=labels)
    code, _, err = run(capsys, "fit", path, "-o", tmp_path / "clf.safetensors")
    assert code == 2 and message in err and err.count("\n") == 1
