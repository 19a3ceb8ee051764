"""Fit time of every preset with its "auto" settings, and of ``method="auto"`` (the preset chosen on the support
set), against scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` on the same
embeddings in the same run (issue 24: target within 3x of it at N = 140, 1,000 and 10,000).

Embeddings: real ones, EfficientNet-Lite0 (1280-d) of Fashion-MNIST training images (N = 140: 14 per class, the
bundled folder's size; 1,000 and 10,000: stratified). Each fit is timed alone, best of `--repeat`, with the
same threads for torch and numpy; ratios are imprint's time over scikit-learn's.
Run: python benchmarks/bench_auto_fit.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

sys.path.insert(0, str(Path(__file__).parent))
from common import environment

from imprint import ImprintClassifier
from imprint.core.presets import PRESETS

SIZES = (140, 1_000, 10_000)


def embeddings(n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` real embeddings of Fashion-MNIST training images, n / 10 per class, with their labels."""
    from imprint.data.builtin import load_dataset
    from imprint.encoders import create_encoder

    data = load_dataset("fashion_mnist", "train")
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(data.labels == c), n // 10, replace=False) for c in range(10)])
    return create_encoder("lite0", device="cpu").encode_images(data.images[rows]), data.labels[rows]


def best_seconds(fit, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fit()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("## Fit time of the \"auto\" settings against scikit-learn's shrunk LDA\n\n" + environment() + "\n")
    X_all, y_all = embeddings(max(SIZES))
    methods = ["auto", *PRESETS]
    rows = {name: [] for name in methods}
    baseline = []
    for n in SIZES:
        take = np.concatenate([np.flatnonzero(y_all == c)[:n // 10] for c in range(10)])
        X, y = X_all[take], y_all[take]
        lda = best_seconds(lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y),
                           args.repeat)
        baseline.append(lda)
        for name in methods:
            seconds = best_seconds(lambda: ImprintClassifier(method=name).fit(X, y), args.repeat)
            rows[name].append(seconds / lda)
    print("| fit | " + " | ".join(f"N = {n:,}" for n in SIZES) + " |\n|---|" + "---|" * len(SIZES))
    print("| scikit-learn LDA lsqr, shrinkage auto (seconds) | " + " | ".join(f"{s:.3f} s" for s in baseline) +
          " |")
    for name in methods:
        shown = "`method=\"auto\"` (all presets, chosen on the support set)" if name == "auto" else f"`{name}`"
        print(f"| {shown} (x LDA) | " + " | ".join(f"{'**' if r > 3 else ''}{r:.2f}x{'**' if r > 3 else ''}"
                                                   for r in rows[name]) + " |")
    print("\nRatios above 3x in bold.")


if __name__ == "__main__":
    main()
