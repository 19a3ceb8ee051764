"""Queries in fixed-shape blocks: memory-bounded and batch-invariant to the last bit.

A BLAS matrix product picks its kernel by the shape of its operands (a single row goes through a
matrix-vector path, a few rows through a small-matrix path), and different kernels round differently.
So the score of a query could depend on how many other queries came with it. Scoring every query in a
block of exactly ``rows`` rows (the last block padded with zeros) gives each row the same kernel and
the same summation order whatever the batch: scores, and so predictions, are identical whether a query
is scored alone or among a million, on any CPU and any thread count.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

CHUNK_BYTES = 1 << 28  # at most 256 MiB of scores per block
MIN_ROWS, MAX_ROWS = 128, 256  # measured: 64-row products at 0.8 of full speed, 128 and up at full speed;
# at most 256 rows, since the norms of a padded block cost its rows whatever the proxies (a single query in a
# 1024-row block took 13.5 ms to predict, in a 256-row one 3.5 ms)
PAD_FLOPS = 1 << 28  # a single padded query costs at most this many multiply-adds beyond its own (or MIN_ROWS)


def tensor_view(X: np.ndarray) -> torch.Tensor:
    """A tensor sharing X's memory. Read-only arrays (memory-mapped stores) are fine: imprinting only
    reads its inputs, so torch's warning about non-writable arrays does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(X)


def block_rows(scores_per_query: int, n_features: int) -> int:
    """Rows per block for a classifier (a power of two that depends on the classifier, never on the
    queries): at most CHUNK_BYTES of scores, at most PAD_FLOPS of padding work, at least MIN_ROWS."""
    by_memory = CHUNK_BYTES // (4 * max(1, scores_per_query))
    by_padding = max(MIN_ROWS, PAD_FLOPS // max(1, scores_per_query * n_features))
    rows = max(1, min(MAX_ROWS, by_memory, by_padding))
    return 1 << (rows.bit_length() - 1)


def query_blocks(X: np.ndarray, rows: int, device: torch.device) -> Iterator[tuple[slice, torch.Tensor]]:
    """(positions, block of exactly `rows` rows) for consecutive queries; the last block is zero-padded,
    so callers keep the first ``positions.stop - positions.start`` rows of what they compute."""
    pad = None
    for start in range(0, len(X), rows):
        block = tensor_view(X[start:start + rows])
        if len(block) < rows:
            if pad is None:
                pad = torch.zeros(rows, X.shape[1], dtype=block.dtype, device=device)
            pad[len(block):] = 0
            pad[:len(block)] = block.to(device)
            block = pad
        yield slice(start, min(start + rows, len(X))), block.to(device)
