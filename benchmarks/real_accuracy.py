"""Imprinting accuracy on real images with the offline pretrained encoder (the real-data tests' protocol).

300 support and 100 test images per class, disjoint, seed 0; EfficientNet-Lite0 (ImageNet-1k) embeddings.
Run: python benchmarks/real_accuracy.py  (prints a markdown table for docs/results.md)
"""
from __future__ import annotations

from imprint import ImprintClassifier
from imprint.data.builtin import load_dataset, per_class_split
from imprint.encoders import create_encoder

VARIANTS = {
    "Qi et al.: l2 / mean / l2 / l2 / max": {"generation": "mean"},
    "Hosoda et al.: none / mean / quantile / none / max": {"generation": "mean", "norm_pre": "none",
                                                           "norm_post": "quantile", "norm_inf": "none"},
    "Janson et al.: none / mean / none / none / 1-nn euclidean": {"generation": "mean", "norm_pre": "none",
                                                                  "norm_post": "none", "norm_inf": "none",
                                                                  "metric": "euclidean"},
    "k-means k=5, L2 everywhere": {"generation": "kmeans", "k": 5},
    "k-means k=20, L2 everywhere (IMPRINT best)": {"generation": "kmeans", "k": 20},
    "all samples, L2 everywhere (1-NN)": {"generation": "all"},
    "oracle: none / ls / none / none / max": {"generation": "ls", "norm_pre": "none", "norm_post": "none",
                                              "norm_inf": "none"},
}


def main() -> None:
    encoder = create_encoder(device="auto")
    results = {}
    for dataset in ("mnist5k", "fashion_mnist"):
        data = load_dataset(dataset)
        support, test = per_class_split(data.labels, 300, 100, seed=0)
        Xs, Xq = encoder.encode_images(data.images[support]), encoder.encode_images(data.images[test])
        for name, settings in VARIANTS.items():
            clf = ImprintClassifier(**settings).fit(Xs, data.labels[support])
            results[name, dataset] = clf.score(Xq, data.labels[test])
    print(f"Encoder {encoder.id}; 300 support / 100 test images per class.\n")
    print("| variant (NORM_pre / GEN / NORM_post / NORM_inf / AGG) | MNIST 5k | Fashion-MNIST | mean |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        a, b = results[name, "mnist5k"], results[name, "fashion_mnist"]
        print(f"| {name} | {100 * a:.1f} | {100 * b:.1f} | {100 * (a + b) / 2:.1f} |")


if __name__ == "__main__":
    main()
