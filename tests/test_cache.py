"""Embedding cache: reuse, exact invalidation, atomic entries, info and clear."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imprint.cache import EmbeddingCache
from imprint.cli import main
from imprint.embed import embed_paths

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
