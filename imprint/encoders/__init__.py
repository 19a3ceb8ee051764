"""Frozen image encoders, named by id: ``timm:NAME`` (default: the offline EfficientNet-Lite0)."""
from imprint.encoders.base import Encoder, EncoderError
from imprint.encoders.factory import DEFAULT_ENCODER, create_encoder

__all__ = ["DEFAULT_ENCODER", "Encoder", "EncoderError", "create_encoder"]
