"""Where labelled support data comes from: an image folder (embedded on demand), an embeddings store or an
embeddings file; and which of its rows are support and which are held out."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imprint.core.embedded import Labelled, tagged
from imprint.core.errors import UserError, printable
from imprint.data.folder import IMAGE_EXTENSIONS, FolderError, sample_shots, scan_folder, split_support_test
from imprint.workflows.embedder import Embedder


class SourceError(UserError):
    """A path that is not something imprint can learn from; the message says what it is and what to pass."""


@dataclass
class Source:
    """Labelled items (image files or stored embeddings) and a way to get the embeddings of some of them.

    ``embed(rows)`` returns (embeddings of the readable rows, mask of the rows that were readable)."""

    description: str
    labels: np.ndarray  # class name of every item
    encoder_id: str | None
    embed: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    paths: list[Path] | None = None  # the images, for a folder
    empty_classes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.labels.tolist()))


def _from_labelled(description: str, data: Labelled) -> Source:
    def embed(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        every = len(rows) == len(data.X) and bool((rows == np.arange(len(rows))).all())
        return (data.X if every else tagged(data.X[rows], data.encoder_id)), np.ones(len(rows), dtype=bool)

    return Source(description, np.asarray(data.labels, dtype=object), data.encoder_id, embed)


def check_source(path: str | os.PathLike) -> Path:
    """`path` if it can be a source (a folder, which may be a store, or a .npz file), else the one-line error that
    says what it is and what to pass; nothing inside it is read."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return path
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise SourceError(f"{path} is a single image; imprinting learns from a folder with one sub-folder per "
                              f"class ({path.parent}/<class>/<image>). To classify this image: imprint predict "
                              f"CLASSIFIER {path}")
        raise SourceError(f"{path} is a file, not an image folder, an embeddings store or a .npz embeddings file")
    if not path.exists():
        what = "embeddings file" if path.suffix.lower() == ".npz" else "image folder"
        raise FolderError(f"{what} not found: {path}")
    return path


def open_source(path: str | Path, *, embedder: Embedder | None = None, min_classes: int = 2,
                strict: bool = False) -> Source:
    """An image folder (DIR/<class>/<image>, embedded on demand by `embedder`), a store written by
    ``imprint embed DIR -o STORE`` or an embeddings file (``-o FILE.npz``). Anything else is a SourceError
    saying what the path is and what would work. Stored embeddings must come from the embedder's encoder when
    one was named."""
    from imprint.io.embeddings_file import read_embeddings_file
    from imprint.io.store import EmbeddingStore, is_store

    path = check_source(path)
    if is_store(path):
        X, labels = EmbeddingStore.open(path).labelled()
        return _stored(f"store {path}", Labelled(X, labels, X.encoder_id), path, embedder)
    if path.is_file():
        return _stored(f"embeddings file {path}", read_embeddings_file(path), path, embedder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = scan_folder(path, min_classes=min_classes, strict=strict)
    for item in caught:
        warnings.warn(str(item.message), stacklevel=2)
    if embedder is None:
        raise SourceError(f"{path} is an image folder; an encoder is needed to embed it")

    def embed(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return embedder([folder.paths[i] for i in rows])

    return Source(f"folder {path}", folder.class_labels, None, embed, folder.paths, folder.empty_classes)


def _stored(description: str, data: Labelled, path: Path, embedder: Embedder | None) -> Source:
    """A source of stored embeddings, refused when another encoder than the one asked for made them."""
    wanted = embedder.encoder_id if embedder is not None else None
    if wanted and data.encoder_id:
        from imprint.encoders.factory import ALIASES

        if ALIASES.get(wanted, wanted) != data.encoder_id:
            raise SourceError(f"{printable(path)} holds embeddings of {printable(data.encoder_id)}, not "
                              f"{printable(wanted)}; drop --encoder or embed again with it")
    return _from_labelled(description, data)


@dataclass
class Selection:
    """Support rows, held-out rows (or None) and notes worth telling the user."""

    support: np.ndarray
    test: np.ndarray | None
    notes: list[str] = field(default_factory=list)


def select(labels: np.ndarray, *, test_fraction: float | None = None, shots: int | None = None,
           seed: int = 0) -> Selection:
    """Hold out `test_fraction` of every class (seeded, stratified; a class keeps at least one support image),
    then keep `shots` support images per class."""
    codes = np.unique(labels, return_inverse=True)[1]
    names = sorted(set(labels.tolist()))
    notes: list[str] = []
    support, test = np.arange(len(labels)), None
    if test_fraction is not None:
        support, test = split_support_test(codes, test_fraction, seed=seed)
        unheld = sorted(set(names) - set(labels[test].tolist()))
        if unheld:
            notes.append(f"{len(unheld)} class(es) have too few images to hold any out and are not in the held-out "
                         f"scores: {', '.join(map(str, unheld))}")
    if shots is not None:
        if shots < 1:
            raise UserError(f"--shots must be an integer >= 1; got {shots}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            support = support[sample_shots(codes[support], shots, seed, names)]
        notes += [str(item.message) for item in caught]
    return Selection(support, test, notes)


