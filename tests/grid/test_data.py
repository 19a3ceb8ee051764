"""Tests of ``imprint.grid.data``: the evaluation protocol's draws of a dataset and their embeddings."""
from __future__ import annotations

from imprint.grid.config import DatasetSpec
from imprint.grid.data import embed_dataset
from imprint.io.cache import EmbeddingCache


def test_a_larger_draw_of_a_dataset_embeds_only_the_images_it_adds(tmp_path, encoder, monkeypatch):
    """Draws are nested (the same seeded order, cut longer) and the cache keeps a built-in dataset's images one by
    one, by their pixels: a draw with one more support image per class runs the encoder on those ten alone, and
    the rows of the smaller draw keep their embeddings."""
    cache = EmbeddingCache(tmp_path / "cache")
    spec = {"name": "fashion_mnist", "val_per_class": 0, "test_per_class": 2}
    small = embed_dataset(encoder, DatasetSpec(support_per_class=2, **spec), cache)
    encoded, encode = [], encoder.encode_images
    monkeypatch.setattr(encoder, "encode_images", lambda images, **kw: encoded.append(len(images)) or encode(images))
    large = embed_dataset(encoder, DatasetSpec(support_per_class=3, **spec), cache)
    assert encoded == [10] and len(large.X) == len(small.X) + 10
    for test in (False, True):
        smaller, larger = small.X[small.is_test == test], large.X[large.is_test == test]
        assert all((row == larger).all(axis=1).any() for row in smaller)
    monkeypatch.undo()
    assert (embed_dataset(encoder, DatasetSpec(support_per_class=3, **spec), None).X == large.X).all()
