"""Hostile and odd inputs in the folder reader, the command line and the API: each gets a clear one-line message
naming the file and the fix, or a correct result; never a traceback, never a silent wrong answer."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imprint import ClassifierFileError, ImprintClassifier
from imprint.cli import main
from imprint.data.folder import UnreadableImage, load_rgb, scan_folder
from imprint.workflows.loader import embed_paths

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fashion"


@pytest.fixture(scope="module")
def encoder():
    from imprint.encoders import create_encoder

    return create_encoder(device="cpu")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("imprint: error: ")]


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
    assert main(["fit", str(root), "-o", str(out), "--generation", "mean", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
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
    code = main(["fit", str(root), "-o", str(tmp_path / "c.safetensors"), "--quiet", "--generation", "mean",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 0 and "1 class(es) have no readable support image and are left out: broken" in err
    assert ImprintClassifier.load(tmp_path / "c.safetensors").classes_.tolist() == ["bag", "sneaker"]


def test_classifier_files_from_elsewhere_are_refused_in_one_line(tmp_path, capsys, mixture):
    X, y = mixture
    path = tmp_path / "c.safetensors"
    ImprintClassifier(generation="mean").fit(X, y, encoder_id="timm:tf_efficientnet_lite0").save(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one byte of the proxies flipped on disk
    altered = tmp_path / "altered.safetensors"
    altered.write_bytes(bytes(data))
    with pytest.raises(ClassifierFileError, match="altered or damaged since it was written"):
        ImprintClassifier.load(altered)
    code = main(["predict", str(path), str(EXAMPLES / "bag"), "--encoder", "lite1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1
    assert "was fitted with timm:tf_efficientnet_lite0, not lite1; name no encoder (encoder= in Python" in err
