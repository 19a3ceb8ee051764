"""imprint: training-free transfer learning by weight imprinting (the IMPRINT framework).

The public names are imported on first use, so ``import imprint.cli`` (and ``imprint info``) does not pay for
torch when it does not need it.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from imprint.core import moved

__version__ = "0.3.0"
moved.install()  # the module paths of imprint 0.2 still import (with a DeprecationWarning)
_PUBLIC = {
    "ImprintClassifier": "imprint.estimator.classifier",
    "ImprintedModel": "imprint.estimator.torch_module",
    "fit_folder": "imprint.workflows.fit",
    "embed_folder": "imprint.workflows.embed",
    "evaluate_folder": "imprint.workflows.evaluate",
    "predict_images": "imprint.workflows.predict",
    "inspect_data": "imprint.analysis.inspection",
    "UserError": "imprint.core.errors",
    "ClassifierFileError": "imprint.io.classifier_file",
    "UnknownStageError": "imprint.core.settings",
    "Embeddings": "imprint.core.embedded",
    "PRESETS": "imprint.core.presets",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'imprint' has no attribute {name!r}")
