"""Saving and loading classifiers: safetensors arrays + JSON metadata in one file, no pickle."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from imprint.atomic import atomic_write_bytes
from imprint.stages.norm import NORMS, Norm

if TYPE_CHECKING:
    from imprint.classifier import ImprintClassifier

FORMAT = "imprint-classifier"
FORMAT_VERSION = 1
NORM_POINTS = ("pre", "post", "inf")


class ClassifierFileError(ValueError):
    """A classifier file that cannot be used: corrupt, truncated, foreign, too new or the wrong width."""


def _json_label(label: object) -> object:
    value = label.item() if isinstance(label, np.generic) else label
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"class label {label!r} ({type(label).__name__}) cannot be saved; "
                         "use str, int, float or bool labels")
    return value


def save_classifier(clf: ImprintClassifier, path: str | os.PathLike) -> Path:
    """Serialise a fitted classifier to `path` (written atomically)."""
    norms = {point: getattr(clf, f"norm_{point}_") for point in NORM_POINTS}
    tensors = {"proxies": torch.from_numpy(clf.proxies_), "proxy_counts": torch.from_numpy(clf.proxy_counts_)}
    for point, norm in norms.items():
        for name, value in norm.tensors().items():
            tensors[f"norm_{point}.{name}"] = value.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": clf.get_params(),
        "classes": [_json_label(c) for c in clf.classes_],
        "embedding_dim": int(clf.n_features_in_),
        "encoder": clf.encoder_id_,
        "norms": {point: norm.options() for point, norm in norms.items()},
        "proxy_ratio": getattr(clf, "proxy_ratio_", None),
    }
    return atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"imprint": json.dumps(meta)}))


def read_metadata(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and arrays of a classifier file, or a ClassifierFileError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ClassifierFileError(f"{path} is not a readable classifier file (corrupt or truncated): {exc}") from None
    try:
        meta = json.loads(header["imprint"])
        assert meta["format"] == FORMAT
    except Exception:
        raise ClassifierFileError(f"{path} is a safetensors file but not an imprint classifier") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ClassifierFileError(f"{path} has classifier format version {version}; this imprint reads version "
                                  f"{FORMAT_VERSION}: use the imprint release that wrote it, or refit")
    return meta, tensors


def load_classifier(path: str | os.PathLike, expected_dim: int | None = None,
                    device: str = "auto") -> ImprintClassifier:
    """Rebuild a fitted ImprintClassifier from `path`."""
    from imprint.classifier import ImprintClassifier

    meta, tensors = read_metadata(path)
    try:
        proxies = tensors["proxies"].numpy()
        counts = tensors["proxy_counts"].numpy()
        classes = np.asarray(meta["classes"])
        dim = int(meta["embedding_dim"])
        norms = {point: _rebuild_norm(meta["settings"][f"norm_{point}"], meta["norms"][point], point, tensors)
                 for point in NORM_POINTS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierFileError(f"{path} is an incomplete classifier file (missing {exc})") from None
    if proxies.ndim != 2 or proxies.shape[1] != dim or counts.sum() != len(proxies) or len(counts) != len(classes):
        raise ClassifierFileError(f"{path} is inconsistent: {proxies.shape} proxies, {len(classes)} classes, "
                                  f"embedding dimension {dim}")
    if expected_dim is not None and dim != expected_dim:
        raise ClassifierFileError(f"{path} was fitted on {dim}-dimensional embeddings but {expected_dim} were "
                                  "expected; use the encoder it was fitted with")
    settings = dict(meta["settings"], device=device)
    return ImprintClassifier(**settings)._restore(classes, proxies, counts, norms, meta.get("encoder"),
                                                      meta.get("proxy_ratio"))


def _rebuild_norm(name: str, options: dict, point: str, tensors: dict[str, torch.Tensor]) -> Norm:
    prefix = f"norm_{point}."
    state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    return NORMS.get(name)(**options, **state)
