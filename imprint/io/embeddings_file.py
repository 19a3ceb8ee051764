"""The embeddings file written by ``imprint embed DIR -o FILE.npz``: embeddings, labels, paths, encoder id.

A .npz (zip) of plain arrays, no pickle; zip's CRC catches damaged members, and the arrays are checked
against each other when read.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from imprint.core.atomic import atomic_write_bytes
from imprint.core.embedded import Labelled, tagged
from imprint.core.errors import UserError, quoted
from imprint.io.npz import NpzError, checked_npz


class EmbeddingsFileError(UserError):
    """A file that is not a readable embeddings file from ``imprint embed``."""


MEMBERS = {"embeddings.npy", "labels.npy", "paths.npy", "encoder.npy"}


def is_embeddings_file(path: str | os.PathLike) -> bool:
    """Whether `path` is an embeddings file ``imprint embed`` wrote (a zip of exactly its arrays)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) == MEMBERS
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def write_embeddings_file(path: str | os.PathLike, X: np.ndarray, labels: np.ndarray, paths: list[str],
                          encoder_id: str) -> Path:
    """Write the embeddings of labelled images to `path` (.npz), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=np.asarray(X, dtype=np.float32), labels=np.asarray(labels, dtype=str),
             paths=np.asarray(paths, dtype=str), encoder=np.asarray(encoder_id))
    return atomic_write_bytes(path, buffer.getvalue())


def read_embeddings_file(path: str | os.PathLike) -> Labelled:
    """Embeddings, labels, paths and encoder of an embeddings file, checked; else an EmbeddingsFileError."""
    path = Path(path)
    fix = "write one with: imprint embed FOLDER -o FILE.npz"
    try:
        with checked_npz(path) as stored:
            X, labels = stored["embeddings"], stored["labels"]
            paths = stored["paths"].tolist() if "paths" in stored else None
            encoder = stored["encoder"] if "encoder" in stored else None
    except FileNotFoundError:
        raise
    except NpzError as exc:
        raise EmbeddingsFileError(str(exc)) from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as exc:
        reason = quoted(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)
        raise EmbeddingsFileError(f"{path} is not an embeddings file from 'imprint embed' ({reason}); {fix}") \
            from None
    if X.dtype.kind not in "fiu" or X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise EmbeddingsFileError(f"{path}: 'embeddings' must be a non-empty 2-D array of numbers; it is "
                                  f"{X.ndim}-D of {X.dtype.name} {X.shape}; {fix}")
    if labels.ndim != 1 or labels.dtype.kind not in "iuUSb" or len(labels) != len(X):
        raise EmbeddingsFileError(f"{path}: 'labels' must be one label (a word or an integer) per embedding; it is "
                                  f"{labels.ndim}-D of {labels.dtype.name} {labels.shape} for {len(X)} embeddings")
    if paths is not None and (not isinstance(paths, list) or len(paths) != len(X)):
        raise EmbeddingsFileError(f"{path} is damaged: its paths do not match its {len(X)} embeddings; embed again")
    if encoder is not None and (encoder.ndim != 0 or encoder.dtype.kind != "U"):
        raise EmbeddingsFileError(f"{path}: 'encoder' must be one encoder id (text); embed again")
    encoder = None if encoder is None else str(encoder)
    if labels.dtype.kind == "S":  # bytes labels (written by numpy from bytes): class names as text
        labels = np.char.decode(labels, "utf-8", "surrogateescape")
    if not np.isfinite(X).all():
        raise EmbeddingsFileError(f"{path} is damaged: it holds non-finite embeddings; embed again")
    return Labelled(tagged(X.astype(np.float32, copy=False), encoder), labels.astype(object), encoder, paths)
