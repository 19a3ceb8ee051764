"""Core benchmarks (issue 2): batched k-means fit vs scikit-learn's per-class loop; predict vs bare numpy.

Run: python benchmarks/bench_core.py [--quick]. Prints a markdown report; ratios are measured in one run.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_isolated

from imprint import ImprintClassifier
from imprint.stages.kmeans import batched_kmeans, faiss_kmeans


def mixture(n_classes: int, per_class: int, dim: int, modes: int = 8, seed: int = 0):
    """Unit-norm embeddings; each class a mixture of sub-clusters around a class direction."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_classes, 1, dim))
    centres = base + 0.7 * rng.normal(size=(n_classes, modes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    X = centres[labels, rng.integers(0, modes, len(labels))] + 0.5 * rng.normal(size=(len(labels), dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), labels


def fit_data(n_classes: int, per_class: int, dim: int):
    X, y = mixture(n_classes, per_class, dim)
    return X, y, torch.from_numpy(X), torch.full((n_classes,), per_class)


def sklearn_per_class(state, k: int) -> float:
    """Baseline: scikit-learn KMeans (default settings) class by class, as the paper's code does."""
    from sklearn.cluster import KMeans

    X, y, _, _ = state
    return float(sum(KMeans(n_clusters=k, random_state=0).fit(X[y == c]).inertia_ for c in np.unique(y)))


def faiss_per_class(state, k: int) -> float:
    return float(faiss_kmeans(state[2], state[3], k, seed=0).inertia.sum())


def batched(state, k: int) -> float:
    return float(batched_kmeans(state[2], state[3], k, seed=0).inertia.sum())


def classifier_fit(state, k: int) -> None:
    ImprintClassifier(generation="kmeans", k=k, device="cpu").fit(state[0], state[1])


def bench_fit(n_classes: int, per_class: int, dim: int, k: int = 20, repeat: int = 3) -> str:
    """Each method in its own fresh process, best of `repeat` runs."""
    setup = partial(fit_data, n_classes, per_class, dim)
    methods = {
        "scikit-learn KMeans, per-class loop (baseline, the paper's method)": sklearn_per_class,
        "FAISS Kmeans, per-class loop (`kmeans_backend='faiss'`)": faiss_per_class,
        "imprint batched k-means (`kmeans_backend='batched'`)": batched,
        "`ImprintClassifier(generation='kmeans', k=20).fit` (L2 norms included)": classifier_fit,
    }
    results = {name: run_isolated(setup, partial(fn, k=k), repeat) for name, fn in methods.items()}
    t_base, _, inertia_base = next(iter(results.values()))
    rows = []
    for name, (seconds, _, inertia) in results.items():
        quality = f"{inertia / inertia_base:.4f}" if inertia is not None else "-"
        rows.append(f"| {name} | {seconds:.3f} | {t_base / seconds:.1f}x | {quality} |")
    header = (f"### Fit: k-means k={k}, {n_classes} classes x {per_class} samples x {dim} dims\n\n"
              f"Each method in a fresh process, best of {repeat} runs.\n\n"
              "| method | seconds | speed-up vs scikit-learn | total inertia / scikit-learn's |\n|---|---|---|---|\n")
    return header + "\n".join(rows) + "\n"


def predict_arrays(n_queries: int, n_proxies: int, dim: int):
    """Unit-norm random queries and proxies (seeded)."""
    rng = np.random.default_rng(1)
    Q = rng.normal(size=(n_queries, dim)).astype(np.float32)
    W = rng.normal(size=(n_proxies, dim)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return Q, W


def numpy_max_scores(state, n_classes: int):
    """Baseline: one numpy matmul over everything, then reshape and max per class."""
    Q, W = state
    return (Q @ W.T).reshape(len(Q), n_classes, -1).max(axis=2)


def classifier_on(n_queries: int, n_classes: int, k: int, dim: int):
    Q, W = predict_arrays(n_queries, n_classes * k, dim)
    clf = ImprintClassifier(generation="all", norm_pre="none", norm_post="none", device="cpu")
    return clf.fit(W, np.repeat(np.arange(n_classes), k)), Q


def classifier_scores(state):
    clf, Q = state
    return clf.decision_function(Q)


def bench_predict(n_queries: int, n_classes: int, k: int, dim: int) -> str:
    t_np, mem_np, _ = run_isolated(partial(predict_arrays, n_queries, n_classes * k, dim),
                                partial(numpy_max_scores, n_classes=n_classes))
    t_ours, mem_ours, _ = run_isolated(partial(classifier_on, n_queries, n_classes, k, dim), classifier_scores)
    clf, Q = classifier_on(2000, n_classes, k, dim)
    exact = np.abs(clf.decision_function(Q) - numpy_max_scores((Q, clf.proxies_), n_classes)).max()
    return (f"### Predict: {n_queries} queries x {n_classes * k} proxies ({n_classes} classes x {k}), "
            f"{dim} dims, `max`\n\n| method | seconds | queries/s | throughput vs numpy | peak extra memory |\n"
            "|---|---|---|---|---|\n"
            f"| bare numpy matmul + reshape-max (baseline) | {t_np:.2f} | {n_queries / t_np:,.0f} | 1.00 | "
            f"{mem_np / 1024:.2f} GiB |\n"
            f"| `ImprintClassifier.decision_function` (chunked) | {t_ours:.2f} | {n_queries / t_ours:,.0f} | "
            f"{t_np / t_ours:.2f} | {mem_ours / 1024:.2f} GiB |\n\n"
            f"Largest absolute difference from the numpy scores (2000 queries): {exact:.2e}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    parser.add_argument("--fit-only", action="store_true", help="skip the (long) predict benchmark")
    args = parser.parse_args()
    print("## Core benchmarks\n\n" + environment() + "\n", flush=True)
    if args.quick:
        print(bench_fit(10, 200, 64), flush=True)
        if not args.fit_only:
            print(bench_predict(5000, 100, 20, 64))
    else:
        print(bench_fit(100, 500, 512), flush=True)
        if not args.fit_only:
            print(bench_predict(100_000, 1000, 20, 512))


if __name__ == "__main__":
    main()
