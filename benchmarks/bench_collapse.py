"""collapse_report on streamed embeddings (issue 5): time, peak memory, and scaling as N, K, d double.

Data are generated batch by batch (Gaussian classes around random means), so N never sits in memory.
Run: python benchmarks/bench_collapse.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_isolated  # noqa: E402

BATCH = 65536


def batches(n: int, n_classes: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)).astype(np.float32)
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        labels = rng.integers(0, n_classes, size)
        yield means[labels] + rng.normal(scale=2.0, size=(size, dim)).astype(np.float32), labels


def load_library():
    """Setup outside the timed part: import torch and imprint, so neither time nor memory counts them."""
    import imprint.analysis.collapse  # noqa: F401


def report(_, n: int, n_classes: int, dim: int) -> float:
    from imprint.analysis.collapse import CollapseStats, collapse_report

    stats = CollapseStats.from_batches(batches(n, n_classes, dim), device="cpu")
    return collapse_report(stats, None)["nc1"]


def generation_only(_, n: int, n_classes: int, dim: int) -> float:
    return float(sum(len(b) for b, _ in batches(n, n_classes, dim)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    base = (100_000, 100, 128) if args.quick else (1_000_000, 1000, 512)
    n, k, d = base
    shapes = [(n // 2, k, d), (n, k, d), (n, k // 2, d), (n, k, d // 2)]
    print("## collapse_report on streamed embeddings\n\n" + environment() + "\n")
    print("| N | K | d | seconds (report) | seconds (data generation alone) | report only | peak extra memory |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        t_all, mem, _ = run_isolated(load_library, partial(report, n=shape[0], n_classes=shape[1], dim=shape[2]))
        t_gen, _, _ = run_isolated(load_library, partial(generation_only, n=shape[0], n_classes=shape[1], dim=shape[2]))
        print(f"| {shape[0]:,} | {shape[1]} | {shape[2]} | {t_all:.1f} | {t_gen:.1f} | {t_all - t_gen:.1f} | "
              f"{mem / 1024:.2f} GiB |", flush=True)


if __name__ == "__main__":
    main()
