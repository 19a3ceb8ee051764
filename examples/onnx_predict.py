"""Predict a folder of images with a classifier exported by `imprint export`, with only onnxruntime, numpy and
Pillow installed (no torch, no imprint):

    imprint export fashion.safetensors -o fashion.onnx
    python examples/onnx_predict.py fashion.onnx examples/fashion/bag

Each image is resized and centre-cropped as the encoder's preprocessing does it (the model's metadata says how),
then the graph gives the class scores, the calibrated probabilities, the best class and, where the classifier
rejects, whether the image is accepted. An image that cannot be read (or is too thin to resize) is named on
stderr, one line each, and the others are predicted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

FORMAT = "imprint-onnx"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_ASPECT = 100  # longest side / shortest side: a thinner image would be resized to millions of pixels
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


class Model:
    """An exported imprint classifier: preprocessing from its metadata, answers from its graph."""

    def __init__(self, path: str) -> None:
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise SystemExit(f"onnx_predict: {path} is not a readable ONNX model ({str(exc).splitlines()[0]})")
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise SystemExit(f"onnx_predict: {path} is an ONNX model, but not one 'imprint export' wrote")
        self.classes = json.loads(meta["classes"])
        self.preprocessing = json.loads(meta["preprocessing"])
        self.outputs = json.loads(meta["outputs"])
        self.unknown_label = json.loads(meta.get("unknown_label", "null"))

    def pixels(self, path: Path) -> np.ndarray:
        """H x W x 3 uint8: the image as RGB, its shortest side resized, the centre cropped; ValueError (with the
        reason) for an image that cannot be used."""
        try:
            with Image.open(path) as image:
                width, height = image.size
                if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
                    raise ValueError(f"{width} x {height} pixels: an aspect ratio above {MAX_ASPECT}:1, crop it")
                image.load()
                return self._pixels(image)
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"not an image this can read ({str(exc).splitlines()[0][:80] if str(exc) else exc})") \
                from None

    def _pixels(self, image: Image.Image) -> np.ndarray:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P", "PA"):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB")
        size, (height, width) = self.preprocessing["resize"], self.preprocessing["crop"]
        short, long = min(image.size), max(image.size)
        target = (size, int(size * long / short)) if image.size[0] == short else (int(size * long / short), size)
        image = image.resize(target, FILTERS[self.preprocessing.get("interpolation", "bilinear")])
        left, top = int(round((image.size[0] - width) / 2.0)), int(round((image.size[1] - height) / 2.0))
        return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)

    def predict(self, paths: list[Path], pixels: list[np.ndarray]) -> list[tuple[Path, str, float]]:
        """(path, class or the unknown label, probability of the best class) per image."""
        answers = dict(zip(self.outputs, self.session.run(None, {"images": np.stack(pixels)})))
        out = []
        for i, path in enumerate(paths):
            best = int(answers["label"][i])
            label = self.classes[best]
            if "accepted" in answers and not bool(answers["accepted"][i]):
                label = self.unknown_label
            out.append((path, label, float(answers["probabilities"][i, best])))
        return out


def images_under(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python onnx_predict.py MODEL.onnx IMAGE_OR_FOLDER...", file=sys.stderr)
        return 2
    model = Model(argv[0])
    paths = [image for item in argv[1:] for image in images_under(Path(item))]
    print("path,label,probability")
    batch: list[tuple[Path, np.ndarray]] = []
    predicted = 0
    for index, path in enumerate(paths):
        try:
            batch.append((path, model.pixels(path)))
        except ValueError as exc:
            print(f"onnx_predict: skipped {path}: {exc}", file=sys.stderr)
        if batch and (len(batch) == 32 or index == len(paths) - 1):
            for found, label, probability in model.predict([p for p, _ in batch], [x for _, x in batch]):
                print(f"{found},{label},{probability:.4f}")
            predicted += len(batch)
            batch = []
    return 0 if predicted else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        sys.stderr.close()
        sys.exit(0)
