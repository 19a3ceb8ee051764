"""Image folders laid out as root/<class>/**/<image>, with splits and few-shot sampling."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imprint.core.errors import UserError, printable

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class FolderError(UserError):
    """An image folder that cannot be used as it is; the message says why and what to do."""


@dataclass
class ImageFolder:
    """Image paths with integer labels into sorted class names (torchvision ImageFolder order)."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    empty_classes: list[str] = field(default_factory=list)

    @property
    def class_labels(self) -> np.ndarray:
        """The class name of every image."""
        return np.asarray(self.class_names, dtype=object)[self.labels]


def list_images(path: Path, strict: bool = False) -> list[Path]:
    """Image files under `path` (a file or a folder), sorted, hidden files and non-images ignored; links to
    folders are not followed (no loops). A folder that cannot be read is named in a warning, or is an error with
    `strict`: its images are never dropped without a word."""
    path = Path(path)
    if path.is_file():
        return [path]
    found, unreadable = [], []

    def failed(error: OSError) -> None:
        unreadable.append((Path(error.filename) if error.filename else path, error.strerror or str(error)))

    for folder, subfolders, files in os.walk(path, onerror=failed):
        base = Path(folder)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in files:
            candidate = base / name
            if candidate.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".") and candidate.is_file():
                found.append(candidate)
    if unreadable:
        where, why = unreadable[0]
        more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        message = f"cannot read the folder {printable(where)} ({why}){more}: its images are left out"
        if strict:
            raise FolderError(message + "; fix its permissions, or drop --strict to go on without them")
        warnings.warn(message + " (fix its permissions, or pass --strict to stop on this)", stacklevel=2)
    return sorted(found)


def _readable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def scan_folder(root: str | Path, min_classes: int = 2, strict: bool = False) -> ImageFolder:
    """Find the classes (sub-folders) and images of `root`; empty class folders are reported, not fatal, and
    folders that cannot be read are named (an error with `strict`)."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels, names, empty = [], [], [], []
    for class_dir in class_dirs:
        images = list_images(class_dir, strict=strict)
        if not images:
            if _readable(class_dir):  # one that cannot be read was named by list_images, not as an empty class
                empty.append(class_dir.name)
            continue
        labels.extend([len(names)] * len(images))
        names.append(class_dir.name)
        paths.extend(images)
    if empty:
        warnings.warn(f"{len(empty)} class folder(s) with no images skipped: {', '.join(empty)}", stacklevel=2)
    if not paths:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                 and not p.name.startswith(".")]
        if loose:
            raise FolderError(f"{root} holds {len(loose)} image(s) but no class sub-folders; put each class's "
                              f"images in its own folder: {root}/<class>/<image>")
        raise FolderError(f"no images found in {root}; expected {root}/<class>/<image> with extensions "
                          f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    if len(names) < min_classes:
        raise FolderError(f"{root} has {len(names)} class folder(s) with images ({', '.join(names)}); "
                          f"imprinting needs at least {min_classes}: put each class in its own sub-folder")
    return ImageFolder(root, paths, np.asarray(labels, dtype=np.int64), names, empty)


def folder_fingerprint(root: str | Path) -> str:
    """A digest of an image folder's contents as they stand: every image's path below `root`, size and
    modification time. It changes when an image is added, removed, replaced or edited, so results computed on
    the folder are not reused after it changed."""
    import hashlib

    root = Path(root)
    digest = hashlib.sha256()
    for path in list_images(root) if root.is_dir() else []:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:20]


class UnreadableImage(UserError):
    """An image file that cannot be decoded; the message says why in a few words."""


MAX_ASPECT = 100  # longest side / shortest side: encoders resize the shortest side to ~256 px, the other follows


def check_proportions(width: int, height: int) -> None:
    """Refuse an image too thin to embed: resized for an encoder (shortest side to about 256 pixels), a
    60000 x 1 image would become 15 million x 256 pixels (16 GB) for a centre crop of 224 x 224."""
    short, long = min(width, height), max(width, height)
    if short < 1 or long > MAX_ASPECT * short:
        resized = 256 * 256 * 3 * 4 * (long / max(short, 1)) / 2**30
        raise UnreadableImage(f"refused: {width} x {height} pixels, an aspect ratio above {MAX_ASPECT}:1 (resizing "
                              f"it for the encoder would take about {resized:.1f} GB); crop it")


DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ALPHA_MODES = ("RGBA", "LA", "P", "PA", "La", "RGBa")
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # Pillow's storage; else 4
TRANSPOSED = frozenset(range(2, 9))  # EXIF orientations that turn or mirror the image
STRIP = 1 << 20  # pixels of a deep image converted at once


def decode_bytes(image: Image.Image) -> int:
    """An upper bound of the memory ``load_rgb`` holds at once for `image` (opened, not yet decoded): the decoded
    pixels at their depth (a 16-bit image 2 bytes a pixel, RGB 4 as Pillow stores it), a turned copy where its
    EXIF orientation asks for one, and each conversion on the way to 8-bit RGB. Read from the header alone."""
    pixels = image.size[0] * image.size[1]
    held = pixels * PIXEL_BYTES.get(image.mode, 4)
    if image.getexif().get(0x0112, 1) in TRANSPOSED:
        held *= 2
    if image.mode in DEEP_MODES:
        held += pixels + min(pixels, STRIP) * 24  # the 8-bit grey copy, and a strip's float64 temporaries
    if image.mode in ALPHA_MODES:
        held += pixels * 8  # RGBA, the white background and the composite
    if image.mode != "RGB":
        held += pixels * 4
    return held + held // 8 + 2**20  # the decoder's own buffers


def _to_8bit(image: Image.Image) -> Image.Image:
    """Deep greyscale (16-bit, 32-bit, float) scaled into 0..255; Pillow's own conversion would clip it
    (a 16-bit value of 60000 becomes 255: a white image). Converted a strip of rows at a time, so the copies in
    float64 are a strip's, not the image's."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scale, low = 1 / 257.0, 0.0
    elif image.mode == "F" and values.size and values.min() >= 0.0 and values.max() <= 1.0:
        scale, low = 255.0, 0.0
    elif values.size and (values.min() < 0.0 or values.max() > 255.0):
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
    else:
        scale, low = 1.0, 0.0
    out = np.empty(values.shape, dtype=np.uint8)
    rows = max(1, STRIP // max(1, values.shape[1] if values.ndim > 1 else 1))
    for start in range(0, len(values), rows):
        strip = (values[start:start + rows].astype(np.float64) - low) * scale if low else \
            values[start:start + rows].astype(np.float64) * scale
        out[start:start + rows] = np.clip(np.rint(strip), 0, 255)
    return Image.fromarray(out, mode="L")


def load_rgb(path: Path | BinaryIO) -> Image.Image:
    """Decode an image fully (the first frame of an animation), apply its EXIF orientation and convert it to
    8-bit RGB: grey, palette, CMYK and deep (16-bit, float) images included, transparency on white. Images
    beyond Pillow's pixel limit (decompression bombs) are refused, not decoded. No copy is made that a step does
    not need (``decode_bytes`` bounds what is held)."""
    try:
        with warnings.catch_warnings():  # only quiets Pillow's warning: the limit is enforced below, since warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # filters are not thread-safe
            with Image.open(path) as image:
                check_proportions(*image.size)  # from the header, before any pixel is decoded
                limit = Image.MAX_IMAGE_PIXELS
                if limit and image.size[0] * image.size[1] > limit:
                    raise Image.DecompressionBombError(f"Image size ({image.size[0] * image.size[1]} pixels) "
                                                       f"exceeds limit of {limit} pixels")
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"refused: more pixels than Pillow's limit of {Image.MAX_IMAGE_PIXELS} "
                              f"(a decompression bomb?): {exc}") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or damaged data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableImage(f"damaged or truncated ({reason})") from None
    if image.mode in DEEP_MODES:
        image = _to_8bit(image)
    if image.mode in ALPHA_MODES:
        if image.mode != "RGBA":
            image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _shuffled_by_class(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random order grouped by class, each row's rank within its class, and the class sizes."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))
    counts = np.bincount(labels)
    rank = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order, rank, counts


def split_support_test(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split into support and test indices (every class keeps a support image)."""
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1; got {test_fraction}")
    order, rank, counts = _shuffled_by_class(labels, seed)
    n_test = np.floor(counts * test_fraction).astype(int).clip(max=counts - 1)
    is_test = rank < n_test[labels[order]]
    return np.sort(order[~is_test]), np.sort(order[is_test])


def sample_shots(labels: np.ndarray, shots: int, seed: int = 0,
                 class_names: list[str] | None = None) -> np.ndarray:
    """Seeded few-shot sample: `shots` indices per class; a smaller class uses all it has, with a warning."""
    if shots < 1:
        raise UserError(f"--shots must be >= 1; got {shots}")
    order, rank, counts = _shuffled_by_class(labels, seed)
    short = np.flatnonzero((counts > 0) & (counts < shots))
    if len(short):
        names = [class_names[c] if class_names else str(c) for c in short]
        warnings.warn(f"{len(short)} class(es) have fewer than {shots} images and use all of them: "
                      f"{', '.join(f'{n} ({counts[c]})' for n, c in zip(names, short))}", stacklevel=2)
    return np.sort(order[rank < shots])
