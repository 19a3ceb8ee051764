"""How much of the calibration error measured on the shot ladder is the measurement's own: the expected calibration
error (ECE) of `predict_proba` on each task's test images, beside the ECE that a perfectly calibrated model with
the same probabilities would show on the same number of test images (labels drawn from its own probabilities,
200 draws), and whether the probabilities lean over- or under-confident (mean confidence minus accuracy).

The shot ladder's protocol (configs/shot_ladder.yaml): EfficientNet-Lite0, Fashion-MNIST and MNIST 5k, tasks all /
even / odd / first3, `--shots` support images per class after 50 validation images, 100 test images per class,
seeds 0-2 (median per task, then the mean over the 8 tasks). Embeddings come from the embedding cache where there.
Run: python benchmarks/calibration_floor.py [--shots 16] [--methods auto tukey_gda]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment

from imprint import ImprintClassifier
from imprint.encoders import create_encoder
from imprint.grid.config import DatasetSpec
from imprint.grid.data import embed_dataset, split
from imprint.io.cache import EmbeddingCache
from imprint.workflows.evaluate import expected_calibration_error

TASKS = ("all", "even", "odd", "first3")
DRAWS = 200


def calibrated_floor(proba: np.ndarray, rng: np.random.Generator) -> float:
    """The mean ECE of these probabilities against labels drawn from them: what perfect calibration reads as on
    this many test images."""
    cumulative = proba.cumsum(axis=1)
    floors = []
    for _ in range(DRAWS):
        drawn = (rng.random((len(proba), 1)) > cumulative).sum(axis=1).clip(0, proba.shape[1] - 1)
        floors.append(expected_calibration_error(proba, drawn))
    return float(np.mean(floors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=["auto", "tukey_gda"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"## Calibration at {args.shots} shots against its measurement floor\n\n" + environment() + "\n")
    encoder, cache = create_encoder("lite0", device="cpu"), EmbeddingCache()
    table = {method: [] for method in args.methods}
    for name in ("fashion_mnist", "mnist5k"):
        spec = DatasetSpec(name=name, support_per_class=200, val_per_class=50, test_per_class=100)
        data = embed_dataset(encoder, spec, cache)
        for task in TASKS:
            for method in args.methods:
                measured, floor, lean = [], [], []
                for seed in range(3):
                    rows = split(data, spec, task, args.shots, seed)
                    clf = ImprintClassifier(method=method, seed=seed).fit(data.X[rows.support],
                                                                          rows.labels[rows.support])
                    proba = clf.predict_proba(data.X[rows.test])
                    truth = np.searchsorted(clf.classes_, rows.labels[rows.test])
                    measured.append(expected_calibration_error(proba, truth))
                    floor.append(calibrated_floor(proba, np.random.default_rng(seed)))
                    lean.append(float(proba.max(axis=1).mean() - (proba.argmax(axis=1) == truth).mean()))
                table[method].append((name, task, len(rows.test), np.median(measured), np.median(floor),
                                      min(lean), max(lean)))
    print("| method | dataset | task | test images | ECE | floor (perfectly calibrated) | confidence - accuracy "
          "(seeds) |\n|---|---|---|---|---|---|---|")
    for method, found in table.items():
        for name, task, n_test, ece, floor, low, high in found:
            print(f"| {method} | {name} | {task} | {n_test} | {ece:.3f} | {floor:.3f} | {low:+.3f} to {high:+.3f} |")
    for method, found in table.items():
        ece, floor = np.mean([row[3] for row in found]), np.mean([row[4] for row in found])
        print(f"\n{method}: mean ECE {ece:.3f}, mean floor {floor:.3f}, excess {ece - floor:.3f}")


if __name__ == "__main__":
    main()
