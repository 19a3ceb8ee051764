"""Exact and near duplicates, within one set or across two (support and test: a leak): identical files by
content digest; near copies (resized, re-encoded, cropped) by the cosine of their embeddings or of a small
grey-level thumbnail of their pixels. A pair is a near copy when its cosine is at least the stated threshold and
it stands out from the row's neighbourhood: its distance (1 - cosine) at most STANDS_OUT times that of the row's
CANDIDATES-th nearest neighbour, so that sets of look-alike images (simulated textures, where distinct images
have embedding cosines of 0.99) do not turn into thousands of pairs. Nearest neighbours come from exact search
(FAISS when installed) over CANDIDATES per row: memory grows with rows x CANDIDATES, never rows squared."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imprint.search import nearest

THUMBNAIL = 16  # side of the grey-level pixel fingerprint
THUMBNAIL_MARGIN = 0.04  # trimmed from every side first, so a slight crop or border moves it little
CANDIDATES = 10  # nearest neighbours examined per row
STANDS_OUT = 0.5  # a near copy is at most this share of the distance to the row's CANDIDATES-th neighbour


@dataclass(frozen=True)
class Pair:
    """Rows `first` (of the first set) and `second` (of the second, or the same set) judged copies: `how` is
    "identical file", "embedding" or "pixels", `similarity` the cosine that judged them (1 for identical)."""

    first: int
    second: int
    similarity: float
    how: str


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def pixel_fingerprints(paths: Sequence[Path]) -> np.ndarray:
    """A unit-length, zero-mean grey-level thumbnail of every image (a zero row for one that cannot be read)."""
    from PIL import Image

    from imprint.data.folder import load_rgb

    out = np.zeros((len(paths), THUMBNAIL * THUMBNAIL), dtype=np.float32)
    for row, path in enumerate(paths):
        try:  # decoded as for embedding: thin images and decompression bombs are refused from the header
            grey = load_rgb(path).convert("L")
        except Exception:  # noqa: BLE001 - an unreadable image simply has no fingerprint
            continue
        w, h = grey.size
        left, top = int(w * THUMBNAIL_MARGIN), int(h * THUMBNAIL_MARGIN)
        box = (left, top, max(w - left, left + 1), max(h - top, top + 1))
        small = grey.crop(box).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
        values = np.asarray(small, dtype=np.float32).ravel()
        values -= values.mean()
        norm = np.linalg.norm(values)
        if norm > 1e-3:  # a flat image has no pattern to match
            out[row] = values / norm
    return out


def neighbours(units: np.ndarray, k: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, indices) of every unit row's max(k, CANDIDATES) + 1 nearest rows of its own set (itself
    included), best first."""
    return nearest(units, units, max(k, CANDIDATES) + 1)


def similar_pairs(first: np.ndarray, second: np.ndarray | None, threshold: float, how: str,
                  found: tuple[np.ndarray, np.ndarray] | None = None) -> list[Pair]:
    """Pairs of unit rows with cosine >= threshold that stand out from the row's neighbours: within `first`
    (each pair once) when `second` is None, else from `first` to `second`. `found`: ``neighbours(first)``
    already computed."""
    same = second is None
    base = first if same else second
    if not len(first) or not len(base):
        return []
    width = CANDIDATES + int(same)
    similarities, indices = (found[0][:, :width], found[1][:, :width]) if found is not None else \
        nearest(first, base, width)
    if similarities.shape[1] > CANDIDATES - 1 + int(same):  # enough neighbours to say what is ordinary here
        ordinary = 1.0 - similarities[:, -1:]
        close = (similarities >= threshold) & (1.0 - similarities <= STANDS_OUT * ordinary)
    else:
        close = similarities >= threshold
    pairs = []
    rows, columns = np.nonzero(close)
    for row, column in zip(rows.tolist(), columns.tolist()):
        other = int(indices[row, column])
        if other < 0 or (same and other <= row):  # itself, or a pair already seen from the other side
            continue
        pairs.append(Pair(row, other, float(min(similarities[row, column], 1.0)), how))
    return pairs


def identical_files(first: list[str | None], second: list[str | None] | None) -> list[Pair]:
    """Pairs of rows whose files have the same digest (None digests never match)."""
    seen: dict[str, list[int]] = {}
    for row, digest in enumerate(first):
        if digest is not None:
            seen.setdefault(digest, []).append(row)
    pairs = []
    if second is None:
        for rows in seen.values():
            pairs += [Pair(rows[0], other, 1.0, "identical file") for other in rows[1:]]
        return pairs
    for column, digest in enumerate(second):
        pairs += [Pair(row, column, 1.0, "identical file") for row in seen.get(digest, [])] if digest else []
    return pairs


def merge(pairs: list[Pair]) -> list[Pair]:
    """One pair per (first, second): identical files first, then the most similar."""
    order = {"identical file": 0, "embedding": 1, "pixels": 2}
    best: dict[tuple[int, int], Pair] = {}
    for pair in sorted(pairs, key=lambda p: (order[p.how], -p.similarity)):
        best.setdefault((pair.first, pair.second), pair)
    return sorted(best.values(), key=lambda p: (order[p.how], -p.similarity, p.first, p.second))


def find_duplicates(embeddings: np.ndarray, paths: list[Path] | None, *, threshold: float, pixel_threshold: float,
                    other: np.ndarray | None = None, other_paths: list[Path] | None = None,
                    found: tuple[np.ndarray, np.ndarray] | None = None) -> list[Pair]:
    """Duplicate pairs within one set (`other` None) or from it to `other`: identical files, embedding cosine
    >= `threshold`, pixel-thumbnail cosine >= `pixel_threshold` (the last two only where files are readable).
    `found`: the set's ``neighbours`` already computed (within one set only)."""
    pairs = similar_pairs(unit_rows(embeddings), None if other is None else unit_rows(other), threshold, "embedding",
                          found if other is None else None)
    if paths is not None and (other is None or other_paths is not None):
        digests = [file_digest(p) for p in paths]
        other_digests = None if other_paths is None else [file_digest(p) for p in other_paths]
        pairs += identical_files(digests, other_digests)
        thumbs = pixel_fingerprints(paths)
        other_thumbs = None if other_paths is None else pixel_fingerprints(other_paths)
        pairs += similar_pairs(thumbs, other_thumbs, pixel_threshold, "pixels")
    return merge(pairs)
