"""Tests of ``imprint.serve.uploads``: images sent to the service: multipart form parts named ``images`` or JSON
``{"images": ["<base64>", ...]}``, read within the service's limits and decoded as ``imprint predict`` decodes
files, each decode within the server's memory budget."""
from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import BAGS, images, served

from imprint.serve.admission import Limits  # noqa: E402

pytest.importorskip("fastapi")


def png_16bit(side: int) -> bytes:
    """A 16-bit grey gradient: a few kilobytes on the wire, 2 bytes a pixel decoded (a bomb of bit depth)."""
    from PIL import Image

    values = (np.add.outer(np.arange(side), np.arange(side)) * (65535 // (2 * side))).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_image_that_decodes_larger_than_an_image_may_is_refused_by_its_header(tmp_path, encoder, fashion):
    limits = Limits(max_body_bytes=8 * 2**20, memory_bytes=64 * 2**20)  # an image may take 32 MB decoded
    client, _ = served(tmp_path, encoder, fashion, limits=limits)
    deep = png_16bit(2400)  # 5.8 million pixels in a few kilobytes: 44 MB to decode, at 16 bits and converted
    with client:
        refused = client.post("/predict", files=[("images", ("deep.png", deep, "image/png"))])
        assert refused.status_code == 413 and "decoded" in refused.json()["error"], refused.text
        assert client.post("/predict", files=images(BAGS[:1])).status_code == 200
