"""open_clip backend on a small randomly initialised model (no download), and from a local checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imprint.encoders import EncoderError, create_encoder


def test_random_init_model_embeds_images_and_text(tiny_model_name):
    encoder = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu")
    assert encoder.id == f"open_clip:{tiny_model_name}/random" and encoder.embedding_dim == 32
    images = [np.full((40, 30, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    emb = encoder.encode_images(images)
    assert emb.shape == (3, 32) and np.isfinite(emb).all()
    proxies = encoder.text_proxies(["cat", "dog"], templates=["a photo of a {}.", "a {}."])
    assert proxies.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(proxies, axis=1), 1.0, rtol=1e-5)


def test_local_checkpoint_gives_the_saved_model(tiny_model_name, tmp_path):
    import open_clip

    model = open_clip.create_model(tiny_model_name, pretrained=None)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    encoder = create_encoder(f"open_clip:{tiny_model_name}/{tmp_path / 'tiny.pt'}", device="cpu")
    for ours, saved in zip(encoder.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(ours, saved)
    assert encoder.weights_id.startswith("sha256:")
    image = [np.zeros((64, 64, 3), dtype=np.uint8)]
    with torch.inference_mode():
        expected = model.encode_image(encoder.transform(__import__("PIL.Image").Image.fromarray(image[0]))[None])
    np.testing.assert_allclose(encoder.encode_images(image), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_open_clip_errors_are_clear(tiny_model_name):
    with pytest.raises(EncoderError, match="name the weights"):
        create_encoder(f"open_clip:{tiny_model_name}")
    with pytest.raises(EncoderError, match="unknown open_clip model"):
        create_encoder("open_clip:No-Such-Model/random")
    with pytest.raises(EncoderError, match="cannot load"):
        create_encoder(f"open_clip:{tiny_model_name}/not-a-tag-or-file")


def test_templates_file(tmp_path):
    from imprint.encoders.open_clip_backend import read_templates

    (tmp_path / "t.txt").write_text("# comment\na photo of a {}.\n\nitap of a {}.\n")
    assert read_templates(tmp_path / "t.txt") == ["a photo of a {}.", "itap of a {}."]
    (tmp_path / "bad.txt").write_text("no placeholder\n")
    with pytest.raises(ValueError, match="exactly one"):
        read_templates(tmp_path / "bad.txt")
