"""Seeded within-class sampling: one helper behind every split, few-shot draw and cross-validation fold."""
from __future__ import annotations

import numpy as np


def ranked_by_class(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `labels` in a random order (one permutation from `rng`) grouped by class, and each
    one's rank within its class: taking rank < n keeps n random rows of every class."""
    order = rng.permutation(len(labels))
    keys = labels[order]
    if keys.dtype.kind in "iu" and len(keys) and 0 <= keys.min() and keys.max() < 1 << 16:
        keys = keys.astype(np.uint16)  # the same order: a stable sort of 16-bit keys is a radix sort (1M: 4x faster)
    order = order[np.argsort(keys, kind="stable")]
    grouped = labels[order]
    return order, np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")


def stratified_folds(codes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of every row: each class's rows dealt round-robin over the folds in a seeded random order."""
    order, rank = ranked_by_class(codes, np.random.default_rng(seed))
    folds = np.empty(len(codes), dtype=np.int64)
    folds[order] = rank % n_folds
    return folds


def stratified_sample(codes: np.ndarray, n: int, seed: int, least: int = 3) -> np.ndarray | None:
    """Positions (sorted) of a seeded sample of about `n` rows, every class in proportion to its size but at
    least `least` rows of it where it has them; None when there are no more than `n` rows."""
    if len(codes) <= n:
        return None
    counts = np.bincount(codes)
    keep = np.maximum(np.minimum(counts, least), np.round(counts * (n / len(codes))).astype(np.int64))
    order, rank = ranked_by_class(codes, np.random.default_rng(seed))
    return np.sort(order[rank < keep[codes[order]]])
