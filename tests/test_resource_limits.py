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


def test_bytes_labels_in_an_embeddings_file_are_class_names(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    np.savez(tmp_path / "bytes.npz", embeddings=X, labels=np.array([b"cat", b"dog", b"caf\xe9"] * 4))
    code, out, err = run(capsys, "fit", tmp_path / "bytes.npz", "-o", tmp_path / "clf.safetensors", "--preset", "qi")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "clf.safetensors", "--json")
    import json

    assert sorted(json.loads(out)["classes"]) == sorted(["cat", "dog", "caf\udce9"])


def test_a_store_too_large_for_the_address_space_left_is_memory_not_damage(tmp_path):
    """A store is memory-mapped: under an address-space limit (ulimit -v) mapping it fails with ENOMEM, which is
    the limit's doing, not damage (it said "damaged embeddings store" under ulimit -v 6 GiB)."""
    from imprint.io.store import EmbeddingStore

    n, dim = 100_000, 512  # 200 MB, allocated but never written: creating it takes a moment
    EmbeddingStore.create(tmp_path / "store", encoder_id="test:enc", encoder_key="k", runtime="torch", dim=dim,
                          paths=[f"{i}.png" for i in range(n)], labels=np.zeros(n, dtype=np.int64),
                          class_names=["a"])
    script = ("import resource, sys\nfrom imprint.io.store import EmbeddingStore\n"
              "used = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
              "resource.setrlimit(resource.RLIMIT_AS, (used + 100 * 2**20, resource.RLIM_INFINITY))\n"
              f"try:\n    EmbeddingStore.open({str(tmp_path / 'store')!r})\n"
              "except MemoryError as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("NotEnoughMemory not enough memory to map the store"), done.stdout + done.stderr
    assert "ulimit -v" in done.stdout and "damaged" not in done.stdout


def test_libraries_that_cannot_load_for_want_of_memory_are_one_line(tmp_path):
    import resource

    def limited() -> None:  # 1.5 GiB of address space: the interpreter starts, torch cannot be mapped
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "imprint.cli", "predict", str(tmp_path / "missing.safetensors"),
                           str(EXAMPLES / "bag")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "classifier file not found" in done.stderr  # the arguments come first
    clf = tmp_path / "clf.safetensors"
    assert main(["fit", str(EXAMPLES), "-o", str(clf), "--preset", "qi", "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-m", "imprint.cli", "predict", str(clf), str(EXAMPLES / "bag")],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("imprint: error: out of memory") and done.stderr.count("\n") == 1, done.stderr
    assert "ulimit -v" in done.stderr


@pytest.mark.parametrize("mode", ["I;16", "RGB", "RGBA"])
def test_decoding_holds_no_more_than_decode_bytes_says(tmp_path, mode):
    """A 16-bit image took 28 bytes a pixel to decode (a 9400 x 9400 PNG of 172 KB: 2.1 GB); now every step
    holds only what it needs, and ``decode_bytes`` (what a server reserves before decoding) bounds it."""
    side = 2000
    ramp = np.add.outer(np.arange(side), np.arange(side))
    if mode == "I;16":
        image = Image.fromarray((ramp * 16).astype(np.uint16))
    else:
        image = Image.fromarray(np.stack([ramp % 256] * len(mode), axis=-1).astype(np.uint8), mode=mode)
    image.save(tmp_path / "big.png")
    script = ("import io, sys\nfrom PIL import Image\nfrom imprint.data.folder import decode_bytes, load_rgb\n"
              f"data = open({str(tmp_path / 'big.png')!r}, 'rb').read()\n"
              "need = decode_bytes(Image.open(io.BytesIO(data)))\n"
              "def peak():\n    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"
              ".split()[1]) * 1024\n"
              "before = peak()\nload_rgb(io.BytesIO(data))\nprint(peak() - before, need)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    held, need = map(int, done.stdout.split())
    assert held <= need, (held, need)
    assert need <= 20 * side * side  # bytes a pixel at most, alpha and its conversions included
