"""open_clip models: image embeddings, and text embeddings for zero-shot proxies from class names."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from imprint.core.errors import UserError
from imprint.encoders.base import Encoder, EncoderError, reproducible_init
from imprint.encoders.timm_backend import _file_sha256

DEFAULT_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a close-up photo of a {}.", "a cropped photo of a {}.",
    "a bright photo of a {}.", "a dark photo of a {}.", "a photo of the large {}.", "a photo of the small {}.",
    "a drawing of a {}.", "a low resolution photo of a {}.",
)


def read_templates(path: str | Path) -> list[str]:
    """Prompt templates from a text file, one per line, each with one '{}' for the class name."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise UserError(f"{path}: every template needs exactly one '{{}}' for the class name; "
                         f"bad: {bad[:1] or 'none given'}")
    return templates


HUB_HOST = ("huggingface.co", 443)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _check_weights_reachable(name: str, tag: str, spec: str) -> None:
    """Fail in a few seconds, in one line, where the weights of a pretrained tag are neither in the local
    Hugging Face cache nor downloadable (no network): open_clip would retry for about a minute, logging each
    attempt. Says how to use a local file instead."""
    import socket

    import open_clip

    config = open_clip.get_pretrained_cfg(name, tag) or {}
    hub = (config.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(hub, filename), str) for filename in WEIGHT_FILES):
            return  # cached: loads without the network
    elif not config.get("url"):
        return  # not a known tag: open_clip says so
    try:
        socket.create_connection(HUB_HOST, timeout=3).close()
    except OSError:
        source = f"https://huggingface.co/{hub}" if hub else config.get("url")
        raise EncoderError(f"open_clip:{spec}: its weights are not in the local cache and the hub cannot be reached "
                           f"from this machine; download the weights file where there is a network ({source}) and "
                           f"name it as the encoder: open_clip:{name}/PATH/TO/open_clip_pytorch_model.bin "
                           "(encoder= in Python, --encoder on the command line)") from None


class OpenClipEncoder(Encoder):
    """An open_clip model: ``open_clip:MODEL/TAG`` (a pretrained tag, downloaded as usual),
    ``open_clip:MODEL/PATH`` (a local checkpoint), ``open_clip:MODEL/random`` or ``open_clip:hf-hub:ORG/NAME``.
    """

    def __init__(self, spec: str, device: torch.device) -> None:
        import open_clip

        if spec.startswith("hf-hub:"):
            name, weights = spec, None
        else:
            name, _, weights = spec.partition("/")
            if not weights:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none known"
                raise EncoderError(f"name the weights: open_clip:{name}/TAG (tags: {tags}), "
                                   f"open_clip:{name}/PATH_TO_CHECKPOINT or open_clip:{name}/random")
        if name not in open_clip.list_models() and not name.startswith("hf-hub:"):
            raise EncoderError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
        self._weights_file = Path(weights) if weights and Path(weights).is_file() else None
        if weights and self._weights_file is None and weights != "random" and "/" not in weights:
            _check_weights_reachable(name, weights, spec)
        elif weights and "/" in weights and self._weights_file is None:
            raise EncoderError(f"checkpoint not found: {weights} (open_clip:MODEL/PATH names a local weights file)")
        try:
            with reproducible_init():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=None if weights == "random" else weights, device=device)
        except Exception as exc:  # unknown tag, unreachable hub, unreadable checkpoint
            raise EncoderError(f"cannot load open_clip model {spec!r}: {str(exc).splitlines()[0]}") from None
        self.device = device
        self.model = model.eval()
        self.transform = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.embedding_dim = int(model.visual.output_dim)
        self.weights = weights or "hf-hub"
        self.id = f"open_clip:{spec}"

    @property
    def weights_id(self) -> str:
        if self._weights_file is not None:
            return "sha256:" + _file_sha256(str(self._weights_file))
        return self.id

    def _forward(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def _forward_module(self) -> nn.Module:
        return self.model.visual  # encode_image is the image tower's forward

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings (float32), in the same space as the image embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens).float().cpu().numpy()

    def text_proxies(self, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
        """Zero-shot weights: per class, the normalised mean of its normalised prompt embeddings."""
        prompts = [template.format(name) for name in class_names for template in templates]
        emb = self.encode_text(prompts).reshape(len(class_names), len(templates), -1)
        emb /= np.linalg.norm(emb, axis=2, keepdims=True)
        mean = emb.mean(axis=1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def class_name_proxies(encoder: Encoder, class_names: Sequence[str], templates_file: str | Path | None = None
                       ) -> np.ndarray:
    """Zero-shot text embeddings of class names (folder names: '_' and '-' read as spaces), one per class."""
    if not hasattr(encoder, "text_proxies"):
        raise EncoderError(f"zero-shot text (zero_shot=True in Python, --zero-shot on the command line) needs an "
                           f"encoder with a text tower (open_clip:MODEL/TAG); {encoder.id} "
                           "has none")
    templates = read_templates(templates_file) if templates_file else DEFAULT_TEMPLATES
    readable = [name.replace("_", " ").replace("-", " ") for name in class_names]
    return encoder.text_proxies(readable, templates)
