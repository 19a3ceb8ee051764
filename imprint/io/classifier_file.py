"""Classifier files: safetensors arrays + JSON metadata in one file, no pickle, checked when read.

The file names its stages (a word per slot, with their options and fitted arrays); it never holds code.
Loading looks each stage up in the registries, so a stage from a plug-in needs its module imported first;
a missing one is named in a one-line error. A SHA-256 over the metadata and the arrays is stored (formats 3
and 4) and verified, so a file altered on disk (its arrays, or its class names, settings or format fields) is
refused rather than used. Format 4 (imprint 0.3) keeps the calibration (``calibration``) and the record of how
settings were chosen (``tuning``) apart from the chosen values (``tuned``), and what the classifier was fitted on
(``fitted_on``, ``support.digests``). Files of formats 1 (imprint 0.1), 2 (arrays checksummed) and 3 are read
and upgraded, but only when they really are of that format.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from imprint.core.atomic import atomic_write_bytes
from imprint.core.errors import UserError, printable

FORMAT = "imprint-classifier"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
HEADER_LIMIT = 1 << 27  # a classifier's JSON header is far smaller; a larger one is not a classifier file


class ClassifierFileError(UserError):
    """A classifier file that cannot be used: corrupt, truncated, altered, foreign, too new or the wrong width."""


def tensors_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, types, shapes and bytes of the arrays, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_digest(header: dict, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (every field but the digest itself, as canonical JSON) and the arrays."""
    fields = {key: value for key, value in header.items() if key != "digest"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode())
    digest.update(tensors_digest(arrays).encode())
    return digest.hexdigest()


def is_classifier_file(path: str | os.PathLike) -> bool:
    """Whether `path` is an imprint classifier file (its safetensors header names the format), read cheaply."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= HEADER_LIMIT:
                return False
            header = json.loads(handle.read(size))
        return json.loads(header["__metadata__"]["imprint"]).get("format") == FORMAT
    except Exception:  # unreadable, not JSON, not a mapping: not one of ours
        return False


@dataclass
class FileSummary:
    """What a classifier file records, read and checked without building anything (no torch): for
    ``imprint info`` and anything else that describes a file."""

    format_version: int
    encoder: str | None
    embedding_dim: int
    classes: list[Any]
    proxy_counts: list[int]
    settings: dict[str, Any]
    active: list[str]  # the settings that matter for its stages
    tuned: dict[str, Any]  # values chosen on the support set, how they were chosen, the calibrated temperature
    proxy_ratio: float | None  # k="auto": proxies per support sample
    threshold: float | None  # rejection threshold, with a rejection score
    text_classes: int | None  # classes with a zero-shot text weight, with a text blend
    text_scale: float | None
    fitted_on: dict[str, Any] | None  # the source, the held-out accuracy (imprint.estimator.provenance), or None
    support_images: int | None  # distinct support images whose digests it records, or None


def summarize(path: str | os.PathLike) -> FileSummary:
    """The checked contents of a classifier file, in words a description can use."""
    meta, arrays = read_classifier(path)
    settings = meta["settings"]
    text, digests = arrays.get("text.weights"), arrays.get("support.digests")
    return FileSummary(meta["format_version"], meta.get("encoder"), meta["embedding_dim"], meta["classes"],
                       np.asarray(arrays["proxy_counts"]).astype(int).tolist(), settings,
                       list(meta.get("active") or settings), _chosen(meta), meta.get("proxy_ratio"),
                       meta.get("threshold"), None if text is None else len(text), meta.get("text_scale"),
                       meta.get("fitted_on"), None if digests is None else len(digests))


def _chosen(meta: dict[str, Any]) -> dict[str, Any]:
    """What a file says was chosen on the support set, in one mapping for a description: the values, how they were
    chosen and, where it was calibrated, the temperature."""
    chosen = {**(meta.get("tuned") or {}), **(meta.get("tuning") or {})}
    if meta["settings"].get("temperature") == "auto" and meta.get("calibration"):
        chosen["temperature"] = meta["calibration"]["temperature"]
    return chosen


def write_classifier(path: str | os.PathLike, meta: dict[str, Any],
                     parts: list[tuple[dict[str, Any], dict[str, np.ndarray]]]) -> Path:
    """Write a classifier file atomically: the estimator's `meta` and each component's part (its header fields,
    its fitted stages merged under "stages", its arrays), with the format, version and digest added.

    The layout: header fields settings, classes (labels), embedding_dim, encoder, plugins, active (the settings
    that matter), stages (per pipeline point, each stage's options and array names), tuned, proxy_ratio,
    threshold, text_scale, fitted_on; arrays proxies, proxy_counts, POINT.I.NAME (stage arrays), text.weights,
    support, support_codes, calibration.scores, calibration.margins, examples*, support.digests."""
    header = dict(meta, settings=json_ready(meta["settings"], "settings"),
                  classes=[json_label(c) for c in meta["classes"]], stages={})
    arrays: dict[str, np.ndarray] = {}
    for part_meta, part_arrays in parts:
        for key, value in part_meta.items():
            if key == "stages":
                header["stages"].update(value)
            else:
                header[key] = json_ready(value, key) if key == "tuned" else value
        arrays.update(part_arrays)
    arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    header = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **header}))  # as read back
    header["digest"] = file_digest(header, arrays)
    return atomic_write_bytes(path, safetensors_bytes(arrays, metadata={"imprint": json.dumps(header)}))


def json_label(label: object) -> object:
    """A class label as the file stores it (a plain word or number), or a one-line error."""
    value = label.item() if isinstance(label, np.generic) else label
    if not isinstance(value, (str, int, float, bool)):
        raise UserError(f"class label {label!r} ({type(label).__name__}) cannot be saved; "
                         "use str, int, float or bool labels")
    return value


def json_ready(values: dict[str, Any], what: str) -> dict[str, Any]:
    """Setting values as the file stores them (plain words and numbers), or a one-line error."""
    out = {}
    for name, value in values.items():
        value = value.item() if isinstance(value, np.generic) else value
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise UserError(f"{what} {name}={value!r} cannot be saved; use plain numbers or words")
        out[name] = value
    return out


def read_header(path: str | os.PathLike, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """The metadata of a classifier file, checked as far as it goes without its arrays (found, readable, imprint's
    format, a version this imprint reads): what a command checks before anything slow. `tensors`, where given,
    receives the arrays."""
    path = Path(path)
    shown = printable(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file not found: {shown}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            if tensors is not None:
                tensors.update((name, handle.get_tensor(name)) for name in handle.keys())
    except Exception as exc:  # safetensors raises several types for damaged files
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ClassifierFileError(f"{shown} is not a readable classifier file (corrupt or truncated): {reason}") \
            from None
    try:
        meta = json.loads(header["imprint"])
        assert isinstance(meta, dict) and meta["format"] == FORMAT
    except Exception:
        raise ClassifierFileError(f"{shown} is a safetensors file but not an imprint classifier") from None
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise ClassifierFileError(f"{shown} has classifier format version {printable(version, 20)}; this imprint "
                                  f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
                                  + (": upgrade imprint (pip install -U imprint) or refit" if newer else ": refit"))
    return meta


def read_classifier(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a classifier file, checked, in the current layout; or a ClassifierFileError naming
    what is wrong."""
    tensors: dict[str, np.ndarray] = {}
    meta = read_header(path, tensors)
    shown, version = printable(path), meta["format_version"]
    altered = ClassifierFileError(f"{shown} has been altered or damaged since it was written (it does not match its "
                                  "checksum); refit or restore the file from a copy")
    if version >= 3 and meta.get("digest") != file_digest(meta, tensors):
        raise altered
    if version == 2 and ("digest" in meta or meta.get("sha256") != tensors_digest(tensors)):
        raise altered
    if version == 1 and not _really_version_1(meta, tensors):
        raise ClassifierFileError(f"{shown} says it is of format version 1 but does not have that format's layout; "
                                  "it was altered: refit or restore the file from a copy")
    if version == 1:
        meta, tensors = upgrade_v1(meta, tensors)
    check_header(meta, tensors, shown)
    return meta, tensors


def _really_version_1(meta: dict, tensors: dict[str, np.ndarray]) -> bool:
    """A format-1 file (imprint 0.1): per-point norms in `norms`, no stages, no checksum, its own tensor names."""
    norms = meta.get("norms")
    return (isinstance(norms, dict) and all(isinstance(norms.get(point), dict) for point in ("pre", "post", "inf"))
            and not {"stages", "sha256", "digest"} & set(meta)
            and all(name in ("proxies", "proxy_counts") or name.split(".")[0] in ("norm_pre", "norm_post", "norm_inf")
                    and name.count(".") == 1 for name in tensors))


def upgrade_v1(meta: dict, tensors: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """A version-1 file (stateless metrics, one NORM per point) in the current layout."""
    stages = {}
    tensors = dict(tensors)
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
    upgraded = {key: meta.get(key) for key in ("classes", "embedding_dim", "encoder", "settings")}
    return {**upgraded, "format": FORMAT, "format_version": 1, "stages": stages, "tuned": {},
            "proxy_ratio": meta.get("proxy_ratio"), "plugins": {}}, tensors


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or isinstance(value, float) and math.isfinite(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_header(meta: dict, tensors: dict[str, np.ndarray], shown: str) -> None:
    """Every field a classifier file must have, of its type, and the arrays its stages name, else one line."""
    def bad(field: str, want: str) -> ClassifierFileError:
        return ClassifierFileError(f"{shown} is an incomplete or inconsistent classifier file ({field} must be "
                                   f"{want}); refit or restore it from a copy")

    settings = meta.get("settings")
    if not isinstance(settings, dict) or not all(isinstance(k, str) and _plain(v) for k, v in settings.items()):
        raise bad("settings", "a mapping of setting names to plain values")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(_plain(c) and c is not None for c in classes):
        raise bad("classes", "a list of class labels")
    if len({type(c) for c in classes}) > 1 and not all(_number(c) for c in classes):
        raise bad("classes", "labels of one type")
    dim = meta.get("embedding_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise bad("embedding_dim", "a positive whole number")
    if meta.get("encoder") is not None and not isinstance(meta["encoder"], str):
        raise bad("encoder", "an encoder id (text) or null")
    for field in ("tuned", "plugins", "tuning"):
        value = meta.get(field) if meta.get(field) is not None else {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and _plain(v) for k, v in value.items()):
            raise bad(field, "a mapping of names to plain values")
        meta[field] = value
    for field in ("proxy_ratio", "threshold", "text_scale"):
        value = meta.get(field)
        if value is not None and not (_number(value) or field == "threshold" and value == float("inf")):
            raise bad(field, "a number or null")
    active = meta.get("active")
    if active is not None and (not isinstance(active, list) or not all(isinstance(n, str) for n in active)):
        raise bad("active", "a list of setting names")
    stages = meta.get("stages")
    if not isinstance(stages, dict):
        raise bad("stages", "a mapping of pipeline points to their fitted stages")
    for slot, parts in stages.items():
        if not isinstance(parts, list) or not all(
                isinstance(part, dict) and isinstance(part.get("options"), dict)
                and all(isinstance(k, str) and _plain(v) for k, v in part["options"].items())
                and isinstance(part.get("tensors"), list) and all(isinstance(n, str) for n in part["tensors"])
                for part in parts):
            raise bad(f"stages.{printable(slot, 40)}", "a list of stages, each with its options and tensor names")
        for i, part in enumerate(parts):
            missing = [name for name in part["tensors"] if f"{slot}.{i}.{name}" not in tensors]
            if missing:
                raise bad(f"stages.{printable(slot, 40)}", f"backed by its arrays ({printable(missing[0], 40)} "
                                                           "is missing)")
    for slot in ("norm_pre", "norm_post", "norm_inf", "metric"):
        if slot not in stages:
            raise bad("stages", f"a mapping that includes {slot}")
    for name in ("proxies", "proxy_counts"):
        if name not in tensors:
            raise bad(name, "present")
    for name, array in tensors.items():  # a NaN (re-signed, or written by a broken tool) would answer NaN for all
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise bad(printable(name, 60), "finite numbers (it holds NaN or infinity)")
    proxies, counts = tensors["proxies"], tensors["proxy_counts"]
    if proxies.ndim != 2 or proxies.dtype.kind != "f" or counts.ndim != 1 or counts.dtype.kind not in "iu" or \
            len(counts) != len(classes) or int(counts.sum()) != len(proxies) or (counts < 1).any():
        raise bad("proxies", f"one block of proxies per class ({len(classes)} classes, arrays of shapes "
                             f"{proxies.shape} and {counts.shape})")
    if len({json.dumps(c) for c in classes}) != len(classes):
        raise bad("classes", "distinct labels")
    rejects = settings.get("reject") is not None
    if rejects != ("reject" in stages) or rejects != ("calibration.scores" in tensors):
        raise bad("settings.reject", "what its stages and arrays say (whether it rejects unknown images)")
    if rejects and meta.get("threshold") is None:
        raise bad("threshold", "recorded for a classifier that rejects unknown images")
    calibration = meta.get("calibration")
    if calibration is not None and (not isinstance(calibration, dict) or not _number(calibration.get("temperature"))
                                    or calibration["temperature"] <= 0 or calibration.get("logits") not in
                                    ("scores", "log")):
        raise bad("calibration", "a positive temperature and what it divides ('scores' or 'log')")
    fitted_on = meta.get("fitted_on")
    if fitted_on is not None:
        accuracy, images = (fitted_on.get("held_out_accuracy"), fitted_on.get("held_out_images")) \
            if isinstance(fitted_on, dict) else (None, None)
        if not isinstance(fitted_on, dict) or not isinstance(fitted_on.get("source"), str) or \
                not (accuracy is None or _number(accuracy) and 0 <= accuracy <= 1) or \
                not (images is None or isinstance(images, int) and not isinstance(images, bool) and images >= 0):
            raise bad("fitted_on", "a source with the held-out accuracy (0 to 1) and image count, or null")
    digests = tensors.get("support.digests")
    if digests is not None and (digests.dtype != np.uint64 or digests.ndim != 1):
        raise bad("support.digests", "one 64-bit digest per support image")
    if "text.weights" in tensors:
        weights, scale = tensors["text.weights"], meta.get("text_scale")
        if weights.shape != (len(classes), dim) or not _number(scale) or scale <= 0:
            raise bad("text_scale", f"a positive number, with text weights of shape ({len(classes)}, {dim})")
    elif meta.get("text_scale") is not None:
        raise bad("text_scale", "null for a classifier without text weights")
