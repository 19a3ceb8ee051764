"""A fitted classifier to and from its file: what the estimator records (its settings, classes, encoder, the
plug-ins of its stages), each component's own part (``state`` / ``restore``), and the checks that a file's parts
agree with each other. The file format itself (layout, checksum, versions) is ``imprint.io.classifier_file``."""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from imprint.core.errors import printable, quoted
from imprint.core.machine import resolve_device
from imprint.core.settings import AUTO, SETTINGS
from imprint.estimator.calibration import Calibration
from imprint.estimator.configuration import SLOT_NAMES, check_settings
from imprint.estimator.open_set import OpenSet
from imprint.estimator.pipeline import Pipeline
from imprint.estimator.provenance import Provenance
from imprint.estimator.taught import Examples
from imprint.estimator.tuning import Tuning
from imprint.io.classifier_file import ClassifierFileError, read_classifier, write_classifier

MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # a plug-in hint read from a file


def save(clf: Any, path: str | os.PathLike) -> None:
    """Write a fitted classifier (`clf`) to `path`, atomically, with every component's part."""
    check_is_fitted(clf)
    meta = {"settings": recorded_settings(clf), "classes": list(clf.classes_),
            "embedding_dim": int(clf.n_features_in_), "encoder": clf.encoder_id_, "plugins": plugins_of(clf),
            "active": SETTINGS.active(clf.pipeline_.settings), "threshold": None, "text_scale": None}
    parts = [clf.pipeline_.state(), (clf.tuning_.state(), {}), (clf.calibration_.state(), {})]
    if clf.open_set_ is not None and clf.open_set_.rejector is not None:
        parts.append(clf.open_set_.state())
    if clf.examples_ is not None:
        parts.append(clf.examples_.state(clf.classes_))
    if clf.provenance_ is not None:
        parts.append(clf.provenance_.state())
    write_classifier(path, meta, parts)


def recorded_settings(clf: Any) -> dict[str, Any]:
    """The settings a file records: every setting but the device, less those only plug-in stages this classifier
    does not use declare (a plug-in imported for another classifier must not be needed to load this one)."""
    chosen = set(SETTINGS.selected(clf.pipeline_.settings))
    kept = {}
    for name, value in clf.get_params().items():
        users = SETTINGS.users(name)
        foreign = users and not chosen & set(users) and \
            all(not SETTINGS.registry_of(kind).entry(stage).builtin for kind, stage in users)
        if name != "device" and not foreign:
            kept[name] = value
    return kept


def plugins_of(clf: Any) -> dict[str, str]:
    """Modules outside imprint that define the stages `clf` uses, by setting."""
    out = {}
    for slot, registry in SETTINGS.slots.items():
        value = getattr(clf, slot)
        if value is None:
            continue
        names = value.split("+") if SETTINGS[slot].chain else [value]
        modules = [registry.entry(n).module for n in names if not registry.entry(n).builtin]
        if modules:
            out[slot] = modules[0]
    return out


def load(cls: type, path: str | os.PathLike, expected_dim: int | None = None, device: str = "auto") -> Any:
    """A classifier of class `cls` read from `path`; `expected_dim` checks the embedding width. The file names
    its stages and never runs code: a stage from a plug-in needs its module imported first."""
    resolve_device(device)  # a device this machine lacks is the caller's mistake, not the file's
    meta, arrays = read_classifier(path)
    try:
        return _restore(cls, path, meta, arrays, expected_dim, device)
    except ClassifierFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
        reason = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
        raise ClassifierFileError(f"{printable(path)} is an incomplete or inconsistent classifier file "
                                  f"({reason}); refit or restore it from a copy") from None


def _restore(cls: type, path: Any, meta: dict, arrays: dict[str, np.ndarray], expected_dim: int | None,
             device: str) -> Any:
    settings = restored_settings(path, meta)
    dim = int(meta["embedding_dim"])
    if expected_dim is not None and dim != expected_dim:
        raise ClassifierFileError(f"{path} was fitted on {dim}-dimensional embeddings but {expected_dim} were "
                                  "expected; use the encoder it was fitted with")
    clf = cls(**dict(settings, device=device))
    params = check_settings(clf._params())
    tensors = {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}
    clf.tuning_ = Tuning.restore(meta, params)
    clf.calibration_ = Calibration.restore(meta, params)
    clf.device_ = resolve_device(device)
    clf.classes_ = np.asarray(meta["classes"])
    clf.n_features_in_ = dim
    clf.encoder_id_ = meta.get("encoder")
    resolved = clf.tuning_.resolved(params)
    check_stage_options(path, meta, resolved)
    clf.pipeline_ = Pipeline.restore(meta, tensors, resolved, clf.device_, len(clf.classes_))
    if clf.pipeline_.metric.proxies.shape[1] != (clf.pipeline_.norm_inf.output_dim or dim):
        raise ClassifierFileError(f"{path} is inconsistent: proxies of width "
                                  f"{clf.pipeline_.metric.proxies.shape[1]} for {dim}-dimensional embeddings")
    clf.open_set_ = None
    clf.examples_ = Examples.restore(tensors, clf.classes_, dim)
    clf.provenance_ = Provenance.restore(meta, arrays)
    saved = clf.pipeline_.stage_arrays()
    if clf.reject is not None:
        clf.open_set_ = OpenSet.restore(clf.reject, clf.reject_rate, meta, tensors, clf.device_)
        saved["reject"] = clf.open_set_.stage_arrays()
    for slot, needed in saved.items():  # every stage has exactly the arrays it needs, no more
        listed = [sorted(part["tensors"]) for part in meta["stages"][slot]]
        if listed != needed:
            raise ClassifierFileError(f"{path} is inconsistent: its {slot} stage lists the arrays {listed} but "
                                      f"needs {needed}; refit or restore it")
    return clf


def restored_settings(path: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The settings of a checked classifier file, once every stage it names is registered here (a plug-in's
    module named, when it is a valid module name) and every setting its format records is there."""
    shown = printable(path)
    settings = meta["settings"]
    version = meta["format_version"]
    required = [*(name for name in SLOT_NAMES if name != "reject"), *(["reject"] if version >= 3 else []),
                *(meta.get("active") or [] if version >= 3 else [])]
    missing = [name for name in required if name not in settings and name != "device"]
    if missing or (version >= 3 and meta.get("active") is None):
        raise ClassifierFileError(f"{shown} is an incomplete classifier file (its settings lack "
                                  f"{quoted(missing[0] if missing else 'active', 40)}); refit or restore it")
    for slot, registry in SETTINGS.slots.items():
        value = settings.get(slot, SETTINGS[slot].default)
        if value is not None and not isinstance(value, str):
            raise ClassifierFileError(f"{shown} is an inconsistent classifier file ({slot} must be a stage name)")
        for name in (value.split("+") if SETTINGS[slot].chain and value else [value]):
            if value is not None and name not in registry:
                module = meta.get("plugins", {}).get(slot)
                hint = "it is not a stage of this imprint version"
                if isinstance(module, str) and MODULE_NAME.fullmatch(module):
                    hint = f"import {module} before loading (command line: --plugin {module})"
                elif module:
                    hint = "the file names a plug-in module that is not a valid module name"
                raise ClassifierFileError(f"{shown} uses {slot} {quoted(name, 60)}, which is not registered here: "
                                          f"{hint}")
    return settings


def check_stage_options(path: Any, meta: dict, resolved: dict[str, Any]) -> None:
    """Stage options that are settings must be valid values and the values the settings say."""
    for slot, parts in meta["stages"].items():
        for part in parts:
            for name, value in part["options"].items():
                if name not in SETTINGS or name == "seed":
                    continue
                try:
                    SETTINGS[name].check(value)
                except ValueError:
                    raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                              f"{name}={quoted(value, 40)}, not a valid value") from None
                expected = resolved.get(name, AUTO)
                if not isinstance(expected, str) or expected != AUTO:
                    if expected != value and not hasattr(expected, "per_class"):
                        raise ClassifierFileError(f"{printable(path)} is inconsistent: its {slot} stage has "
                                                  f"{name}={quoted(value, 40)} but its settings say "
                                                  f"{quoted(expected, 40)}")
