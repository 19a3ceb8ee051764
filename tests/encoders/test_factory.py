"""Tests of ``imprint.encoders.factory``: ``create_encoder(id)``: one string names a backend, a model and its
weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imprint import ImprintClassifier
from imprint.encoders import DEFAULT_ENCODER, EncoderError, create_encoder


@pytest.fixture(scope="module")
def pretrained():
    return create_encoder(device="cpu")


def test_default_encoder_is_offline_efficientnet_lite0(pretrained):
    assert pretrained.id == DEFAULT_ENCODER == "timm:tf_efficientnet_lite0"
    assert pretrained.embedding_dim == 1280
    assert pretrained.weights_id.startswith("sha256:579344248a93e230")  # the packaged file's digest


def test_packaged_weights_convert_to_every_timm_parameter():
    """Every tensor of the efficientnet_pytorch file maps onto a timm parameter of the same shape."""
    import timm

    from imprint.encoders.timm_backend import convert_efficientnet_pytorch, packaged_weights_file

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(packaged_weights_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(convert_efficientnet_pytorch(state, [len(s) for s in model.blocks]))
    assert not missing and not unexpected


@pytest.mark.slow
def test_pretrained_beats_random_weights_on_5_shot_fashion_mnist(pretrained):
    from imprint.data.builtin import fashion_mnist, per_class_split

    train, test = fashion_mnist("train"), fashion_mnist("test")
    support, _ = per_class_split(train.labels, 5, 0, seed=0)
    queries, _ = per_class_split(test.labels, 30, 0, seed=0)
    random_init = create_encoder("timm:tf_efficientnet_lite0@random", device="cpu")
    scores = {}
    for name, encoder in (("pretrained", pretrained), ("random", random_init)):
        Xs = encoder.encode_images(train.images[support])
        Xq = encoder.encode_images(test.images[queries])
        clf = ImprintClassifier(generation="mean").fit(Xs, train.labels[support])
        scores[name] = clf.score(Xq, test.labels[queries])
    assert scores["pretrained"] >= scores["random"] + 0.15, scores
    assert scores["pretrained"] > 0.55, scores


def test_local_checkpoint_and_bad_ids(tmp_path):
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    torch.nn.init.constant_(model.conv_head.weight, 0.01)
    torch.save(model.state_dict(), tmp_path / "ckpt.pth")
    encoder = create_encoder(f"timm:tf_efficientnet_lite0@{tmp_path / 'ckpt.pth'}", device="cpu")
    assert torch.equal(encoder.model.conv_head.weight, model.conv_head.weight)
    assert encoder.weights_id.startswith("sha256:")
    with pytest.raises(EncoderError, match="checkpoint not found"):
        create_encoder("timm:tf_efficientnet_lite0@/nope.pth")
    with pytest.raises(EncoderError, match="unknown timm model"):
        create_encoder("timm:not_a_model")
    with pytest.raises(ValueError, match="unknown encoder backend 'foo'; valid: "):
        create_encoder("foo:bar")
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(EncoderError, match="cannot read checkpoint"):
        create_encoder(f"timm:tf_efficientnet_lite0@{tmp_path / 'bad.pth'}")


def test_encode_images_accepts_arrays_and_pil(pretrained):
    from PIL import Image

    grey = np.full((28, 28), 128, dtype=np.uint8)
    a = pretrained.encode_images([grey, Image.fromarray(grey)])
    assert a.shape == (2, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a[0], a[1], atol=1e-5)


@pytest.mark.parametrize("alias, size", [("lite1", 240), ("lite2", 260)])
def test_lite1_and_lite2_load_their_packaged_weights(alias, size):
    """Their weights load and embed (on torch: exporting a graph is tested on Lite0, and costs 5 s more here)."""
    encoder = create_encoder(alias, device="cpu", runtime="torch")
    assert encoder.id == f"timm:tf_efficientnet_{alias}" and encoder.weights_id.startswith("sha256:")
    assert encoder.transform(Image.new("RGB", (300, 400))).shape == (3, size, size)
    embedding = encoder.encode_images([np.full((32, 32), 100, dtype=np.uint8)])
    assert embedding.shape == (1, 1280) and np.isfinite(embedding).all()
