"""The evaluation protocol: embed a dataset once, then draw disjoint support / validation / test sets.

Test images are fixed per dataset (the official test split when there is one, else held out with a
fixed seed), so every seed and variant is scored on the same images; validation and support images
are drawn per seed from the remaining pool. Nothing is tuned on test images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.core.atomic import atomic_write_bytes
from imprint.core.errors import UserError
from imprint.core.sampling import ranked_by_class
from imprint.data.builtin import DATASETS, folder_of, load_dataset
from imprint.data.tasks import resolve_task
from imprint.encoders.base import Encoder
from imprint.grid.config import DatasetSpec
from imprint.io.cache import EmbeddingCache, encoder_namespace, image_key

DATA_SEED = 0  # which images form the pool and the test set: fixed, so embeddings are computed once


class ProtocolError(UserError):
    """A dataset too small for the requested split sizes, or unreadable."""


@dataclass
class EmbeddedDataset:
    """Embeddings of a dataset's pool and test images, with integer labels into class_names; for the open-set
    protocol also the test images of other datasets (`far`), unknown to every task of this one; with zero_shot,
    the text embedding of every class name (`text`)."""

    X: np.ndarray
    y: np.ndarray
    is_test: np.ndarray
    class_names: list[str]
    far: np.ndarray | None = None
    text: np.ndarray | None = None

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        optional = {name: value for name, value in (("far", self.far), ("text", self.text)) if value is not None}
        np.savez(buffer, X=self.X, y=self.y, is_test=self.is_test, class_names=np.asarray(self.class_names),
                 **optional)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> EmbeddedDataset:
        from imprint.io.npz import checked_npz

        with checked_npz(path, what="grid embeddings file") as data:
            return cls(data["X"], data["y"], data["is_test"], data["class_names"].tolist(),
                       data["far"] if "far" in data else None, data["text"] if "text" in data else None)


def _draw(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to per_class random rows of every class, in a seeded order."""
    order, rank = ranked_by_class(labels, rng)
    return np.sort(order[rank < per_class])


def _check_counts(labels: np.ndarray, needed: int, class_names: list[str], spec: DatasetSpec, what: str) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    short = np.flatnonzero(counts < needed)
    if len(short):
        c = short[0]
        raise ProtocolError(f"dataset {spec.label}: class {class_names[c]!r} has {counts[c]} {what} image(s), "
                            f"fewer than the {needed} needed; lower val_per_class/test_per_class")


def _pool_and_test(spec: DatasetSpec, labels: np.ndarray, class_names: list[str],
                   test_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the pool (support + validation) and of the test set; with a separate test split
    the test indices refer to that split."""
    rng = np.random.default_rng(DATA_SEED)
    if test_labels is not None:
        _check_counts(labels, spec.val_per_class + 1, class_names, spec, "training")
        _check_counts(test_labels, spec.test_per_class, class_names, spec, "test")
        return _draw(labels, spec.support_per_class + spec.val_per_class, rng), _draw(test_labels,
                                                                                      spec.test_per_class, rng)
    _check_counts(labels, spec.val_per_class + spec.test_per_class + 1, class_names, spec, "")
    test = _draw(labels, spec.test_per_class, rng)
    rest = np.setdiff1d(np.arange(len(labels)), test)
    pool = rest[_draw(labels[rest], spec.support_per_class + spec.val_per_class, rng)]
    return pool, test


def _embed_array(encoder: Encoder, images: np.ndarray, cache: EmbeddingCache | None) -> np.ndarray:
    """Embeddings of in-memory images, each one read from the cache where it is there (by its pixels), the rest
    embedded and kept."""
    if cache is None:
        return encoder.encode_images(images) if len(images) else np.zeros((0, encoder.embedding_dim), np.float32)
    namespace, keys = encoder_namespace(encoder), [image_key(image) for image in images]
    out, found = cache.get_images(namespace, keys, encoder.embedding_dim)
    todo = np.flatnonzero(~found)
    if len(todo):
        out[todo] = encoder.encode_images(images[todo])
        cache.put_images(namespace, [keys[i] for i in todo], out[todo])
    return out


def embed_dataset(encoder: Encoder, spec: DatasetSpec, cache: EmbeddingCache | None,
                  test_only: bool = False) -> EmbeddedDataset:
    """Embed the pool and test images of `spec` with `encoder` (only the test images with `test_only`),
    reusing the embedding cache."""
    folder = spec.folder if spec.name is None else folder_of(spec.name)
    if folder is None:
        data = load_dataset(spec.name)
        test_split = DATASETS.entry(spec.name).traits.get("test_split")
        test_data = load_dataset(spec.name, test_split) if test_split else None
        pool, test = _pool_and_test(spec, data.labels, list(data.class_names),
                                    test_data.labels if test_data is not None else None)
        if test_only:
            pool = pool[:0]
        source = test_data if test_data is not None else data
        X = np.concatenate([_embed_array(encoder, data.images[pool], cache),
                            _embed_array(encoder, source.images[test], cache)])
        y = np.concatenate([data.labels[pool], source.labels[test]])
        is_test = np.repeat([False, True], [len(pool), len(test)])
        return EmbeddedDataset(X, y, is_test, list(data.class_names))
    from imprint.data.folder import scan_folder
    from imprint.workflows.loader import embed_paths

    images = scan_folder(folder, strict=True)
    pool, test = _pool_and_test(spec, images.labels, images.class_names, None)
    rows = np.concatenate([pool[:0] if test_only else pool, test])
    result = embed_paths(encoder, [images.paths[i] for i in rows], cache=cache, progress=False, strict=True)
    is_test = np.repeat([False, True], [len(rows) - len(test), len(test)])
    return EmbeddedDataset(np.asarray(result.embeddings), images.labels[rows], is_test, images.class_names)


def unknown_test_images(encoder: Encoder, specs: list[DatasetSpec], cache: EmbeddingCache | None) -> np.ndarray:
    """The test embeddings of other datasets, pooled: images of none of a task's classes (far out of distribution)."""
    parts = [embed_dataset(encoder, spec, cache, test_only=True) for spec in specs]
    return np.concatenate([part.X[part.is_test] for part in parts]) if parts else \
        np.zeros((0, encoder.embedding_dim), dtype=np.float32)


@dataclass
class Split:
    """Support, validation and test rows for one task and seed, labels renumbered 0..C-1 by task order."""

    support: np.ndarray
    val: np.ndarray
    test: np.ndarray
    labels: np.ndarray  # task label of every row of the dataset (-1 outside the task)
    near: np.ndarray  # test rows of the dataset's other classes: unknown to this task (near out of distribution)
    classes: np.ndarray  # the dataset's class index of each task label


def split(data: EmbeddedDataset, spec: DatasetSpec, task, shots: int | str, seed: int) -> Split:
    """Per seed: validation images first, then `shots` support images per task class, from the pool."""
    classes = resolve_task(task, data.class_names, spec.label)
    remap = np.full(len(data.class_names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    labels = remap[data.y]
    pool = np.flatnonzero((labels >= 0) & ~data.is_test)
    order, rank = ranked_by_class(labels[pool], np.random.default_rng(seed))
    order = pool[order]
    val = order[rank < spec.val_per_class]
    limit = np.inf if shots == "all" else spec.val_per_class + shots
    support = order[(rank >= spec.val_per_class) & (rank < limit)]
    test = np.flatnonzero((labels >= 0) & data.is_test)
    return Split(support, val, test, labels, np.flatnonzero((labels < 0) & data.is_test), np.asarray(classes))
