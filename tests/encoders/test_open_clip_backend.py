"""Tests of ``imprint.encoders.open_clip_backend``: open_clip models: image embeddings, and text embeddings for zero-
shot proxies from class names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT

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


def test_a_pretrained_tag_without_network_fails_at_once_with_the_way_to_a_local_file(tmp_path, monkeypatch):
    """No weights in the cache and no network: one line at once (open_clip alone retries for about a minute),
    naming the file to download and the encoder id that reads it from disk."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("this machine reaches the hub: the download would be tried")
    except OSError:
        pass
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(EncoderError, match="not in the local cache and the hub cannot be reached") as info:
        create_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
    assert "open_clip:ViT-B-32/PATH/TO/open_clip_pytorch_model.bin (encoder= in Python, --encoder on the command " \
           "line)" in str(info.value)  # a Python call is told the Python argument
    assert "\n" not in str(info.value)
    with pytest.raises(EncoderError, match="checkpoint not found"):
        create_encoder(f"open_clip:ViT-B-32/{tmp_path / 'missing' / 'weights.bin'}", device="cpu")


def test_a_local_checkpoint_serves_the_command_line(tiny_model_name, tmp_path, capsys):
    """The documented offline way: weights saved to disk, named in the encoder id, used by fit and predict."""
    import open_clip

    from imprint.cli import main

    model = open_clip.create_model(tiny_model_name, pretrained=None)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    encoder = f"open_clip:{tiny_model_name}/{tmp_path / 'weights.pt'}"
    examples = ROOT / "examples" / "fashion"
    assert main(["fit", str(examples), "-o", str(tmp_path / "c.safetensors"), "--encoder", encoder, "--preset", "qi",
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    image = sorted((examples / "bag").iterdir())[0]
    assert main(["predict", str(tmp_path / "c.safetensors"), str(image)]) == 2  # a file alone does not load it
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "c.safetensors"), str(image), "--encoder", encoder,
                 "--cache-dir", str(tmp_path / "cache"), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("path,label,probability,top_k")


def test_random_weights_name_one_network_and_leave_the_callers_random_state_alone(tiny_model_name):
    """A saved classifier or an export rebuilds `.../random` from its id: it must be the network it was fitted on."""
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu")
    assert torch.equal(torch.rand(3), before)
    second = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu")
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
