"""Scale on the CPU (issue 6): generation and prediction with many samples and classes.

Every measurement runs in a fresh process (time, and peak memory above the data already in memory).
Named baselines in the same run: scikit-learn's per-class KMeans loop (k-means), numpy sort + reduceat
(class means), numpy matmul + max in chunks of queries (prediction).
Run: python benchmarks/bench_scale.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_isolated  # noqa: E402

DIM = 512


def support(n: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit-norm embeddings in n_classes balanced classes, each class a few sub-clusters (libraries
    imported here, outside the measured part)."""
    import sklearn.cluster  # noqa: F401

    import imprint.classifier  # noqa: F401

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    centres = rng.normal(size=(n_classes * 4, DIM)).astype(np.float32)
    X = centres[labels * 4 + rng.integers(0, 4, len(labels))]
    X += 0.5 * rng.standard_normal(X.shape, dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, labels


def fit_imprint(data, generation: str, k: int) -> float:
    from imprint import ImprintClassifier

    X, y = data
    clf = ImprintClassifier(generation=generation, k=k, device="cpu").fit(X, y)
    return float(len(clf.proxies_))


def fit_sklearn_loop(data, k: int) -> float:
    from sklearn.cluster import KMeans

    X, y = data
    bounds = np.flatnonzero(np.diff(y)) + 1
    return float(sum(KMeans(k, n_init=1, random_state=0).fit(part).cluster_centers_.shape[0]
                     for part in np.split(X, bounds)))


def means_numpy(data) -> float:
    X, y = data
    order = np.argsort(y, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(y[order]) != 0])
    sums = np.add.reduceat(X[order], starts, axis=0)
    return float(len(sums / np.diff(np.r_[starts, len(y)])[:, None]))


def queries_and_model(n_queries: int, n_proxies: int, per_class: int = 20):
    from imprint import ImprintClassifier

    rng = np.random.default_rng(1)
    P = rng.standard_normal((n_proxies, DIM), dtype=np.float32)
    labels = np.repeat(np.arange(n_proxies // per_class), per_class)
    clf = ImprintClassifier(generation="all", device="cpu").fit(P, labels)
    Q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    return clf, Q


def predict_imprint(state) -> float:
    clf, Q = state
    return float(clf.predict(Q)[0])


def predict_numpy(state, chunk: int = 4096) -> float:
    clf, Q = state
    P = clf.proxies_
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    n_classes = len(clf.classes_)
    out = np.empty(len(Q), dtype=np.int64)
    for start in range(0, len(Q), chunk):
        scores = Qn[start:start + chunk] @ P.T
        out[start:start + chunk] = scores.reshape(len(scores), n_classes, -1).max(2).argmax(1)
    return float(out[0])


def _row(what: str, n: int, k: int, seconds: float, extra_mib: float, data_mib: float, out_mib: float) -> str:
    ratio = (data_mib + extra_mib) / (data_mib + out_mib)
    return (f"| {what} | {n:,} | {k:,} | {seconds:.2f} | {data_mib / 1024:.2f} | {extra_mib / 1024:.2f} | "
            f"{ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1/10 of the sizes")
    parser.add_argument("--parts", nargs="+", choices=("kmeans", "mean", "predict"),
                        default=["kmeans", "mean", "predict"])
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print("## Scale on the CPU\n\n" + environment() + "\n")
    print("Memory ratio = (data + peak extra) / (data + proxies made); data = support set (fit) or queries + "
          "proxies (predict); the goal is < 2.\n")
    print("| run | N | classes | seconds | data GiB | peak extra GiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    mib = DIM * 4 / 2**20
    if "kmeans" in args.parts:
        fit_kmeans_rows(scale, mib)
    if "mean" in args.parts:
        fit_mean_rows(scale, mib)
    if "predict" in args.parts:
        predict_rows(scale, mib)


def fit_kmeans_rows(scale: int, mib: float) -> None:
    for n, classes in ((200_000, 2000), (400_000, 2000), (200_000, 4000)):
        n, classes = n // scale, classes // scale
        seconds, extra, _ = run_isolated(partial(support, n, classes), partial(fit_imprint, generation="kmeans", k=20))
        print(_row("fit kmeans k=20 (batched)", n, classes, seconds, extra, n * mib, classes * 20 * mib), flush=True)
    n, classes = 200_000 // scale, 2000 // scale
    seconds, extra, _ = run_isolated(partial(support, n, classes), partial(fit_sklearn_loop, k=20))
    print(_row("baseline: scikit-learn KMeans per class", n, classes, seconds, extra, n * mib, classes * 20 * mib),
          flush=True)


def fit_mean_rows(scale: int, mib: float) -> None:
    for n, classes in ((1_000_000, 10_000), (2_000_000, 10_000), (1_000_000, 20_000)):
        n, classes = n // scale, classes // scale
        seconds, extra, _ = run_isolated(partial(support, n, classes), partial(fit_imprint, generation="mean", k=1))
        print(_row("fit mean", n, classes, seconds, extra, n * mib, classes * mib), flush=True)
    n, classes = 1_000_000 // scale, 10_000 // scale
    seconds, extra, _ = run_isolated(partial(support, n, classes), means_numpy)
    print(_row("baseline: numpy sort + reduceat means", n, classes, seconds, extra, n * mib, classes * mib),
          flush=True)


def predict_rows(scale: int, mib: float) -> None:
    for queries, proxies in ((100_000, 200_000), (50_000, 200_000), (50_000, 100_000)):
        queries, proxies = queries // scale, proxies // scale
        seconds, extra, _ = run_isolated(partial(queries_and_model, queries, proxies), predict_imprint)
        print(_row(f"predict max vs {proxies:,} proxies", queries, proxies // 20, seconds, extra,
                   (queries + proxies) * mib, 0.0), flush=True)
    queries, proxies = 100_000 // scale, 200_000 // scale
    seconds, extra, _ = run_isolated(partial(queries_and_model, queries, proxies), predict_numpy)
    print(_row(f"baseline: numpy matmul + max, 4096-query chunks, vs {proxies:,} proxies", queries, proxies // 20,
               seconds, extra, (queries + proxies) * mib, 0.0), flush=True)


if __name__ == "__main__":
    main()
