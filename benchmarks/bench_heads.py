"""Training-free heads (issue 15) and rejection scores (issue 12): fit and prediction cost against named
baselines in the same run.

Fit: 100 classes x 500 samples x 512 dims (unit-norm sub-clustered classes, labels in random order),
against k-means k=20's fit. Prediction: 20,000 queries, against class means' (`mean`, one proxy per class).
Rejection: the same fit with each score (calibration included) and prediction with rejection, against the
same classifier without it. Each measurement in a fresh process, best of `--repeat`.
Run: python benchmarks/bench_heads.py [--quick] [--repeat N] [--parts heads rejection]
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_isolated  # noqa: E402

HEADS = {
    "k-means k=20 (baseline for fit)": dict(generation="kmeans", k=20),
    "mean (baseline for predict)": dict(generation="mean"),
    "simpleshot": dict(preset="simpleshot"),
    "gda (shrinkage auto)": dict(preset="gda"),
    "gda (ledoit_wolf)": dict(preset="gda", shrinkage="ledoit_wolf"),
    "fecam (shrinkage auto)": dict(preset="fecam"),
    "fecam (diagonal, ledoit_wolf)": dict(preset="fecam", fecam_diagonal=True, shrinkage="ledoit_wolf"),
    "ranpac (width and lambda auto)": dict(preset="ranpac"),
    "ranpac (width 2048, lambda 1)": dict(preset="ranpac", projection_dim=2048, ridge_lambda=1.0),
    "tip_adapter (beta auto)": dict(preset="tip_adapter"),
    "tip_adapter (beta 5.5)": dict(preset="tip_adapter", beta=5.5),
}


def data(n_classes: int, per_class: int, n_queries: int, dim: int = 512, seed: int = 0):
    import imprint.estimator.classifier  # noqa: F401  (imported outside the measured part)

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.normal(size=(n_classes * 8, dim)).astype(np.float32)
    X = centres[labels * 8 + rng.integers(0, 8, len(labels))] + rng.standard_normal((len(labels), dim),
                                                                                     dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    queries = X[rng.integers(0, len(X), n_queries)] + 0.1 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    return X[order], labels[order], queries


def build(settings: dict):
    from imprint import ImprintClassifier

    settings = dict(settings)
    preset = settings.pop("preset", None)
    return ImprintClassifier.from_preset(preset, **settings) if preset else ImprintClassifier(**settings)


def fit(state, settings: dict) -> float:
    X, y, _ = state
    return float(len(build(settings).fit(X, y).proxies_))


def fitted(shape: tuple, settings: dict):
    X, y, queries = data(*shape)
    return build(settings).fit(X, y), queries


def predict(state) -> float:
    clf, queries = state
    return float(len(clf.predict(queries)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer classes and queries")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=("heads", "rejection"), default=["heads", "rejection"])
    args = parser.parse_args()
    shape = (20, 200, 2000) if args.quick else (100, 500, 20_000)
    print(f"## Heads and rejection ({time.strftime('%Y-%m-%d')})\n\n" + environment() + "\n")
    print(f"{shape[0]} classes x {shape[1]} samples x 512 dims; {shape[2]:,} queries.\n")
    if "heads" in args.parts:
        heads(shape, args.repeat)
    if "rejection" in args.parts:
        rejection(shape, args.repeat)


def heads(shape: tuple, repeat: int) -> None:
    print("| head | fit s | fit vs k-means k=20 | predict s | predict vs mean | fit peak extra MiB |")
    print("|---|---|---|---|---|---|")
    base_fit = base_predict = None
    for name, settings in HEADS.items():
        fit_s, extra, _ = run_isolated(partial(data, *shape), partial(fit, settings=settings), repeat)
        predict_s, _, _ = run_isolated(partial(fitted, shape, settings), predict, repeat)
        base_fit = base_fit or fit_s
        if base_predict is None and settings.get("generation") == "mean":
            base_predict = predict_s
        ratio = f"{predict_s / base_predict:.2f}x" if base_predict else "-"
        print(f"| {name} | {fit_s:.3f} | {fit_s / base_fit:.2f}x | {predict_s:.3f} | {ratio} | {extra:.0f} |",
              flush=True)


def rejection(shape: tuple, repeat: int) -> None:
    print("\n| rejection score (k-means k=20) | fit s | fit vs without | predict s | predict vs without |")
    print("|---|---|---|---|---|")
    plain = dict(generation="kmeans", k=20)
    fit_plain, _, _ = run_isolated(partial(data, *shape), partial(fit, settings=plain), repeat)
    predict_plain, _, _ = run_isolated(partial(fitted, shape, plain), predict, repeat)
    print(f"| none (baseline) | {fit_plain:.3f} | 1.00x | {predict_plain:.3f} | 1.00x |")
    for reject in ("max_score", "energy", "knn", "mahalanobis", "neco"):
        settings = dict(plain, reject=reject)
        fit_s, _, _ = run_isolated(partial(data, *shape), partial(fit, settings=settings), repeat)
        predict_s, _, _ = run_isolated(partial(fitted, shape, settings), predict, repeat)
        print(f"| {reject} | {fit_s:.3f} | {fit_s / fit_plain:.2f}x | {predict_s:.3f} | "
              f"{predict_s / predict_plain:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
