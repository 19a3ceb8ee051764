"""Tests of ``imprint.io.npz``: ``.npz`` files read safely: every member's declared size is checked before anything
is decompressed."""
from __future__ import annotations

import io
import zipfile

import numpy as np
from conftest import run


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
