"""Classifier files: safetensors arrays + JSON metadata in one file, no pickle, checked when read.

The file names its stages (a word per slot, with their options and fitted arrays); it never holds code.
Loading looks each stage up in the registries, so a stage from a plug-in needs its module imported first;
a missing one is named in a one-line error. A SHA-256 of the arrays is stored and verified, so a file
altered on disk is refused rather than used. Version 1 files (imprint 0.1) are read and upgraded.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from imprint.atomic import atomic_write_bytes

FORMAT = "imprint-classifier"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class ClassifierFileError(ValueError):
    """A classifier file that cannot be used: corrupt, truncated, altered, foreign, too new or the wrong width."""


def tensors_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, types, shapes and bytes of the arrays, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_classifier(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write `meta` (JSON) and `arrays` to `path` atomically, with the format, version and digest added."""
    arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "sha256": tensors_digest(arrays)}
    return atomic_write_bytes(path, safetensors_bytes(arrays, metadata={"imprint": json.dumps(header)}))


def read_classifier(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a classifier file, or a ClassifierFileError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClassifierFileError(f"{path} is not a readable classifier file (corrupt or truncated): {reason}") \
            from None
    try:
        meta = json.loads(header["imprint"])
        assert meta["format"] == FORMAT
    except Exception:
        raise ClassifierFileError(f"{path} is a safetensors file but not an imprint classifier") from None
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ClassifierFileError(f"{path} has classifier format version {version}; this imprint reads versions "
                                  f"{', '.join(map(str, READABLE_VERSIONS))}"
                                  + (": upgrade imprint (pip install -U imprint) or refit" if newer else ": refit"))
    if version >= 2 and meta.get("sha256") != tensors_digest(tensors):
        raise ClassifierFileError(f"{path} has been altered or damaged since it was written (its arrays do not match "
                                  "their checksum); refit or restore the file from a copy")
    return (upgrade_v1(meta, tensors) if version == 1 else (meta, tensors))


def upgrade_v1(meta: dict, tensors: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """A version-1 file (stateless metrics, one NORM per point) in the version-2 layout."""
    stages = {}
    for point in ("pre", "post", "inf"):
        prefix = f"norm_{point}."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        options = dict(meta["norms"][point])
        if "reference" in options:
            options["quantile_reference"] = options.pop("reference")
        stages[f"norm_{point}"] = [{"options": options, "tensors": sorted(state)}]
        for name in list(tensors):
            if name.startswith(prefix):
                tensors[f"norm_{point}.0.{name[len(prefix):]}"] = tensors.pop(name)
    stages["metric"] = [{"options": {}, "tensors": []}]
    upgraded = {key: meta[key] for key in ("classes", "embedding_dim", "encoder", "settings")}
    return {**upgraded, "format_version": 1, "stages": stages, "tuned": {},
            "proxy_ratio": meta.get("proxy_ratio"), "plugins": {}}, tensors
