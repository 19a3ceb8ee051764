"""Exact and near duplicates, within one set or across two (support and test: a leak): identical files by
content digest; near copies (resized, re-encoded, cropped) by the cosine of their embeddings or of grey-level
thumbnails of their pixels at two scales. A pair is a near copy when its cosine is at least the stated threshold
and it stands out from the row's neighbourhood: its distance (1 - cosine) at most a share (STANDS_OUT) of that
of the row's CANDIDATES-th nearest neighbour, so that sets of look-alike images (simulated textures, where
distinct images have embedding cosines of 0.99) do not turn into thousands of pairs. The coarse thumbnail finds
crops the others miss (a texture's 3% crop: embedding cosine 0.90-0.96 where distinct textures have 0.99, fine
thumbnail 0.79); it must stand out twice as far, and it speaks only for images whose neighbours are unlike them
at that scale (natural images of one class look alike at 8 x 8: on the bundled folder it named 24 look-alike
pairs before this rule, 1 after). Nearest neighbours come from ``imprint.core.search`` (exact, or
approximate for a large set within itself) over CANDIDATES per row: memory grows with rows x CANDIDATES, never
rows squared.

Each pair found so is then judged a **copy** (an identical file, or a near copy: resized, re-encoded, slightly
cropped) or only **very similar** (a look-alike: two different trousers, two 1s), by comparing the two images
pixel by pixel where they show something: grey views (32 x 32, smaller for small images) at the best of four
centre zooms (so a crop of a few percent lines up), a copy differing by at most COPY_LEVELS grey levels on
average, or by at most CROP_LEVELS where their embeddings also agree (cosine >= the embedding threshold).
Measured on real images (docs/inspect.md): resized and re-encoded copies differ by 0.1-6.0 levels (95% below
3.5), 3% crops by 0.9-16 (95% below 10.3), look-alikes by 6.0 and more (digits 14.5 and more, textures 20.8).
Without the images (stored embeddings whose files are gone) nothing can be called a copy: every pair is very
similar."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imprint.core.search import nearest, nearest_within

CANDIDATES = 10  # nearest neighbours examined per row
STANDS_OUT = 0.5  # a near copy is at most this share of the distance to the row's CANDIDATES-th neighbour
ALIGNED = 32  # side of the grey views compared pixel by pixel
ZOOMS = (1.0, 0.97, 0.94, 0.91)  # centre crops tried on either image, so that a slight crop lines up
ACTIVE = 16  # grey levels from its background (median) at which a pixel shows something
COPY_LEVELS = 5.0  # mean grey-level difference (of 255) where the images show something, at most, of a copy
CROP_LEVELS = 10.0  # ... of a copy whose embeddings agree too (a crop lines up less well)


@dataclass(frozen=True)
class Thumbnail:
    """A pixel fingerprint: a `side` x `side` grey thumbnail after trimming `margin` of every side (so a slight
    crop or border moves it little); `how` names its pairs, `stands_out` is their STANDS_OUT, and only rows
    whose CANDIDATES-th neighbour is at cosine <= `sparse_at_most` get pairs from it."""

    how: str
    side: int
    margin: float
    stands_out: float
    sparse_at_most: float = 1.0


FINE = Thumbnail("pixels", 16, 0.04, STANDS_OUT)  # its threshold: the caller's pixel_threshold (0.98)
COARSE = Thumbnail("coarse pixels", 8, 0.10, 0.25, sparse_at_most=0.5)
COARSE_THRESHOLD = 0.85  # measured: textile crops 0.86-0.95, distinct textures near 0 (docs/inspect.md)


@dataclass(frozen=True)
class Pair:
    """Rows `first` (of the first set) and `second` (of the second, or the same set) found alike: `how` is
    "identical file", "embedding", "pixels" or "coarse pixels", `similarity` the cosine that found them (1 for
    identical files); `copy` whether they are copies (else only very similar), `difference` their mean grey-level
    difference at the best zoom (None without the images)."""

    first: int
    second: int
    similarity: float
    how: str
    copy: bool = False
    difference: float | None = None

    def reason(self) -> str:
        """Why the pair was found and judged as it was, in words."""
        if self.how == "identical file":
            return "identical files"
        found = f"{self.how} cosine {self.similarity:.4f}"
        if self.difference is None:
            return f"{found}; no images to compare, so not known to be copies"
        judged = "a copy" if self.copy else "not a copy"
        return f"{found}; pixels differ by {self.difference:.1f} grey levels at best alignment: {judged}"


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


def pixel_fingerprints(paths: Sequence[Path], kinds: Sequence[Thumbnail]) -> list[np.ndarray]:
    """Per kind of thumbnail, a unit-length, zero-mean grey-level thumbnail of every image (a zero row for one
    that cannot be read or is flat); every image decoded once."""
    from PIL import Image

    from imprint.data.folder import load_rgb

    out = [np.zeros((len(paths), kind.side * kind.side), dtype=np.float32) for kind in kinds]
    for row, path in enumerate(paths):
        try:  # decoded as for embedding: thin images and decompression bombs are refused from the header
            grey = load_rgb(path).convert("L")
        except Exception:  # noqa: BLE001 - an unreadable image simply has no fingerprint
            continue
        w, h = grey.size
        for kind, fingerprints in zip(kinds, out):
            left, top = int(w * kind.margin), int(h * kind.margin)
            box = (left, top, max(w - left, left + 1), max(h - top, top + 1))
            small = grey.crop(box).resize((kind.side, kind.side), Image.Resampling.BOX)
            values = np.asarray(small, dtype=np.float32).ravel()
            values -= values.mean()
            norm = np.linalg.norm(values)
            if norm > 1e-3:  # a flat image has no pattern to match
                fingerprints[row] = values / norm
    return out


def small_grey(path: Path) -> Image.Image | None:
    """An image in grey, at most ALIGNED * 4 pixels on its longest side, or None when it cannot be read."""
    from imprint.data.folder import load_rgb

    try:
        grey = load_rgb(path).convert("L")
    except Exception:  # noqa: BLE001 - an unreadable image cannot be compared
        return None
    grey.thumbnail((ALIGNED * 4, ALIGNED * 4), Image.Resampling.BOX)
    return grey


def aligned_views(grey: Image.Image, side: int) -> list[np.ndarray]:
    """`side` x `side` views of a grey image at each of ZOOMS (centre crops)."""
    w, h = grey.size
    views = []
    for zoom in ZOOMS:
        left, top = w * (1 - zoom) / 2, h * (1 - zoom) / 2
        views.append(np.asarray(grey.resize((side, side), Image.Resampling.BILINEAR,
                                            box=(left, top, w - left, h - top)), dtype=np.float32))
    return views


def aligned_difference(first: Image.Image, second: Image.Image) -> float:
    """How much two grey images differ where they show something: at the best of the centre zooms of either
    against the other whole (the smallest mean difference), the mean grey-level difference over the pixels where
    either image stands out from its own background (its median) by more than ACTIVE levels, so that two thin
    strokes on black (two different 1s) are not called alike for their shared background. Compared at ALIGNED x
    ALIGNED or, for small images, at 3/5 of the smaller one's side: both are then shrunk (antialiased), never one
    shrunk and the other kept or enlarged, which alone differs by 6-9 levels for a copy at twice the size."""
    side = max(1, min(ALIGNED, int(0.6 * min(*first.size, *second.size))))
    views_a, views_b = aligned_views(first, side), aligned_views(second, side)
    candidates = [(a, views_b[0]) for a in views_a] + [(views_a[0], b) for b in views_b[1:]]
    a, b = min(candidates, key=lambda pair: float(np.abs(pair[0] - pair[1]).mean()))
    shown = (np.abs(a - np.median(a)) > ACTIVE) | (np.abs(b - np.median(b)) > ACTIVE)
    return float(np.abs(a - b)[shown].mean()) if shown.any() else float(np.abs(a - b).mean())


def judged(pairs: list[Pair], cosines: np.ndarray, paths: list[Path] | None, other_paths: list[Path] | None,
           threshold: float) -> list[Pair]:
    """The pairs, each judged a copy or only very similar by its pixels (`cosines`: each pair's embedding cosine);
    the images of pairs only are decoded again."""
    from dataclasses import replace

    if paths is None:
        return [replace(p, copy=p.how == "identical file") for p in pairs]
    second_paths = paths if other_paths is None else other_paths
    greys: dict[tuple[int, int], Image.Image | None] = {}

    def of(side: int, row: int) -> Image.Image | None:
        if (side, row) not in greys:
            greys[(side, row)] = small_grey((paths if side == 0 else second_paths)[row])
        return greys[(side, row)]

    out = []
    for pair, cosine in zip(pairs, cosines):
        if pair.how == "identical file":
            out.append(replace(pair, copy=True, difference=0.0))
            continue
        a, b = of(0, pair.first), of(0 if other_paths is None else 1, pair.second)
        if a is None or b is None:
            out.append(pair)
            continue
        difference = aligned_difference(a, b)
        copy = difference <= COPY_LEVELS or (difference <= CROP_LEVELS and cosine >= threshold)
        out.append(replace(pair, copy=copy, difference=difference))
    return out


def similar_pairs(first: np.ndarray, second: np.ndarray | None, threshold: float, how: str,
                  found: tuple[np.ndarray, np.ndarray] | None = None, stands_out: float = STANDS_OUT,
                  sparse_at_most: float = 1.0) -> list[Pair]:
    """Pairs of unit rows with cosine >= threshold that stand out from the row's neighbours (distance at most
    `stands_out` times the CANDIDATES-th neighbour's, whose cosine must be <= `sparse_at_most`): within `first`
    (each pair once) when `second` is None, else from `first` to `second`. `found`: (cosines, indices) of
    at least CANDIDATES + 1 nearest rows of `first` within itself, already searched."""
    same = second is None
    base = first if same else second
    if not len(first) or not len(base):
        return []
    width = CANDIDATES + int(same)
    if found is None:
        found = nearest_within(first, width)[:2] if same else nearest(first, base, width)
    similarities, indices = found[0][:, :width], found[1][:, :width]
    if similarities.shape[1] > CANDIDATES - 1 + int(same):  # enough neighbours to say what is ordinary here
        ordinary = 1.0 - similarities[:, -1:]
        close = (similarities >= threshold) & (1.0 - similarities <= stands_out * ordinary) & \
            (similarities[:, -1:] <= sparse_at_most)
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
    order = {"identical file": 0, "embedding": 1, FINE.how: 2, COARSE.how: 3}
    best: dict[tuple[int, int], Pair] = {}
    for pair in sorted(pairs, key=lambda p: (order[p.how], -p.similarity)):
        best.setdefault((pair.first, pair.second), pair)
    return sorted(best.values(), key=lambda p: (order[p.how], -p.similarity, p.first, p.second))


def find_duplicates(embeddings: np.ndarray, paths: list[Path] | None, *, threshold: float, pixel_threshold: float,
                    other: np.ndarray | None = None, other_paths: list[Path] | None = None,
                    found: tuple[np.ndarray, np.ndarray] | None = None) -> list[Pair]:
    """Pairs alike within one set (`other` None) or from it to `other`: identical files, embedding cosine
    >= `threshold`, fine pixel-thumbnail cosine >= `pixel_threshold`, coarse >= COARSE_THRESHOLD (the last three
    only where files are readable), each judged a copy or only very similar (``judged``).
    `found`: the set's nearest rows already searched (within one set only)."""
    first = unit_rows(embeddings)
    second = first if other is None else unit_rows(other)
    pairs = similar_pairs(first, None if other is None else second, threshold, "embedding",
                          found if other is None else None)
    if paths is not None and (other is None or other_paths is not None):
        digests = [file_digest(p) for p in paths]
        other_digests = None if other_paths is None else [file_digest(p) for p in other_paths]
        pairs += identical_files(digests, other_digests)
        kinds, thresholds = (FINE, COARSE), (pixel_threshold, COARSE_THRESHOLD)
        thumbs = pixel_fingerprints(paths, kinds)
        other_thumbs = [None] * len(kinds) if other_paths is None else pixel_fingerprints(other_paths, kinds)
        for kind, cut, mine, theirs in zip(kinds, thresholds, thumbs, other_thumbs):
            pairs += similar_pairs(mine, theirs, cut, kind.how, stands_out=kind.stands_out,
                                   sparse_at_most=kind.sparse_at_most)
    pairs = merge(pairs)
    cosines = np.einsum("ij,ij->i", first[[p.first for p in pairs]], second[[p.second for p in pairs]]) \
        if pairs else np.zeros(0)
    comparable = paths if other is None or other_paths is not None else None
    return judged(pairs, cosines, comparable, other_paths, threshold)
