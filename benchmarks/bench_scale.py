"""Scale on real inputs (issue 14): fit on raw, unsorted embeddings beside the best case, and prediction
against the machine's limit.

Every measurement runs in a fresh process: time, and peak extra anonymous memory (copies made, sampled every
5 ms; pages of a memory-mapped file are not copies) above the data already there. Cases, each named in the
table:
- best case: float32, unit-norm rows, labels sorted by class (no copy is needed at all);
- raw: float32 encoder-like outputs (norm ~ 68), labels in random order;
- raw fp16: the same in float16; raw fp16 memmap: float16 in a memory-mapped .npy file.
Baselines in the same run: the best case itself (ratios), scikit-learn's per-class KMeans loop, numpy
sort + reduceat class means, and for prediction a bare torch.mm (the machine's matrix-product limit) and
numpy matmul + max.
Run: python benchmarks/bench_scale.py [--quick] [--parts mean kmeans heads predict defaults backends]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_isolated  # noqa: E402

DIM = 512
RAW_NORM = 68.0


def support(n: int, n_classes: int, case: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n embeddings in n_classes balanced classes, each class a few sub-clusters, as `case` says (libraries
    imported here, outside the measured part)."""
    import sklearn.cluster  # noqa: F401

    import imprint.estimator.classifier  # noqa: F401

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    centres = rng.normal(size=(n_classes * 4, DIM)).astype(np.float32)
    X = centres[labels * 4 + rng.integers(0, 4, len(labels))]
    X += 0.5 * rng.standard_normal(X.shape, dtype=np.float32)
    if case == "best":
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        return X, labels
    X *= RAW_NORM / np.sqrt(DIM * 1.25)  # encoder-like norms, not unit
    order = rng.permutation(len(labels))
    X, labels = X[order], labels[order]
    if case == "raw":
        return X, labels
    half = X.astype(np.float16)
    del X
    if case == "raw fp16":
        return half, labels
    path = Path(tempfile.mkdtemp()) / "support.npy"
    np.save(path, half)
    del half
    return np.load(path, mmap_mode="r"), labels


def fit(data, **settings) -> float:
    from imprint import ImprintClassifier

    X, y = data
    return float(len(ImprintClassifier(device="cpu", **settings).fit(X, y).proxies_))


def fit_sklearn_loop(data, k: int) -> float:
    from sklearn.cluster import KMeans

    X, y = data
    order = np.argsort(y, kind="stable")
    bounds = np.flatnonzero(np.diff(y[order])) + 1
    return float(sum(KMeans(k, n_init=1, random_state=0).fit(X[part]).cluster_centers_.shape[0]
                     for part in np.split(order, bounds)))


def means_numpy(data) -> float:
    X, y = data
    order = np.argsort(y, kind="stable")
    unit = X[order] / np.linalg.norm(X[order], axis=1, keepdims=True)
    starts = np.flatnonzero(np.r_[True, np.diff(y[order]) != 0])
    sums = np.add.reduceat(unit, starts, axis=0)
    return float(len(sums))


def _row(what: str, case: str, n: int, classes: int, seconds: float, extra_mib: float, data_mib: float,
         baseline: float | None) -> str:
    ratio = f"{seconds / baseline:.2f}x" if baseline else "1.00x (baseline)"
    return (f"| {what} | {case} | {n:,} | {classes:,} | {seconds:.2f} | {ratio} | {data_mib / 1024:.2f} | "
            f"{extra_mib / data_mib:.2f} |")


def fit_rows(what: str, sizes: list[tuple[int, int]], settings: dict, scale: int, cases: list[str]) -> None:
    """One row per size and case; the first row of the call is the baseline of the others' time ratios."""
    baseline = None
    for n, classes in sizes:
        n, classes = n // scale, classes // scale
        for case in cases:
            bytes_per_value = 2 if "fp16" in case else 4
            seconds, extra, _ = run_isolated(partial(support, n, classes, case), partial(fit, **settings))
            print(_row(what, case, n, classes, seconds, extra, n * DIM * bytes_per_value / 2**20, baseline),
                  flush=True)
            baseline = baseline or seconds


def default_cost_rows(scale: int) -> None:
    """What the default temperature="auto" costs (issue 34): each fit with it against the same fit with the
    temperature fixed, in fresh processes, on raw unsorted rows (classes: N / 100)."""
    print("\n| generation | N | classes | default s | fixed s | default / fixed | extra / data, default | "
          "extra / data, fixed |")
    print("|---|---|---|---|---|---|---|---|")
    for generation, sizes, extra in (("mean", (10_000, 100_000, 1_000_000), {}),
                                     ("kmeans", (10_000, 100_000, 200_000), {"k": 20})):
        for n in sizes:
            n, classes = n // scale, max(2, n // scale // 100)
            data_mib = n * DIM * 4 / 2**20
            default, default_extra, _ = run_isolated(partial(support, n, classes, "raw"),
                                                     partial(fit, generation=generation, **extra))
            fixed, fixed_extra, _ = run_isolated(partial(support, n, classes, "raw"),
                                                 partial(fit, generation=generation, temperature=1.0, **extra))
            print(f"| {generation} | {n:,} | {classes:,} | {default:.2f} | {fixed:.2f} | {default / fixed:.2f}x | "
                  f"{default_extra / data_mib:.2f} | {fixed_extra / data_mib:.2f} |", flush=True)


def sorted_support(per_class: int, classes: int):
    """Class-sorted unit-norm rows as a torch tensor with their class counts (the GEN stage's input)."""
    import torch

    import imprint.stages.kmeans  # noqa: F401

    X, y = support(per_class * classes, classes, "best")
    return torch.from_numpy(X), torch.full((classes,), per_class)


def kmeans_backend(state, backend: str) -> float:
    """The k-means of every class by one backend; the result is the inertia per row it clustered (a class of
    more than SAMPLE_ROWS rows: a seeded sample of them, by either backend)."""
    from imprint.stages.kmeans import SAMPLE_ROWS, batched_kmeans, faiss_kmeans

    X, counts = state
    clusters = (faiss_kmeans if backend == "faiss" else batched_kmeans)(X, counts, 20, seed=0)
    return float(clusters.inertia.sum() / counts.clamp(max=SAMPLE_ROWS).sum())


def backend_rows(scale: int) -> None:
    """Batched torch k-means against per-class FAISS, k=20, at 10^4 to 10^6 rows per class (issue 34)."""
    print("\n| rows per class | classes | batched s | FAISS s | FAISS / batched | inertia per row, batched | "
          "inertia per row, FAISS |")
    print("|---|---|---|---|---|---|---|")
    for per_class, classes in ((10_000, 20), (100_000, 2), (1_000_000, 1)):
        per_class = per_class // scale
        times, inertia = {}, {}
        for backend in ("batched", "faiss"):
            times[backend], _, inertia[backend] = run_isolated(partial(sorted_support, per_class, classes),
                                                               partial(kmeans_backend, backend=backend))
        print(f"| {per_class:,} | {classes} | {times['batched']:.2f} | {times['faiss']:.2f} | "
              f"{times['faiss'] / times['batched']:.2f}x | {inertia['batched']:.4f} | {inertia['faiss']:.4f} |",
              flush=True)


def queries_and_model(n_queries: int, n_proxies: int, per_class: int = 20):
    from imprint import ImprintClassifier

    rng = np.random.default_rng(1)
    P = rng.standard_normal((n_proxies, DIM), dtype=np.float32)
    labels = np.repeat(np.arange(n_proxies // per_class), per_class)
    clf = ImprintClassifier(generation="all", device="cpu").fit(P, labels)
    Q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    return clf, Q


def predict(state) -> float:
    clf, Q = state
    return float(clf.predict(Q)[0])


def decision_function(state) -> float:
    clf, Q = state
    return float(clf.decision_function(Q)[0, 0])


def bare_mm(state) -> float:
    import torch

    clf, Q = state
    return float(torch.mm(torch.from_numpy(Q), torch.from_numpy(clf.proxies_).T)[0, 0])


def numpy_chunks(state, chunk: int = 4096) -> float:
    clf, Q = state
    P = clf.proxies_
    n_classes = len(clf.classes_)
    out = np.empty(len(Q), dtype=np.int64)
    for start in range(0, len(Q), chunk):
        block = Q[start:start + chunk]
        scores = (block / np.linalg.norm(block, axis=1, keepdims=True)) @ P.T
        out[start:start + chunk] = scores.reshape(len(scores), n_classes, -1).max(2).argmax(1)
    return float(out[0])


def predict_rows(scale: int) -> None:
    print("\n| run | queries | proxies | seconds | GFLOP/s | vs bare torch.mm | peak extra GiB |")
    print("|---|---|---|---|---|---|---|")
    for queries, proxies in ((20_000, 20_000), (100_000, 200_000)):
        queries, proxies = queries // scale, proxies // scale
        flops = 2.0 * queries * proxies * DIM
        results = {}
        for name, fn in (("bare torch.mm (all scores at once; the machine's limit)", bare_mm),
                         ("predict (max, blocks of queries)", predict),
                         ("decision_function (max, blocks of queries)", decision_function),
                         ("numpy matmul + max, 4096-query chunks", numpy_chunks)):
            if name.startswith("bare") and queries * proxies * 4 > 8 * 2**30:
                continue  # the full score matrix would not fit
            seconds, extra, _ = run_isolated(partial(queries_and_model, queries, proxies), fn)
            results[name] = seconds
            base = results.get("bare torch.mm (all scores at once; the machine's limit)")
            ratio = f"{base / seconds:.2f}" if base else "n/a"
            print(f"| {name} | {queries:,} | {proxies:,} | {seconds:.2f} | {flops / seconds / 1e9:.0f} | {ratio} | "
                  f"{extra / 1024:.2f} |", flush=True)


PARTS = ("mean", "kmeans", "heads", "predict", "defaults", "backends")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1/10 of the sizes")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"## Scale on real inputs ({time.strftime('%Y-%m-%d')})\n\n" + environment() + "\n")
    print("peak extra = copies made while fitting (anonymous memory above the data), as a share of the data.\n")
    print("| fit | case | N | classes | seconds | vs best case | data GiB | peak extra / data |")
    print("|---|---|---|---|---|---|---|---|")
    cases = ["best", "raw", "raw fp16", "raw fp16 memmap"]
    if "mean" in args.parts:
        fit_rows("mean", [(1_000_000, 10_000)], dict(generation="mean"), scale, cases)
        fit_rows("mean (linearity: 2N)", [(1_000_000, 10_000), (2_000_000, 10_000)], dict(generation="mean"),
                 scale, ["raw"])
        n, classes = 1_000_000 // scale, 10_000 // scale
        seconds, extra, _ = run_isolated(partial(support, n, classes, "raw"), means_numpy)
        print(_row("baseline: numpy sort + L2 + reduceat", "raw", n, classes, seconds, extra, n * DIM * 4 / 2**20,
                   None), flush=True)
    if "kmeans" in args.parts:
        fit_rows("kmeans k=20", [(200_000, 2_000)], dict(generation="kmeans", k=20), scale, cases)
        fit_rows("kmeans k=20 (linearity: 2N)", [(200_000, 2_000), (400_000, 2_000)],
                 dict(generation="kmeans", k=20), scale, ["raw"])
        n, classes = 200_000 // scale, 2_000 // scale
        seconds, extra, _ = run_isolated(partial(support, n, classes, "raw"), partial(fit_sklearn_loop, k=20))
        print(_row("baseline: scikit-learn KMeans per class", "raw", n, classes, seconds, extra,
                   n * DIM * 4 / 2**20, None), flush=True)
    if "heads" in args.parts:
        fit_rows("gda (mahalanobis, ledoit_wolf)", [(1_000_000, 10_000)],
                 dict(generation="mean", norm_post="none", metric="mahalanobis", shrinkage="ledoit_wolf"), scale,
                 ["best", "raw"])
        fit_rows("ridge (lambda 1)", [(1_000_000, 10_000)],
                 dict(generation="mean", norm_post="none", metric="ridge", ridge_lambda=1.0), scale, ["best", "raw"])
    if "predict" in args.parts:
        predict_rows(scale)
    if "defaults" in args.parts:
        default_cost_rows(scale)
    if "backends" in args.parts:
        backend_rows(scale)


if __name__ == "__main__":
    main()
