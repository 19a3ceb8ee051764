"""Embedding cache: reuse, exact invalidation, atomic entries, info and clear."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imprint.cli import main
from imprint.io.cache import EmbeddingCache
from imprint.workflows.loader import embed_paths

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fashion"


@pytest.fixture(scope="module")
def encoder():
    from imprint.encoders import create_encoder

    return create_encoder(device="cpu")


def test_second_run_reuses_and_a_touched_file_is_reencoded(tmp_path, encoder):
    folder = tmp_path / "bag"
    shutil.copytree(EXAMPLES / "bag", folder)
    paths = sorted(folder.iterdir())[:6]
    cache = EmbeddingCache(tmp_path / "cache")
    first = embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    assert first.encoded == 6
    second = embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    assert second.encoded == 0
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    stat = paths[2].stat()
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    assert third.encoded == 1
    np.testing.assert_allclose(third.embeddings, first.embeddings, atol=1e-5)
    shutil.copy(EXAMPLES / "sneaker" / sorted(os.listdir(EXAMPLES / "sneaker"))[0], paths[3])  # new content
    fourth = embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    assert fourth.encoded == 1 and not np.allclose(fourth.embeddings[3], first.embeddings[3])


def test_another_encoder_never_gets_these_embeddings(tmp_path, encoder):
    from imprint.encoders import create_encoder

    paths = sorted((EXAMPLES / "bag").iterdir())[:3]
    cache = EmbeddingCache(tmp_path / "cache")
    embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    random_init = create_encoder("timm:tf_efficientnet_lite0@random", device="cpu")
    assert embed_paths(random_init, paths, cache=cache, workers=0, progress=False).encoded == 3


def test_damaged_entries_are_recomputed_and_no_temp_files_remain(tmp_path, encoder):
    paths = sorted((EXAMPLES / "bag").iterdir())[:2]
    cache = EmbeddingCache(tmp_path / "cache")
    embed_paths(encoder, paths, cache=cache, workers=0, progress=False)
    entries = list((tmp_path / "cache").rglob("*.emb"))
    assert len(entries) == 2 and not list((tmp_path / "cache").rglob("*.tmp"))
    entries[0].write_bytes(entries[0].read_bytes()[:30])  # as if a writer died mid-file without atomicity
    assert embed_paths(encoder, paths, cache=cache, workers=0, progress=False).encoded == 1


def test_cache_info_and_clear(tmp_path, capsys, encoder):
    paths = sorted((EXAMPLES / "bag").iterdir())[:4]
    embed_paths(encoder, paths, cache=EmbeddingCache(tmp_path / "c"), workers=0, progress=False)
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "entries: 4" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "removed 4" in capsys.readouterr().out
    assert EmbeddingCache(tmp_path / "c").info()["entries"] == 0


def test_one_image_reached_by_a_link_or_a_relative_path_has_one_entry(tmp_path, monkeypatch):
    """The key is the image's real path: a linked folder, a linked file and a relative path all find the entry the
    real path wrote (folders are resolved once per call, a linked file on its own)."""
    real = tmp_path / "real"
    real.mkdir()
    images = [real / f"{i}.jpg" for i in range(3)]
    for path in images:
        path.write_bytes(b"not decoded: only its path, size and time are read")
    (tmp_path / "linked_folder").symlink_to(real, target_is_directory=True)
    (tmp_path / "linked_file.jpg").symlink_to(images[1])
    monkeypatch.chdir(real)
    cache = EmbeddingCache(tmp_path / "cache")
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    cache.put_many("a" * 24, images, vectors)
    other_ways = [tmp_path / "linked_folder" / "0.jpg", tmp_path / "linked_file.jpg", Path("2.jpg")]
    found, mask = cache.get_many("a" * 24, other_ways, 3)
    assert mask.all()
    np.testing.assert_array_equal(found, vectors)
    assert [cache._entry("a" * 24, path) for path in other_ways] == \
        [cache._entry("a" * 24, path, {}) for path in images]
    assert len(list((tmp_path / "cache").rglob("*.emb"))) == 3
