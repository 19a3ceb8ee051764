"""Module paths of imprint 0.2 that moved in 0.3, kept importable for this release: a plug-in or a program
written against ``imprint.settings`` or ``imprint.stages.metric`` still imports, with a DeprecationWarning that
names the new path. Nothing is copied: the old name reads the new module's attributes."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

MOVED = {
    "imprint.errors": "imprint.core.errors",
    "imprint.settings": "imprint.core.settings",
    "imprint.validation": "imprint.core.validation",
    "imprint.sampling": "imprint.core.sampling",
    "imprint.presets": "imprint.core.presets",
    "imprint.atomic": "imprint.core.atomic",
    "imprint.embedded": "imprint.core.embedded",
    "imprint.search": "imprint.core.search",
    "imprint.blocks": "imprint.core.blocks",
    "imprint.support": "imprint.core.support",
    "imprint.devices": "imprint.core.machine",
    "imprint.threads": "imprint.core.machine",
    "imprint.memory": "imprint.core.machine",
    "imprint.clustering": "imprint.stages.kmeans",
    "imprint.auto_k": "imprint.stages.auto_k",
    "imprint.text_blend": "imprint.estimator.text_blend",
    "imprint.openset.rejection": "imprint.estimator.open_set",
    "imprint.openset.metrics": "imprint.openset.measures",
    "imprint.persistence": "imprint.io.classifier_file",
    "imprint.embeddings_file": "imprint.io.embeddings_file",
    "imprint.npz": "imprint.io.npz",
    "imprint.store": "imprint.io.store",
    "imprint.cache": "imprint.io.cache",
    "imprint.formats": "imprint.io.text_formats",
    "imprint.outputs": "imprint.io.outputs",
    "imprint.pictures": "imprint.io.png",
    "imprint.configuration": "imprint.estimator.configuration",
    "imprint.classifier": "imprint.estimator.classifier",
    "imprint.pipeline": "imprint.estimator.pipeline",
    "imprint.tuning": "imprint.estimator.tuning",
    "imprint.calibration": "imprint.estimator.calibration",
    "imprint.examples": "imprint.estimator.taught",
    "imprint.provenance": "imprint.estimator.provenance",
    "imprint.model": "imprint.estimator.torch_module",
    "imprint.export_module": "imprint.estimator.onnx_module",
    "imprint.sources": "imprint.workflows.sources",
    "imprint.embedder": "imprint.workflows.embedder",
    "imprint.embed": "imprint.workflows.loader",
    "imprint.distributed": "imprint.workflows.ray",
    "imprint.evaluation": "imprint.workflows.evaluate",
    "imprint.predictions": "imprint.workflows.predict",
    "imprint.export": "imprint.workflows.export",
    "imprint.deployed": "imprint.workflows.deployed",
    "imprint.fewshot": "imprint.workflows.fewshot",
    "imprint.info": "imprint.workflows.info",
    "imprint.collapse": "imprint.analysis.collapse",
    "imprint.collapse.metrics": "imprint.analysis.collapse.metrics",
    "imprint.inspection": "imprint.analysis.inspection",
    "imprint.report": "imprint.grid.report",
}


class Moved(types.ModuleType):
    """An old module name that reads the attributes of the module it moved to."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, f"moved to {target}")
        self.__dict__["_target"] = target
        if any(old.startswith(name + ".") for old in MOVED):  # its old submodules are found by name, here
            self.__dict__["__path__"] = []

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__dict__["_target"]), attribute)


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of MOVED."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return Moved(spec.name, MOVED[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(f"{module.__name__} moved to {MOVED[module.__name__]} in imprint 0.3; import it from there "
                      "(the old name goes in the next release)", DeprecationWarning, stacklevel=3)


def install() -> None:
    """Put the finder of old names on the import path (once)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())  # first: no file of an old name is left to find elsewhere
