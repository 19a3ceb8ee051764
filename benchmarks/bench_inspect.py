"""``imprint inspect`` measured on real images (issue 25), each part against a named baseline in the same run.

- labels: labels flipped at random (5% and 20%, seeds 0-2) on Fashion-MNIST (300 training images per class) and
  the textile folder (all 2,000); precision, recall and F1 of the flagged set: imprint's confident learning on
  the mean of cross-fitted GDA and leave-one-out 15-NN probabilities against cleanlab's ``find_label_issues`` on
  the cross-validated probabilities of a scikit-learn logistic regression on the same embeddings (5 folds both).
- duplicates: near copies planted (resized to 2/3, JPEG quality 40, cropped 3% a side) of 300 Fashion-MNIST
  images among 2,000 (upscaled to 112 px) and of 150 textile images among the 2,000; recall of the planted pairs
  judged copies, and the pairs found that were not planted, judged copies (false alarms) or very similar.
- clean: the whole inspection of data with nothing planted (1,000 MNIST digits, 2,000 Fashion-MNIST images at
  their 28 px, the 2,000 textile images): findings of each kind per 1,000 images, the false-alarm rates.
- active: a learning curve on Fashion-MNIST and textile: from one labelled image per class, label b = 1, 2, 5, 10,
  20 more per class, picked by ``pick_to_label`` or at random (5 seeds), then GDA's test accuracy.
- scale: 100,000 support embeddings (real ones with small noise added), 5% of labels flipped: the time of
  the whole inspection (no images) against cleanlab's run (logistic regression cross-validated, then
  find_label_issues) on the same embeddings.
Run: python benchmarks/bench_inspect.py [--parts labels,duplicates,clean,active,scale]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment

warnings.filterwarnings("ignore")


def fashion(per_class: int, test_per_class: int = 0):
    from imprint.data.builtin import load_dataset, per_class_split
    from imprint.encoders import create_encoder

    data = load_dataset("fashion_mnist", "train")
    first, second = per_class_split(data.labels, per_class, test_per_class, seed=0)
    encoder = create_encoder("lite0", device="cpu")
    X = encoder.encode_images(data.images[first])
    Xt = encoder.encode_images(data.images[second]) if test_per_class else None
    return np.asarray(X), data.labels[first], (None if Xt is None else np.asarray(Xt)), data.labels[second]


def textile():
    from imprint.data.builtin import folder_of
    from imprint.data.folder import scan_folder
    from imprint.workflows.embedder import Embedder, EmbedOptions

    folder = scan_folder(folder_of("textile"))
    X, ok = Embedder(EmbedOptions(progress=False))(folder.paths)
    return np.asarray(X), folder.class_labels[ok], [p for p, good in zip(folder.paths, ok) if good]


def flip(labels: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    noisy = labels.copy()
    rows = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    for i in rows:
        noisy[i] = rng.choice(classes[classes != labels[i]])
    return noisy, np.isin(np.arange(len(labels)), rows)


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    hit = (flagged & truth).sum()
    p, r = hit / max(flagged.sum(), 1), hit / max(truth.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def imprint_flags(X: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """What inspect_data flags: confident learning on the mean of cross-fitted GDA and k-NN probabilities."""
    from imprint.analysis.inspection.crossfit import NEIGHBOUR_VOTES, cross_fitted_proba, neighbour_votes
    from imprint.analysis.inspection.duplicates import unit_rows
    from imprint.analysis.inspection.labels import find_label_issues
    from imprint.core.search import nearest_within

    proba = cross_fitted_proba(X, codes, codes.max() + 1, preset="gda", n_folds=5, seed=0)
    votes = neighbour_votes(nearest_within(unit_rows(X), NEIGHBOUR_VOTES + 1)[1], codes, codes.max() + 1)
    return find_label_issues((proba + votes) / 2, codes).flagged


def cleanlab_flags(X: np.ndarray, codes: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    proba = cross_val_predict(LogisticRegression(max_iter=max_iter), X, codes,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    return find_label_issues(codes, proba)


def part_labels(sets: dict) -> None:
    print("\n## Likely wrong labels: imprint (confident learning on cross-fitted GDA + 15-NN probabilities) vs "
          "cleanlab (cross-validated logistic regression + find_label_issues)\n")
    print("| data | noise | imprint P / R / F1 | cleanlab P / R / F1 | F1 ratio | time ratio |")
    print("|---|---|---|---|---|---|")
    for name, (X, y) in sets.items():
        for rate in (0.05, 0.2):
            mine, theirs, t_mine, t_theirs = [], [], 0.0, 0.0
            for seed in range(3):
                noisy, truth = flip(y, rate, seed)
                codes = np.unique(noisy, return_inverse=True)[1]
                start = time.perf_counter()
                mine.append(prf(imprint_flags(X, codes), truth))
                t_mine += time.perf_counter() - start
                start = time.perf_counter()
                theirs.append(prf(cleanlab_flags(X, codes), truth))
                t_theirs += time.perf_counter() - start
            m, t = np.mean(mine, axis=0), np.mean(theirs, axis=0)
            print(f"| {name} ({len(y)}) | {rate:.0%} | {m[0]:.3f} / {m[1]:.3f} / **{m[2]:.3f}** | {t[0]:.3f} / "
                  f"{t[1]:.3f} / **{t[2]:.3f}** | {m[2] / t[2]:.2f} | {t_mine / t_theirs:.2f} |", flush=True)


def _plant(images: list, folder: Path, crop: float = 0.03) -> list[tuple[Path, Path]]:
    """Three near copies of every (path, PIL image) pair written under `folder`: (original, copy) pairs."""
    from PIL import Image

    pairs = []
    for number, (path, image) in enumerate(images):  # numbered: two folders may hold one file name
        w, h = image.size
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=40)
        copies = {"resized": image.resize((w * 2 // 3, h * 2 // 3)),
                  "jpeg": Image.open(io.BytesIO(buffer.getvalue())),
                  "cropped": image.crop((int(w * crop), int(h * crop), int(w * (1 - crop)), int(h * (1 - crop))))}
        for kind, copy in copies.items():
            target = folder / f"{number:04d}_{path.stem}_{kind}.png"
            copy.convert("RGB").save(target)
            pairs.append((path, target))
    return pairs


def part_duplicates(textile_paths: list[Path]) -> None:
    from PIL import Image

    from imprint.analysis.inspection import DEFAULTS
    from imprint.analysis.inspection.duplicates import COARSE_THRESHOLD, find_duplicates
    from imprint.data.builtin import load_dataset
    from imprint.workflows.embedder import Embedder, EmbedOptions

    print("\n## Planted near duplicates (resized to 2/3, JPEG quality 40, cropped 3% a side)\n")
    print(f"Defaults: embedding cosine >= {DEFAULTS['duplicate_threshold']}, 16 x 16 pixel-thumbnail cosine >= "
          f"{DEFAULTS['pixel_threshold']}, 8 x 8 >= {COARSE_THRESHOLD}, identical files.\n")
    print("| data | images | planted pairs | judged copies: recall (resized / jpeg / cropped) | found not planted: "
          "judged copies / very similar |")
    print("|---|---|---|---|---|")
    embed = Embedder(EmbedOptions(progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = load_dataset("fashion_mnist", "test")
        rng = np.random.default_rng(0)
        originals = []
        for i, row in enumerate(rng.choice(len(data.labels), 2000, replace=False)):
            path = tmp / f"fm{i:04d}.png"
            Image.fromarray(data.images[row]).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC).save(path)
            originals.append(path)
        textile_chosen = [textile_paths[i] for i in rng.choice(len(textile_paths), 150, replace=False)]
        sets = {"Fashion-MNIST": (originals, [(p, Image.open(p)) for p in originals[:300]]),
                "textile": (textile_paths, [(p, Image.open(p)) for p in textile_chosen])}
        for name, (base, chosen) in sets.items():
            planted = _plant(chosen, tmp, crop=0.03)
            paths = list(base) + [copy for _, copy in planted]
            X, _ = embed(paths)
            found = find_duplicates(np.asarray(X), paths, threshold=DEFAULTS["duplicate_threshold"],
                                    pixel_threshold=DEFAULTS["pixel_threshold"])
            index = {p: i for i, p in enumerate(paths)}
            judged = {(min(p.first, p.second), max(p.first, p.second)): p.copy for p in found}
            want = [(min(index[a], index[b]), max(index[a], index[b])) for a, b in planted]
            hits = np.array([judged.get(pair, False) for pair in want]).reshape(-1, 3)
            planted_set = set(want)
            # pairs between two copies of one original are planted too (same source image)
            source = {index[copy]: index[orig] for orig, copy in planted}
            unplanted = [copy for p, copy in judged.items()
                         if p not in planted_set and source.get(p[0], p[0]) != source.get(p[1], p[1])]
            kinds = " / ".join(f"{v:.2f}" for v in hits.mean(0))
            print(f"| {name} | {len(paths)} | {len(want)} | **{hits.mean():.3f}** ({kinds}) "
                  f"| {sum(unplanted)} / {len(unplanted) - sum(unplanted)} |", flush=True)


def part_clean(textile_paths: list[Path]) -> None:
    """Findings on data with nothing planted: each kind per 1,000 images (for copies, the false-alarm rate)."""
    from PIL import Image

    import imprint
    from imprint.data.builtin import load_dataset

    print("\n## Clean data: findings per 1,000 images (nothing planted; a copy found here is a false alarm, unless "
          "the data set itself holds one)\n")
    print("| data | images | duplicates (copies) | very similar | likely wrong labels | outliers |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {}
        for name, dataset, count in (("MNIST digits", "mnist5k", 1000), ("Fashion-MNIST (28 px)", "fashion_mnist",
                                                                         2000)):
            data = load_dataset(dataset)
            folder = tmp / dataset
            for i, row in enumerate(rng.choice(len(data.labels), count, replace=False)):
                target = folder / data.class_names[data.labels[row]]
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(data.images[row]).save(target / f"{i:04d}.png")
            sets[name] = folder
        sets["textile"] = Path(textile_paths[0]).parent.parent
        for name, folder in sets.items():
            found = imprint.inspect_data(folder, tmp / f"report-{name}", progress=False)
            n = found.contents.settings["n_support"]
            rate = {kind: 1000 * count / n for kind, count in found.counts.items()}
            print(f"| {name} | {n} | {rate['duplicate']:.1f} | {rate['similar']:.1f} | {rate['label']:.1f} | "
                  f"{rate['outlier']:.1f} |", flush=True)


def part_active(sets: dict) -> None:
    from imprint import ImprintClassifier
    from imprint.analysis.inspection.selection import pick_to_label

    print("\n## Which images to label next: test accuracy after labelling b more images per class (from one "
          "labelled image per class), picked by imprint or at random; mean of 5 seeds\n")
    print("| data | b | picked | random | difference |")
    print("|---|---|---|---|---|")
    for name, (X, y, Xq, yq) in sets.items():
        classes = np.unique(y)
        for b in (1, 2, 5, 10, 20):
            picked, random = [], []
            for seed in range(5):
                rng = np.random.default_rng(seed)
                start = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes])
                pool = np.setdiff1d(np.arange(len(y)), start)
                budget = b * len(classes)
                model = ImprintClassifier.from_preset("gda", seed=seed).fit(X[start], y[start])
                picks = pool[pick_to_label(model.predict_proba(X[pool]), X[pool], budget, seed=seed).rows]
                chance = rng.choice(pool, budget, replace=False)
                for rows, out in ((picks, picked), (chance, random)):
                    chosen = np.r_[start, rows]
                    fitted = ImprintClassifier.from_preset("gda", seed=seed).fit(X[chosen], y[chosen])
                    out.append(float((fitted.predict(Xq) == yq).mean()))
            print(f"| {name} | {b} | {np.mean(picked):.4f} | {np.mean(random):.4f} | "
                  f"{np.mean(picked) - np.mean(random):+.4f} |", flush=True)


def part_scale(X: np.ndarray, y: np.ndarray) -> None:
    import resource

    from imprint.analysis.inspection import inspect_data

    print("\n## Scale: 100,000 support embeddings (1280-d), 5% of labels flipped\n")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), 100_000)
    big = X[rows] + rng.normal(0, 0.05 * X.std(), (100_000, X.shape[1])).astype(np.float32)
    labels, truth = flip(y[rows], 0.05, 0)
    with tempfile.TemporaryDirectory() as tmp:
        from imprint.io.embeddings_file import write_embeddings_file

        source = Path(tmp) / "big.npz"
        write_embeddings_file(source, big.astype(np.float32), labels, [f"row{i}" for i in range(len(big))],
                              "timm:tf_efficientnet_lite0")
        start = time.perf_counter()
        found = inspect_data(source, Path(tmp) / "report", progress=False)
        t_mine = time.perf_counter() - start
        flagged = np.zeros(len(labels), dtype=bool)
        flagged[[int(f.path[3:]) for f in found.findings if f.kind == "label"]] = True
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    codes = np.unique(labels, return_inverse=True)[1]
    start = time.perf_counter()
    theirs = cleanlab_flags(big, codes, max_iter=200)
    t_theirs = time.perf_counter() - start
    m, t = prf(flagged, truth), prf(theirs, truth)
    print("| run | seconds | label F1 |")
    print("|---|---|---|")
    print(f"| imprint inspect (everything: labels, outliers, duplicates, class health) | {t_mine:.0f} | {m[2]:.3f} |")
    print(f"| cleanlab (logistic regression, 5-fold, max_iter 200; labels only) | {t_theirs:.0f} | {t[2]:.3f} |")
    print(f"\nratio imprint / cleanlab: **{t_mine / t_theirs:.2f}**; peak memory of the process {peak:,.0f} MiB "
          f"(the embeddings: {big.nbytes / 2**20:,.0f} MiB); counts {found.counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="labels,duplicates,clean,active,scale")
    parts = parser.parse_args().parts.split(",")
    print(environment())
    Xf, yf, Xfq, yfq = fashion(300, 100)
    Xt, yt, tpaths = textile()
    if "labels" in parts:
        part_labels({"Fashion-MNIST": (Xf, yf), "textile": (Xt, yt)})
    if "duplicates" in parts:
        part_duplicates(tpaths)
    if "clean" in parts:
        part_clean(tpaths)
    if "active" in parts:
        split = np.random.default_rng(0).permutation(len(yt))
        cut = int(0.75 * len(yt))
        part_active({"Fashion-MNIST": (Xf, yf, Xfq, yfq),
                     "textile": (Xt[split[:cut]], yt[split[:cut]], Xt[split[cut:]], yt[split[cut:]])})
    if "scale" in parts:
        part_scale(Xf, yf)


if __name__ == "__main__":
    main()
