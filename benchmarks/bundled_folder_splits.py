"""The README's first command over many splits: `method="auto"` against every preset on the bundled folder
(examples/fashion: 10 classes x 20 images), each split holding out 30% of every class as `imprint fit
--test-fraction 0.3 --seed S` does (14 support and 6 test images per class).

One split's 60 test images tell two methods apart only by 4 or more images (one image is 1.7 points), so the
comparison is over `--splits` seeds: the mean accuracy of each method, its standard error over the splits, and
auto's paired difference from it (mean, and the splits where auto is ahead / tied / behind). Every setting is
chosen on each split's support images alone. Embeddings: the default encoder, from the embedding cache where there.
Run: python benchmarks/bundled_folder_splits.py [--splits 30]
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
from imprint.core.presets import PRESETS
from imprint.data.folder import scan_folder
from imprint.encoders import create_encoder
from imprint.io.cache import EmbeddingCache
from imprint.workflows.loader import embed_paths
from imprint.workflows.sources import select

FOLDER = Path(__file__).resolve().parent.parent / "examples" / "fashion"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", type=int, default=30)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = scan_folder(FOLDER)
    embedded = embed_paths(create_encoder(device="cpu"), folder.paths, cache=EmbeddingCache(), progress=False)
    X, labels = embedded.embeddings, folder.class_labels.astype(str)[embedded.ok]
    methods = ["auto", *PRESETS]
    accuracy = {method: [] for method in methods}
    chosen: dict[str, int] = {}
    for seed in range(args.splits):
        selection = select(labels, test_fraction=0.3, seed=seed)
        support, test = selection.support, selection.test
        for method in methods:
            clf = ImprintClassifier(method=method, seed=seed).fit(X[support], labels[support])
            accuracy[method].append(100.0 * float((clf.predict(X[test]) == labels[test]).mean()))
            if method == "auto":
                chosen[clf.tuned_["method"]] = chosen.get(clf.tuned_["method"], 0) + 1
    auto = np.asarray(accuracy["auto"])
    print(f"## method=auto against every preset on the bundled folder, {args.splits} splits of 14 + 6 images per "
          f"class\n\n{environment()}\n")
    print("| method | mean accuracy % | standard error | auto minus it (mean) | auto ahead / tied / behind |")
    print("|---|---|---|---|---|")
    for method in sorted(methods, key=lambda m: -np.mean(accuracy[m])):
        values = np.asarray(accuracy[method])
        diff = auto - values
        print(f"| {method} | {values.mean():.2f} | {values.std(ddof=1) / np.sqrt(len(values)):.2f} | "
              + ("-" if method == "auto" else f"{diff.mean():+.2f}") + " | "
              + ("-" if method == "auto" else f"{(diff > 0).sum()} / {(diff == 0).sum()} / {(diff < 0).sum()}")
              + " |")
    print("\nauto chose: " + ", ".join(f"{name} {count}x" for name, count in sorted(chosen.items(),
                                                                                     key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
