"""One library call per command: ``fit_folder``, ``embed_folder``, ``evaluate_folder``, ``predict_images``,
``export_file``, few-shot episodes and ``describe`` (info). The command line parses arguments and calls one of
these; a program calls them the same way (the names are imported on first use)."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from imprint.core.errors import UserError

CALLS = {"fit_folder": "fit", "embed_folder": "embed", "evaluate_folder": "evaluate", "predict_images": "predict",
         "export_file": "export", "describe": "info"}


class WorkflowError(UserError):
    """A combination of options a workflow cannot do; the message says what would work."""


def __getattr__(name: str) -> Any:
    if name in CALLS:
        return getattr(import_module(f"imprint.workflows.{CALLS[name]}"), name)
    raise AttributeError(f"module 'imprint.workflows' has no attribute {name!r}")
