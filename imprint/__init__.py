"""imprint: training-free transfer learning by weight imprinting (the IMPRINT framework).

The public names are imported on first use, so ``import imprint.cli`` (and ``imprint info``) does not pay for
torch when it does not need it.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"
_PUBLIC = {
    "ImprintClassifier": "imprint.classifier",
    "ImprintedModel": "imprint.model",
    "fit_folder": "imprint.workflows",
    "embed_folder": "imprint.workflows",
    "evaluate_folder": "imprint.evaluation",
    "predict_images": "imprint.predictions",
    "inspect_data": "imprint.inspection",
    "UserError": "imprint.errors",
    "ClassifierFileError": "imprint.persistence",
    "UnknownStageError": "imprint.settings",
    "Embeddings": "imprint.embedded",
    "PRESETS": "imprint.presets",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'imprint' has no attribute {name!r}")
