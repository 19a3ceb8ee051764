"""Ridge regression's solves, and its cross-validation with one pass over the rows shared by every fold.

The ridge head (``metric="ridge"``, RanPAC's) solves (G + r I) W = Q', G the Gram matrix of its rows and Q the
per-class sums; with fewer rows N than features d it solves the dual system (K + r I) A = Y instead, K = H H' the
N x N kernel and Y the rows' one-hot classes (W = H' A: the same weights, N^3 instead of d^3 work). ``RidgeFolds``
gives every fold of a cross-validation those solutions without refitting: a fold's kernels are blocks of one
kernel of all rows, and a fold's Gram matrix is the whole set's minus its held-out rows' (which sum to the
whole), so the rows are read once for all folds and all ridge values, not once per fold and value.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from imprint.stages.covariance import ROW_BLOCK, second_moment

DUAL_BYTES = 1 << 28  # the ridge head keeps its rows (dual form) while they take at most 256 MiB
KERNEL_BYTES = 1 << 28  # cross-validation keeps one kernel of all rows while it takes at most 256 MiB


def uses_dual(n_rows: int, n_features: int) -> bool:
    """Whether a ridge head on this many rows of this width solves the dual system (and keeps its rows)."""
    return n_rows < n_features and n_rows * n_features * 4 <= DUAL_BYTES


def ridge_solve(gram: Tensor, targets: Tensor, ridge: float) -> Tensor:
    """(G + ridge I)^-1 Q' by Cholesky (G + ridge I is positive definite; twice the speed of a general solve),
    falling back to a least-squares solve if the factorisation fails numerically."""
    A = gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(A)
    rhs = targets.T.to(A.device, A.dtype)
    return torch.cholesky_solve(rhs, factor) if int(info) == 0 else torch.linalg.lstsq(A, rhs).solution


class RidgeFolds:
    """Held-out scores of ridge heads fitted on folds of one set of normalised rows (N x d, float32; one target
    per class), every fold and ridge value from statistics of the whole set computed once. A fold trains on
    every row outside it, as ``RidgeMetric`` would on those rows alone: the same systems, so the same scores up
    to rounding. Ridge values are relative to tr(G) / d, as the head's are."""

    setting = "ridge_lambda"  # the setting whose candidate values are scored in one go

    def __init__(self, rows: Tensor, codes: np.ndarray) -> None:
        self.rows, self.codes = rows, np.asarray(codes, dtype=np.int64)
        self.n_classes = int(self.codes.max()) + 1
        self._norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).square()  # each row's part of tr(G)
        self._kernel: Tensor | None = None  # H H' of all rows (dual folds)
        self._gram: Tensor | None = None  # G and the class sums of all rows (primal folds)
        self._sums: Tensor | None = None
        self._held_out: dict[int, tuple[Tensor, Tensor]] = {}  # a prepared partition's held-out G and sums
        self._partition: bytes | None = None

    def prepare(self, assignment: np.ndarray) -> None:
        """Compute every held-out fold's Gram matrix at once where folds solve the primal system: their sum is
        the whole set's, so the rows are read once for all folds (kept until another partition is prepared)."""
        key = assignment.tobytes()
        d = self.rows.shape[1]
        if self._partition == key or all(uses_dual(int((assignment != f).sum()), d) for f in np.unique(assignment)):
            return
        self._held_out = {int(f): self._statistics(assignment == f) for f in np.unique(assignment)}
        self._partition = key
        if self._gram is None:
            self._gram = sum(gram for gram, _ in self._held_out.values())
            self._sums = sum(sums for _, sums in self._held_out.values())

    def scores(self, test: np.ndarray, ridges: list[float],
               fold: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, list[Tensor]]:
        """The classes present outside the boolean mask `test` and, for each relative ridge value, the
        (n_test, n_present) float64 scores of the test rows by a head fitted on every other row. `fold` names
        (assignment, fold number) when `test` is a fold of a prepared partition."""
        train = ~test
        present = np.unique(self.codes[train])
        d = self.rows.shape[1]
        scale = max(float(self._norms[torch.from_numpy(train)].sum()) / d, 1e-300)
        if uses_dual(int(train.sum()), d):
            return present, self._dual_scores(train, test, present, [ridge * scale for ridge in ridges])
        gram, sums = self._train_statistics(test, fold)
        queries = self.rows[torch.from_numpy(test)].double()
        return present, [queries @ ridge_solve(gram, sums[torch.from_numpy(present)], ridge * scale)
                         for ridge in ridges]

    def _dual_scores(self, train: np.ndarray, test: np.ndarray, present: np.ndarray,
                     ridges: list[float]) -> list[Tensor]:
        """Dual solves on the fold's train kernel; test scores K(test, train) A (that is, H_test H' A)."""
        train_rows, test_rows = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(np.flatnonzero(test))
        if self._kernel is None and len(self.codes) ** 2 * 4 <= KERNEL_BYTES:
            self._kernel = self.rows @ self.rows.T
        if self._kernel is not None:
            inner = self._kernel[train_rows][:, train_rows].double()
            cross = self._kernel[test_rows][:, train_rows].double()
        else:
            held = self.rows[train_rows]
            inner, cross = (held @ held.T).double(), (self.rows[test_rows] @ held.T).double()
        onehot = torch.from_numpy(
            (self.codes[train][:, None] == present[None, :]).astype(np.float64)).to(inner.device)
        return [cross @ ridge_solve(inner, onehot.T, ridge) for ridge in ridges]

    def _train_statistics(self, test: np.ndarray, fold: tuple[np.ndarray, int] | None) -> tuple[Tensor, Tensor]:
        """G and the class sums of the rows outside `test`: the whole set's minus the held-out rows'."""
        if fold is not None and self._partition == fold[0].tobytes():
            held_gram, held_sums = self._held_out[int(fold[1])]
        else:
            held_gram, held_sums = self._statistics(test)
        if self._gram is None:
            self._gram, self._sums = self._statistics(np.ones(len(self.codes), dtype=bool))
        return self._gram - held_gram, self._sums - held_sums

    def _statistics(self, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        """G (float64) and the per-class sums of the rows in `mask`."""
        rows, codes = self.rows[torch.from_numpy(mask)], torch.from_numpy(self.codes[mask]).to(self.rows.device)
        sums = torch.zeros(self.n_classes, rows.shape[1], dtype=torch.float64, device=rows.device)
        for start in range(0, len(rows), ROW_BLOCK):  # float64 sums, never a float64 copy of all the rows
            sums.index_add_(0, codes[start:start + ROW_BLOCK], rows[start:start + ROW_BLOCK].double())
        return second_moment(rows), sums
