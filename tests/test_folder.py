"""Image folders: layout rules, image decoding, splits and few-shot sampling."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imprint.data.folder import FolderError, list_images, load_rgb, sample_shots, scan_folder, split_support_test


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
