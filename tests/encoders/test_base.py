"""Tests of ``imprint.encoders.base``: the encoder interface: an id, a preprocessing transform, an embedding width
and batched encoding."""
from __future__ import annotations

import numpy as np


def test_encoders_tag_what_they_embed(tmp_path):
    from imprint.encoders import create_encoder

    encoder = create_encoder("timm:tf_efficientnet_lite0@random", device="cpu")
    X = encoder.encode_images([np.zeros((8, 8), dtype=np.uint8)] * 2)
    assert X.encoder_id == "timm:tf_efficientnet_lite0@random" and X[1:].encoder_id == X.encoder_id
