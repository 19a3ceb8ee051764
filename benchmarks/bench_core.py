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
from common import environment, run_isolated, timed  # noqa: E402

from imprint import ImprintClassifier  # noqa: E402
from imprint.clustering import batched_kmeans, faiss_kmeans  # noqa: E402


def mixture(n_classes: int, per_class: int, dim: int, modes: int = 8, seed: int = 0):
    """Unit-norm embeddings; each class a mixture of sub-clusters around a class direction."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_classes, 1, dim))
    centres = base + 0.7 * rng.normal(size=(n_classes, modes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    X = centres[labels, rng.integers(0, modes, len(labels))] + 0.5 * rng.normal(size=(len(labels), dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), labels


def sklearn_per_class(X, y, k, seed):
    from sklearn.cluster import KMeans

    inertia = 0.0
    for c in np.unique(y):
        inertia += KMeans(n_clusters=k, random_state=seed).fit(X[y == c]).inertia_
    return inertia


def bench_fit(n_classes: int, per_class: int, dim: int, k: int = 20) -> str:
    X, y = mixture(n_classes, per_class, dim)
    Xt, counts = torch.from_numpy(X), torch.full((n_classes,), per_class)
    rows = []
    t_sk, inertia_sk = timed(lambda: sklearn_per_class(X, y, k, 0), repeat=3)
    t_faiss, faiss_result = timed(lambda: faiss_kmeans(Xt, counts, k, seed=0), repeat=3)
    t_ours, ours = timed(lambda: batched_kmeans(Xt, counts, k, seed=0), repeat=3)
    t_clf, _ = timed(lambda: ImprintClassifier(generation="kmeans", k=k, device="cpu").fit(X, y), repeat=3)
    for name, t, inertia in [("scikit-learn KMeans, per-class loop (baseline, the paper's method)", t_sk, inertia_sk),
                             ("FAISS Kmeans, per-class loop (`kmeans_backend='faiss'`)", t_faiss,
                              float(faiss_result.inertia.sum())),
                             ("imprint batched k-means (`kmeans_backend='batched'`)", t_ours, float(ours.inertia.sum())),
                             ("`ImprintClassifier(generation='kmeans', k=20).fit` (L2 norms included)", t_clf, None)]:
        quality = f"{inertia / inertia_sk:.4f}" if inertia is not None else "-"
        rows.append(f"| {name} | {t:.3f} | {t_sk / t:.1f}x | {quality} |")
    header = (f"### Fit: k-means k={k}, {n_classes} classes x {per_class} samples x {dim} dims\n\n"
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
    t_np, mem_np = run_isolated(partial(predict_arrays, n_queries, n_classes * k, dim),
                                partial(numpy_max_scores, n_classes=n_classes))
    t_ours, mem_ours = run_isolated(partial(classifier_on, n_queries, n_classes, k, dim), classifier_scores)
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
    args = parser.parse_args()
    print("## Core benchmarks\n\n" + environment() + "\n", flush=True)
    if args.quick:
        print(bench_fit(10, 200, 64), flush=True)
        print(bench_predict(5000, 100, 20, 64))
    else:
        print(bench_fit(100, 500, 512), flush=True)
        print(bench_predict(100_000, 1000, 20, 512))


if __name__ == "__main__":
    main()
