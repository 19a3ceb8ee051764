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

from imprint.atomic import atomic_write_bytes
from imprint.embedded import Labelled, tagged


class EmbeddingsFileError(ValueError):
    """A file that is not a readable embeddings file from ``imprint embed``."""


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
    try:
        with np.load(path, allow_pickle=False) as stored:
            X, labels = stored["embeddings"], stored["labels"]
            paths = stored["paths"].tolist() if "paths" in stored else None
            encoder = str(stored["encoder"]) if "encoder" in stored else None
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise EmbeddingsFileError(f"{path} is not an embeddings file from 'imprint embed' ({exc}); "
                                  "write one with: imprint embed FOLDER -o FILE.npz") from None
    if X.ndim != 2 or len(labels) != len(X) or (paths is not None and len(paths) != len(X)):
        raise EmbeddingsFileError(f"{path} is damaged: {X.shape} embeddings for {len(labels)} labels; embed again")
    if not np.isfinite(X).all():
        raise EmbeddingsFileError(f"{path} is damaged: it holds non-finite embeddings; embed again")
    return Labelled(tagged(X.astype(np.float32, copy=False), encoder), labels.astype(object), encoder, paths)
