"""Input checks that turn user mistakes into one-line ValueErrors naming the problem and the fix."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from imprint.core.errors import UserError, UserTypeError

FINITE_BLOCK = 1 << 16  # rows per block of the finiteness check
MAX_MAGNITUDE = 1e12  # a larger value's square, summed over the features, overflows float32 (3.4e38) or nearly
MIN_MAGNITUDE = 1e-10  # a row whose values are all smaller is lost in float32 norms and variances (heads fail at 1e-15)


def check_embeddings(X: Any, *, name: str = "X", n_features: int | None = None,
                     owner: str = "ImprintClassifier", keep_dtype: bool = False) -> np.ndarray:
    """Return X as a C-contiguous float32 2-D array, or raise a ValueError that says what is wrong.

    With `keep_dtype`, a floating array (float16/32/64, memory-mapped or not) is returned as it is, not copied:
    the classifier reads it in blocks."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise UserTypeError(f"{name} is a sparse matrix; {owner} needs dense embeddings: pass {name}.toarray()")
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise UserError(f"{name} cannot be read as an array of embeddings ({exc})") from None
    if np.iscomplexobj(arr):
        raise UserError(f"Complex data not supported: {name} must be real-valued embeddings")
    if arr.dtype.kind not in "fiub":
        try:
            arr = arr.astype(np.float64)
        except ValueError as exc:
            raise UserError(f"{name} must hold numbers; could not convert to float ({exc})") from None
        except TypeError as exc:  # entries that are not even strings, e.g. dicts
            raise UserTypeError(f"{name} must hold numbers: {exc}") from None
    if arr.ndim != 2:
        hint = f"; Reshape your data: a single embedding as {name}.reshape(1, -1)" if arr.ndim == 1 else ""
        raise UserError(f"{name} must be 2-D (n_samples, n_features); "
                         f"got a {arr.ndim}-D array of shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise UserError(f"{name} is empty: 0 samples (shape {arr.shape}); pass at least one embedding")
    if arr.shape[1] == 0:
        raise UserError(f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required; "
                         "pass non-empty embeddings")
    if n_features is not None and arr.shape[1] != n_features:
        raise UserError(
            f"X has {arr.shape[1]} features, but {owner} is expecting {n_features} features as input; "
            "embed the queries with the encoder the classifier was fitted with"
        )
    if keep_dtype and arr.dtype.kind == "f":
        out = arr  # read in blocks later: no copy of a large (or memory-mapped) set
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf, reported below
            out = np.ascontiguousarray(arr, dtype=np.float32)
    finite, huge, tiny = [], [], []
    for start in range(0, len(out), FINITE_BLOCK):
        block_finite, block_huge, block_tiny = _checked_rows(out[start:start + FINITE_BLOCK])
        finite.append(block_finite)
        huge.append(block_huge)
        tiny.append(block_tiny)
    finite, huge, tiny = np.concatenate(finite), np.concatenate(huge), np.concatenate(tiny)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise UserError(
            f"{name} contains NaN or infinity (or values too large for float32) in {bad.size} row(s), "
            f"first at row {bad[0]}; drop or fix those embeddings"
        )
    for rows, problem in ((huge, f"values beyond the {MAX_MAGNITUDE:.0e} imprint's float32 arithmetic can square "
                                 "and sum"),
                          (tiny, f"values all below {MIN_MAGNITUDE:.0e} in magnitude, which float32 norms and "
                                 "variances lose")):
        if rows.any():
            bad = np.flatnonzero(rows)
            peak = float(np.abs(np.asarray(out[bad[0]], dtype=np.float64)).max())
            raise UserError(f"{name} has {bad.size} row(s) of {problem} (first at row {bad[0]}, largest magnitude "
                            f"{peak:.3g}); rescale the embeddings (e.g. divide every row by its norm)")
    return out


def _checked_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows with no NaN or infinity that also fit in float32, finite rows with a value beyond MAX_MAGNITUDE,
    finite rows not all zero whose values are all below MIN_MAGNITUDE): NaN and inf propagate into the row sums,
    and the row extremes bound the magnitudes, so no mask or copy of the whole block is needed."""
    finite = np.isfinite(block.sum(axis=1, dtype=np.float64))
    if block.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            finite &= np.abs(block).max(axis=1) <= np.finfo(np.float32).max
    with np.errstate(invalid="ignore"):
        high, low = block.max(axis=1), block.min(axis=1)
        largest = np.maximum(high, -low)
        tiny = finite & (largest < MIN_MAGNITUDE) & (largest > 0)
        if block.dtype.kind == "f" and float(np.finfo(block.dtype).max) <= MAX_MAGNITUDE:  # float16 holds none such
            return finite, np.zeros(len(block), dtype=bool), tiny
        huge = finite & ((high > MAX_MAGNITUDE) | (low < -MAX_MAGNITUDE))
    return finite, huge, tiny


def check_labels(y: Any, n_samples: int, one_per_class: bool = False) -> np.ndarray:
    """Return y as a 1-D label array of length n_samples with at least two classes. `one_per_class`: labels that
    are expected to be mostly distinct (one text embedding per class), so scikit-learn's warning that they
    look like a regression target does not apply."""
    from sklearn.utils.multiclass import check_classification_targets  # here: `imprint fit --help` and its
    from sklearn.utils.validation import column_or_1d  # argument checks import this module, not scikit-learn (1.2 s)

    if y is None:
        raise UserError("requires y to be passed, but the target y is None; pass one label per embedding")
    try:
        y = column_or_1d(y, warn=True)
    except ValueError as exc:  # scikit-learn's words for labels of the wrong shape: the user's mistake
        raise UserError(f"{str(exc).splitlines()[0]}; y must be one label per embedding (1-D)") from None
    if len(y) != n_samples:
        raise UserError(f"X and y have different lengths: {n_samples} embeddings but {len(y)} labels")
    with warnings.catch_warnings():
        if one_per_class:
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise UserError(f"{str(exc).splitlines()[0]}; labels must be classes (words or integers), not "
                            "continuous values") from None
    return y


def check_positive_int(value: Any, name: str) -> int:
    """k, m and similar counts must be integers >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        shown = value.item() if isinstance(value, np.generic) else value
        raise UserError(f"{name} must be an integer >= 1; got {shown!r}")
    return int(value)
