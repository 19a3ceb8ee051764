"""Tests of ``imprint.data.folder``: image folders laid out as root/<class>/**/<image>, with splits and few-shot
sampling."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, unprivileged
from PIL import Image

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.data.folder import (
    FolderError,
    UnreadableImage,
    list_images,
    load_rgb,
    sample_shots,
    scan_folder,
    split_support_test,
)
from imprint.workflows.loader import embed_paths


def make_folder(root, classes=("cat", "dog"), per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_layout_sorted_classes_nested_images_and_ignored_files(tmp_path):
    root = make_folder(tmp_path / "data", classes=("zebra", "ant"))
    (root / "ant" / "nested" / "deeper").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "ant" / "nested" / "deeper" / "x.JPG")
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / ".hidden.png").write_bytes(b"")
    (root / ".git").mkdir()
    (root / "empty").mkdir()
    with pytest.warns(UserWarning, match="1 class folder.* no images skipped: empty"):
        data = scan_folder(root)
    assert data.class_names == ["ant", "zebra"]
    assert len(data.paths) == 7 and np.bincount(data.labels).tolist() == [4, 3]
    assert data.empty_classes == ["empty"]
    assert all(p.suffix.lower() in {".png", ".jpg"} for p in data.paths)


def test_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(FolderError, match="not found"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(FolderError, match="no images found"):
        scan_folder(tmp_path)
    make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(FolderError, match="at least 2"):
        scan_folder(tmp_path / "one")


def test_images_are_rgb_with_exif_orientation_applied(tmp_path):
    wide = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = wide.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (10, 20)
    Image.new("P", (4, 4)).save(tmp_path / "palette.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("I;16", (4, 4)).save(tmp_path / "deep.png")
    for name in ("palette.png", "clear.png", "deep.png"):
        assert load_rgb(tmp_path / name).mode == "RGB"
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 20, 3])
    support, test = split_support_test(labels, 0.3, seed=1)
    assert not set(support) & set(test) and len(support) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=3).tolist() == [3, 6, 0]
    again, _ = split_support_test(labels, 0.3, seed=1)
    other, _ = split_support_test(labels, 0.3, seed=2)
    np.testing.assert_array_equal(support, again)
    assert not np.array_equal(support, other)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_support_test(labels, 1.5)


def test_shots_take_n_per_class_and_warn_for_small_classes():
    labels = np.repeat(np.arange(3), [10, 20, 3])
    with pytest.warns(UserWarning, match=r"fewer than 5 images and use all of them: c \(3\)"):
        rows = sample_shots(labels, 5, seed=0, class_names=["a", "b", "c"])
    assert np.bincount(labels[rows]).tolist() == [5, 5, 3]


def test_list_images_accepts_files_and_folders(tmp_path):
    root = make_folder(tmp_path / "d")
    assert list_images(root / "cat" / "0.png") == [root / "cat" / "0.png"]
    assert len(list_images(root)) == 6


def test_damaged_and_fake_images_are_named_with_the_reason(tmp_path, encoder):
    good = sorted((EXAMPLES / "bag").iterdir())[0]
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "notes.jpg").write_text("this is a text file named like an image")
    shutil.copy(good, tmp_path / "fine.png")
    paths = sorted(tmp_path.iterdir())
    result = embed_paths(encoder, paths, progress=False)
    assert result.ok.tolist() == [False, False, True, False]  # cut, empty, fine, notes
    message = result.describe_failures()
    assert "3 unreadable image(s)" in message
    assert f"{tmp_path / 'notes.jpg'} (not an image Pillow can read)" in message
    assert f"{tmp_path / 'cut.png'} (damaged or truncated" in message


def test_a_decompression_bomb_is_refused_with_its_path(tmp_path, encoder, monkeypatch):
    Image.new("L", (2000, 2000)).save(tmp_path / "bomb.png")  # 4 M pixels: a bomb under a 1 M pixel limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(UnreadableImage, match="refused: more pixels than Pillow's limit of 1000000"):
        load_rgb(tmp_path / "bomb.png")
    Image.new("L", (1200, 1000)).save(tmp_path / "warned.png")  # above the limit, under twice it: refused too
    result = embed_paths(encoder, [tmp_path / "bomb.png", tmp_path / "warned.png"], progress=False)
    assert not result.ok.any() and "decompression bomb" in result.describe_failures()


def test_odd_but_valid_images_decode_correctly(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "tiny.png")
    Image.new("RGB", (4000, 40), (200, 0, 0)).save(tmp_path / "long.png")  # a long panorama (100:1)
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    deep = np.full((8, 8), 60000, dtype=np.uint16)
    deep[0, 0] = 0
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    assert load_rgb(tmp_path / "tiny.png").getpixel((0, 0)) == (10, 20, 30)
    assert load_rgb(tmp_path / "long.png").size == (4000, 40)
    assert load_rgb(tmp_path / "anim.gif").mode == "RGB"
    red, green, blue = load_rgb(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60  # CMYK (0, 255, 255, 0) is red
    grey = np.asarray(load_rgb(tmp_path / "deep16.png"))
    assert grey[1, 1, 0] == round(60000 / 257) and grey[0, 0, 0] == 0  # scaled, not clipped to white


def test_folder_layouts_users_make(tmp_path):
    root = tmp_path / "my photos"  # spaces in paths
    for name in ("café crème", "猫", "dog"):  # unicode class names
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / name / f"img {i}.png")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "dog" / "._img 0.png").write_bytes(b"AppleDouble")  # hidden resource-fork file
    (root / ".hidden_class").mkdir()
    (root / "dog" / "loop").symlink_to(root / "dog")  # a symlink loop must not hang the scan
    if hasattr(os, "fsencode"):
        raw = os.fsencode(str(root)) + b"/latin-\xe9"  # a folder name that is not UTF-8
        os.mkdir(raw)
        Image.new("RGB", (8, 8)).save(os.fsdecode(raw + b"/x.png"))
    data = scan_folder(root)
    assert len(data.class_names) == 4 and "猫" in data.class_names and "café crème" in data.class_names
    assert all(not p.name.startswith(".") for p in data.paths) and len(data.paths) == 7


def test_non_utf8_and_unicode_names_print_and_save(tmp_path, capsys):
    root = tmp_path / "images"
    shutil.copytree(EXAMPLES / "bag", root / "猫 bag")
    raw = os.fsencode(str(root)) + b"/sneaker-\xe9"
    shutil.copytree(EXAMPLES / "sneaker", os.fsdecode(raw))
    out = tmp_path / "clf.safetensors"
    assert main(["fit", str(root), "-o", str(out), "--generation", "mean", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "imprinted 2 classes" in captured.out
    loaded = ImprintClassifier.load(out)
    assert "猫 bag" in loaded.classes_.tolist() and os.fsdecode(b"sneaker-\xe9") in loaded.classes_.tolist()
    assert main(["info", str(out)]) == 0
    assert "sneaker-" in capsys.readouterr().out


def test_a_class_whose_images_are_all_unreadable_is_left_out_and_named(tmp_path, capsys):
    root = tmp_path / "images"
    for name in ("bag", "sneaker"):
        shutil.copytree(EXAMPLES / name, root / name)
    (root / "broken").mkdir()
    for i in range(3):
        (root / "broken" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["fit", str(root), "-o", str(tmp_path / "c.safetensors"), "--quiet", "--generation", "mean"])
    err = capsys.readouterr().err
    assert code == 0 and "1 class(es) have no readable support image and are left out: broken" in err
    assert ImprintClassifier.load(tmp_path / "c.safetensors").classes_.tolist() == ["bag", "sneaker"]


def test_a_thin_image_is_refused_in_bounded_memory(tmp_path, cache_flags):
    Image.new("L", (60000, 1)).save(tmp_path / "thin.png")  # a few hundred bytes
    assert (tmp_path / "thin.png").stat().st_size < 1000
    Image.new("L", (1, 60000)).save(tmp_path / "tall.png")
    clf = tmp_path / "clf.safetensors"
    assert main(["fit", str(EXAMPLES), "-o", str(clf), "--preset", "qi", *cache_flags]) == 0
    # VmHWM is this process's own peak; ru_maxrss would inherit the pytest parent's across fork and exec
    script = ("import sys\nfrom imprint.cli import main\n"
              f"code = main(['predict', {str(clf)!r}, {str(tmp_path / 'thin.png')!r}, {str(tmp_path / 'tall.png')!r},"
              f" *{cache_flags!r}])\n"
              "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
              "print(int(peak) // 1024, file=sys.stderr)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    peak_mib = int(lines[-1])
    assert done.returncode == 2 and "none of the 2 image(s) could be read" in done.stderr
    assert "aspect ratio above 100:1" in done.stderr and "crop it" in done.stderr
    assert peak_mib < 2500, f"peak memory {peak_mib} MiB"  # the model and torch; 16 GB before the fix


@pytest.mark.parametrize("mode", ["I;16", "RGB", "RGBA"])
def test_decoding_holds_no_more_than_decode_bytes_says(tmp_path, mode):
    """A 16-bit image took 28 bytes a pixel to decode (a 9400 x 9400 PNG of 172 KB: 2.1 GB); now every step
    holds only what it needs, and ``decode_bytes`` (what a server reserves before decoding) bounds it."""
    side = 2000
    ramp = np.add.outer(np.arange(side), np.arange(side))
    if mode == "I;16":
        image = Image.fromarray((ramp * 16).astype(np.uint16))
    else:
        image = Image.fromarray(np.stack([ramp % 256] * len(mode), axis=-1).astype(np.uint8), mode=mode)
    image.save(tmp_path / "big.png")
    script = ("import io, sys\nfrom PIL import Image\nfrom imprint.data.folder import decode_bytes, load_rgb\n"
              f"data = open({str(tmp_path / 'big.png')!r}, 'rb').read()\n"
              "need = decode_bytes(Image.open(io.BytesIO(data)))\n"
              "def peak():\n    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"
              ".split()[1]) * 1024\n"
              "before = peak()\nload_rgb(io.BytesIO(data))\nprint(peak() - before, need)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    held, need = map(int, done.stdout.split())
    assert held <= need, (held, need)
    assert need <= 20 * side * side  # bytes a pixel at most, alpha and its conversions included


def test_unreadable_folders_are_named_and_strict_stops_on_them(capsys):
    base = Path(tempfile.mkdtemp(prefix="imprint-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        images = base / "images"
        for name in ("bag", "coat", "sandal"):
            shutil.copytree(EXAMPLES / name, images / name)
        (images / "bag" / "more").mkdir()
        shutil.copy(sorted((EXAMPLES / "bag").iterdir())[0], images / "bag" / "more" / "x.png")
        os.chmod(images / "bag" / "more", 0)  # a sub-folder inside a class that cannot be read
        os.chmod(images / "sandal", 0)  # a whole class folder that cannot be read
        (base / "home").mkdir(mode=0o777)
        os.chmod(base / "home", 0o777)
        env = dict(os.environ, HOME=str(base / "home"), IMPRINT_CACHE_DIR=str(base / "home" / "cache"))
        command = [sys.executable, "-m", "imprint.cli", "embed", str(images), "-o", str(base / "home" / "e.npz"),
                   "--quiet"]
        done = subprocess.run(unprivileged(command), capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "cannot read the folder" in done.stderr and "bag/more" in done.stderr and "sandal" in done.stderr
        assert "no images" not in done.stderr  # an unreadable class is not called empty
        strict = subprocess.run(unprivileged(command + ["--strict"]), capture_output=True, text=True, env=env,
                                timeout=300)
        assert strict.returncode == 2 and "cannot read the folder" in strict.stderr
        assert strict.stderr.count("\n") == 1
    finally:
        for folder in (base / "images" / "bag" / "more", base / "images" / "sandal"):
            if folder.exists():
                os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)
