"""The zero-shot blend (text_alpha) on real images, with a label embedding that exists before any support image.

No CLIP weights can be downloaded on the offline machines, so the "text tower" here is a stand-in with the same
shape: the rows of EfficientNet-Lite0's own ImageNet-1k classifier for the ImageNet concepts nearest to each
Fashion-MNIST class (several rows averaged per class, as prompts are), in the space of the pooled features the
heads see. They are named by hand, before looking at any result (CLASS_CONCEPTS). For each shot count and seed
(the shot ladder's Fashion-MNIST split: 200 support, 50 validation, 100 test images per class), the same head is
fitted without text and with the blend (text_alpha auto, chosen on the support set), beside the zero-shot
classifier alone (the cosine with each class's label embedding). Accuracy on the 1,000 test images.
With --speed: the cost of the blend at prediction, against the same head without it, in the same process
(100 classes x 500 support samples x 512 dims, 20,000 queries, best of 5).
Run: python benchmarks/bench_text_blend.py [--heads gda tukey_gda] [--seeds 0 1 2] [--speed]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment  # noqa: E402

# ImageNet-1k rows per Fashion-MNIST class (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker,
# Bag, Ankle boot); ImageNet has no shirt or trouser class: the nearest garments stand in.
CLASS_CONCEPTS = {
    "T-shirt/top": [610],  # jersey, T-shirt
    "Trouser": [608],  # jean, blue jean, denim
    "Pullover": [841, 474],  # sweatshirt, cardigan
    "Dress": [578, 689],  # gown, overskirt
    "Coat": [869, 568, 617],  # trench coat, fur coat, lab coat
    "Sandal": [774],  # sandal
    "Shirt": [834],  # suit
    "Sneaker": [770],  # running shoe
    "Bag": [748, 636, 414],  # purse, mailbag, backpack
    "Ankle boot": [514],  # cowboy boot
}


def label_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """Rows of Lite0's packaged ImageNet classifier (one per concept) and the Fashion-MNIST class of each."""
    import torch

    from imprint.encoders.timm_backend import packaged_weights_file

    weights = torch.load(packaged_weights_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    fc = weights["_fc.weight"].numpy()
    rows = [(c, concept) for c, concepts in enumerate(CLASS_CONCEPTS.values()) for concept in concepts]
    return fc[[concept for _, concept in rows]].astype(np.float32), np.array([c for c, _ in rows])


def prediction_cost(heads: list[str], repeat: int = 5) -> None:
    """Predict and decision_function with the blend against the same head without it (same fit, same queries)."""
    import time

    from imprint import ImprintClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 512)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(100), 500))
    X = centres[labels] + rng.normal(scale=1.5, size=(len(labels), 512)).astype(np.float32)
    queries = centres[rng.integers(0, 100, 20_000)] + rng.normal(scale=1.5, size=(20_000, 512)).astype(np.float32)
    text = centres + rng.normal(scale=1.0, size=centres.shape).astype(np.float32)
    fixed = {"gda": {"shrinkage": 0.1}, "tukey_gda": {"shrinkage": 0.1}, "tip_adapter": {"beta": 5.5}}
    print("\n| head | predict: blend / head alone | decision_function: blend / head alone |\n|---|---:|---:|")
    for head in heads:
        settings = fixed.get(head, {})  # fixed hyperparameters: only prediction is timed
        plain = ImprintClassifier.from_preset(head, **settings, text_alpha=None).fit(X, labels)
        blend = ImprintClassifier.from_preset(head, **settings, text_alpha=1.0).fit(
            X, labels, text_embeddings=text, text_labels=np.arange(100))
        ratios = []
        for method in ("predict", "decision_function"):
            best = {}
            for name, model in (("plain", plain), ("blend", blend)):
                times = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    getattr(model, method)(queries)
                    times.append(time.perf_counter() - start)
                best[name] = min(times)
            ratios.append(best["blend"] / best["plain"])
        print(f"| {head} | {ratios[0]:.2f}x | {ratios[1]:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=["simpleshot", "gda", "tukey_gda", "tip_adapter"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--speed", action="store_true", help="only the prediction cost of the blend")
    args = parser.parse_args()
    if args.speed:
        print(environment())
        prediction_cost(["imprint", "simpleshot", "gda"])
        return
    from imprint import ImprintClassifier
    from imprint.encoders import create_encoder
    from imprint.estimator.text_blend import class_text_weights, text_cosines
    from imprint.grid.config import DatasetSpec
    from imprint.grid.data import embed_dataset, split
    from imprint.io.cache import EmbeddingCache

    spec = DatasetSpec(name="fashion_mnist", support_per_class=200, val_per_class=50, test_per_class=100)
    data = embed_dataset(create_encoder("lite0", device="cpu"), spec, EmbeddingCache())
    text, text_labels = label_embeddings()
    assert list(CLASS_CONCEPTS) == list(data.class_names), data.class_names
    import torch

    weights = class_text_weights(text, text_labels, 10)
    test = split(data, spec, "all", 1, 0).test
    zero_shot = text_cosines(torch.from_numpy(data.X[test]), torch.from_numpy(weights)).argmax(1).numpy()
    truth = split(data, spec, "all", 1, 0).labels[test]
    print(environment())
    print(f"zero-shot alone (label embeddings, no support image): {100 * (zero_shot == truth).mean():.2f}%\n")
    print("| head | shots | alone | + text (alpha auto) | gain | alphas chosen |")
    print("|---|---:|---:|---:|---:|---|")
    for head in args.heads:
        for shots in args.shots:
            alone, blended, alphas = [], [], []
            for seed in args.seeds:
                rows = split(data, spec, "all", shots, seed)
                Xs, ys = data.X[rows.support], rows.labels[rows.support]
                Xt, yt = data.X[rows.test], rows.labels[rows.test]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # 1 shot: nothing to tune on, said once in the docs
                    plain = ImprintClassifier.from_preset(head, seed=seed, device="cpu").fit(Xs, ys)
                    blend = ImprintClassifier.from_preset(head, seed=seed, device="cpu").fit(
                        Xs, ys, text_embeddings=text, text_labels=text_labels)
                alone.append(100 * (plain.predict(Xt) == yt).mean())
                blended.append(100 * (blend.predict(Xt) == yt).mean())
                alphas.append(blend.tuned_["text_alpha"])
            gain = np.mean(blended) - np.mean(alone)
            print(f"| {head} | {shots} | {np.mean(alone):.2f} | {np.mean(blended):.2f} | {gain:+.2f} | "
                  f"{', '.join(f'{a:g}' for a in alphas)} |", flush=True)


if __name__ == "__main__":
    main()
