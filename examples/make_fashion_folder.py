"""Rebuild examples/fashion/: 20 Fashion-MNIST test images per class as PNGs in class folders.

Needs Debian's dataset-fashion-mnist. Run: python examples/make_fashion_folder.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from imprint.data.builtin import fashion_mnist

PER_CLASS = 20


def main() -> None:
    data = fashion_mnist("test")
    root = Path(__file__).parent / "fashion"
    rng = np.random.default_rng(0)
    for label, name in enumerate(data.class_names):
        folder = root / name.replace("/", "-").replace(" ", "_").lower()
        folder.mkdir(parents=True, exist_ok=True)
        for i in rng.choice(np.flatnonzero(data.labels == label), PER_CLASS, replace=False):
            Image.fromarray(data.images[i]).save(folder / f"{i:05d}.png", optimize=True)


if __name__ == "__main__":
    main()
