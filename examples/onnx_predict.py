"""Predict a folder of images with a classifier exported by `imprint export`, with only onnxruntime, numpy and
Pillow installed (no torch, no imprint):

    imprint export fashion.safetensors -o fashion.onnx
    python examples/onnx_predict.py fashion.onnx examples/fashion/bag

Each image is resized and centre-cropped as the encoder's preprocessing does it (the model's metadata says how),
then the graph gives the class scores, the calibrated probabilities, the best class and, where the classifier
rejects, whether the image is accepted.
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
        """H x W x 3 uint8: the image as RGB, its shortest side resized, the centre cropped."""
        with Image.open(path) as image:
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

    def predict(self, paths: list[Path]) -> list[tuple[Path, str, float]]:
        """(path, class or the unknown label, probability of the best class) per image."""
        answers = dict(zip(self.outputs, self.session.run(None, {"images": np.stack([self.pixels(p) for p in paths])})))
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
    for start in range(0, len(paths), 32):
        for path, label, probability in model.predict(paths[start:start + 32]):
            print(f"{path},{label},{probability:.4f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        sys.stderr.close()
        sys.exit(0)
