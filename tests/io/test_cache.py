"""Tests of ``imprint.io.cache``: on-disk embedding cache: one small file per (encoder, weights, preprocessing, image
path, size, mtime)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import EXAMPLES, run

from imprint.cli import main
from imprint.io.cache import EmbeddingCache
from imprint.workflows.loader import embed_paths


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


def test_cache_clear_removes_only_the_cache_s_own_entries(tmp_path, capsys, six_per_class):
    cache_dir = tmp_path / "mine"  # a folder of the user's, named as the cache by mistake
    cache_dir.mkdir()
    (cache_dir / "thesis.tex").write_text("years of work")
    (cache_dir / "photos").mkdir()
    (cache_dir / "photos" / "a.emb").write_bytes(b"a file of another program with the cache's suffix")
    (cache_dir / "0123456789abcdef01234567").mkdir()  # a folder named like a namespace, holding a user file
    (cache_dir / "0123456789abcdef01234567" / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "embed", six_per_class, "-o", tmp_path / "e.npz", "--cache-dir", cache_dir, "--quiet")
    assert code == 0, err
    assert EmbeddingCache(cache_dir).info()["entries"] == 18
    code, out, _ = run(capsys, "cache", "clear", "--cache-dir", cache_dir)
    assert code == 0 and "removed 18" in out
    assert (cache_dir / "thesis.tex").read_text() == "years of work"
    assert (cache_dir / "photos" / "a.emb").is_file()
    assert (cache_dir / "0123456789abcdef01234567" / "notes.txt").read_text() == "keep me"
    left = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*"))
    assert left == ["0123456789abcdef01234567", "0123456789abcdef01234567/notes.txt", "photos", "photos/a.emb",
                    "thesis.tex"]  # the cache's own folders are gone, nothing else


def test_a_full_or_read_only_cache_warns_once_and_the_command_goes_on(tmp_path, capsys, six_per_class):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")  # no folder can be made there, even by root
    code, out, err = run(capsys, "fit", six_per_class, "-o", tmp_path / "clf.safetensors", "--cache-dir", blocked,
                         "--quiet")
    assert code == 0, err
    assert err.count("cannot be written") == 1 and "going on without caching" in err
    assert (tmp_path / "clf.safetensors").is_file() and "imprinted 3 classes" in out


def test_two_processes_embedding_into_one_cache_at_once(eight_per_class: Path, tmp_path: Path, encoder):
    cache = tmp_path / "cache"
    commands = [[sys.executable, "-m", "imprint.cli", "embed", str(eight_per_class), "-o", str(tmp_path / f"{i}.npz"),
                 "--cache-dir", str(cache), "--quiet", "--device", "cpu", "--batch-size", "4",
                 "--runtime", encoder.engine] for i in range(2)]  # the engine of `fresh` below, not one measured anew
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    with np.load(tmp_path / "0.npz") as first_file, np.load(tmp_path / "1.npz") as second:
        first = {name: first_file[name] for name in ("embeddings", "paths")}
        np.testing.assert_array_equal(first["embeddings"], second["embeddings"])
    fresh = embed_paths(encoder, [Path(p) for p in first["paths"]], progress=False)  # no cache: computed now
    np.testing.assert_array_equal(first["embeddings"], fresh.embeddings)
    entries = list(cache.rglob("*.emb"))
    assert len(entries) == 24 and not list(cache.rglob("*.tmp"))  # every entry whole, no debris
    served = embed_paths(encoder, [Path(p) for p in first["paths"]], cache=EmbeddingCache(cache), progress=False)
    assert served.encoded == 0 and np.array_equal(served.embeddings, fresh.embeddings)


def test_cache_entries_altered_on_disk_are_recomputed_not_served(eight_per_class: Path, tmp_path: Path, encoder):
    paths = sorted(eight_per_class.rglob("*.png"))
    cache = EmbeddingCache(tmp_path / "cache")
    truth = embed_paths(encoder, paths, cache=cache, progress=False).embeddings
    entries = sorted((tmp_path / "cache").rglob("*.emb"))
    rng = np.random.default_rng()
    for entry in rng.choice(entries, 5, replace=False):  # 9 bytes overwritten inside 5 entries
        data = bytearray(entry.read_bytes())
        at = int(rng.integers(60, len(data) - 9))
        data[at:at + 9] = b"\xff" * 9
        entry.write_bytes(bytes(data))
    entries[0].write_bytes(entries[0].read_bytes()[:50])  # and one truncated
    again = embed_paths(encoder, paths, cache=cache, progress=False)
    assert again.encoded >= 5  # the damaged ones were computed again
    np.testing.assert_array_equal(again.embeddings, truth)
    assert embed_paths(encoder, paths, cache=cache, progress=False).encoded == 0  # and rewritten whole
