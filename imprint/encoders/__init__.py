"""Frozen image encoders, named by id: ``timm:NAME`` (default: the offline EfficientNet-Lite0)."""
from imprint.encoders.base import Encoder
from imprint.encoders.factory import DEFAULT_ENCODER, create_encoder
from imprint.encoders.timm_backend import EncoderError

__all__ = ["DEFAULT_ENCODER", "Encoder", "EncoderError", "create_encoder"]
