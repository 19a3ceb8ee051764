"""An encoder's image preprocessing in plain terms: the shortest side resized, the centre cropped, the pixels
normalised. ``Preprocess`` does it with Pillow and torch alone, the same pixels bit for bit as the torchvision
transform it describes (tests/test_runtime.py), so an encoder run from its cached ONNX graph needs neither
torchvision nor timm (whose imports take 1.6 s of a 10-image ``imprint fit``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "box": Image.BOX,
           "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}


class NotDescribable(ValueError):
    """A transform with a step ``Preprocess`` cannot stand for (the reason names it)."""


@dataclass(frozen=True)
class Preprocess:
    """Resize the shortest side to `resize` (`interpolation`), crop the centre `crop` (height, width), scale to
    [0, 1], subtract `mean` and divide by `std` per channel: an RGB image in, 3 x H x W float32 out."""

    resize: int
    interpolation: str
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.interpolation not in FILTERS:
            raise NotDescribable(f"interpolation {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise NotDescribable("a normalisation that is not per RGB channel")
        if self.resize < max(self.crop):
            raise NotDescribable(f"a crop {self.crop} larger than the resized side {self.resize} (padding)")
        object.__setattr__(self, "_mean", torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1))

    def __call__(self, image: Image.Image) -> Tensor:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        size = (self.resize, int(self.resize * long / short)) if short == width else \
            (int(self.resize * long / short), self.resize)  # (width, height), as torchvision computes it
        if size != image.size:
            image = image.resize(size, FILTERS[self.interpolation])
        crop_height, crop_width = self.crop
        top, left = int(round((size[1] - crop_height) / 2.0)), int(round((size[0] - crop_width) / 2.0))
        image = image.crop((left, top, left + crop_width, top + crop_height))
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).view(crop_height, crop_width, 3)
        return pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255).sub_(self._mean).div_(self._std)

    def describe(self) -> dict[str, Any]:
        """Its fields as JSON-ready values (a graph's metadata, an exported model's)."""
        return {**asdict(self), "crop": list(self.crop), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_description(cls, info: dict[str, Any]) -> Preprocess:
        return cls(int(info["resize"]), str(info["interpolation"]), (int(info["crop"][0]), int(info["crop"][1])),
                   tuple(float(v) for v in info["mean"]), tuple(float(v) for v in info["std"]))

    @classmethod
    def of_transform(cls, transform: Any) -> Preprocess:
        """The Preprocess a torchvision transform (Resize of the shortest side, CenterCrop, ToTensor, Normalize,
        and steps that leave an RGB image alone) stands for, or NotDescribable naming the step it cannot."""
        from torchvision import transforms

        found: dict[str, Any] = {}
        for step in getattr(transform, "transforms", [transform]):
            kind = type(step).__name__
            if isinstance(step, transforms.Resize):
                size = step.size if isinstance(step.size, int) else (step.size[0] if len(step.size) == 1 else None)
                if size is None or step.max_size is not None:
                    raise NotDescribable(f"a resize to a fixed {tuple(step.size)}, not of the shortest side")
                found["resize"], found["interpolation"] = int(size), str(step.interpolation.value)
            elif isinstance(step, transforms.CenterCrop):
                found["crop"] = tuple(int(s) for s in step.size)
            elif isinstance(step, transforms.Normalize):
                found["mean"] = tuple(float(v) for v in torch.as_tensor(step.mean).flatten())
                found["std"] = tuple(float(v) for v in torch.as_tensor(step.std).flatten())
            elif kind not in ("ToTensor", "MaybeToTensor", "MaybeConvertMode"):  # these leave RGB as it is
                raise NotDescribable(f"a {kind} step")
        missing = [key for key in ("resize", "crop", "mean", "std") if key not in found]
        if missing:
            raise NotDescribable(f"no {missing[0]} step")
        return cls(found["resize"], found["interpolation"], found["crop"], found["mean"], found["std"])
