"""The ``imprint`` command line: embed, fit, predict, eval, info and cache, from folders of images."""
from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from imprint import ImprintClassifier
from imprint.atomic import atomic_write_bytes
from imprint.stages import AGGREGATIONS, GENERATORS, KMEANS_BACKENDS, METRICS, NORMS
from imprint.stages.aggregation import MNN_WEIGHTINGS
from imprint.stages.norm import QUANTILE_REFERENCES

STAGE_CHOICES = {"generation": GENERATORS, "norm_pre": NORMS, "norm_post": NORMS, "norm_inf": NORMS,
                 "aggregation": AGGREGATIONS, "metric": METRICS}
OTHER_CHOICES = {"mnn_weights": MNN_WEIGHTINGS, "quantile_reference": QUANTILE_REFERENCES,
                 "kmeans_backend": KMEANS_BACKENDS}


class CLIError(Exception):
    """A user mistake reported as one line, exit status 2."""


# ---------------------------------------------------------------- shared options
def add_encoding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default=None,
                        help="encoder id, e.g. timm:tf_efficientnet_lite0 (default), lite1, lite2")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: cores - 1 with a GPU, 0 on a small CPU machine)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder (default: user cache dir)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--strict", action="store_true", help="unreadable images are an error, not a warning")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _k_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a positive integer or 'auto'; got {text!r}") from None


def add_stage_options(parser: argparse.ArgumentParser) -> None:
    """One option per ImprintClassifier setting, with the registered names as choices."""
    group = parser.add_argument_group("imprinting stages (ImprintClassifier settings)")
    for name, param in inspect.signature(ImprintClassifier).parameters.items():
        if name in ("device", "seed"):
            continue
        flag = "--" + name.replace("_", "-")
        choices = STAGE_CHOICES[name].names() if name in STAGE_CHOICES else OTHER_CHOICES.get(name)
        kind = _k_value if name == "k" else type(param.default) if choices is None else str
        group.add_argument(flag, dest=name, type=kind, default=param.default, choices=choices,
                           help=f"default: {param.default}")


def embedder(args: argparse.Namespace, encoder_id: str | None):
    """A function paths -> (embeddings, ok mask) using the chosen encoder and cache."""
    from imprint.cache import EmbeddingCache
    from imprint.embed import embed_paths
    from imprint.encoders import DEFAULT_ENCODER, create_encoder

    encoder = create_encoder(encoder_id or DEFAULT_ENCODER, device=args.device)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)

    def run(paths: Sequence[Path]):
        result = embed_paths(encoder, paths, cache=cache, batch_size=args.batch_size, workers=args.workers,
                             progress=not args.quiet, strict=args.strict)
        if result.failed:
            warn(f"skipped {len(result.failed)} unreadable image(s): {', '.join(map(str, result.failed))}")
        return result.embeddings, result.ok

    return encoder, run


def warn(message: str) -> None:
    print(f"imprint: warning: {message}", file=sys.stderr)


@contextmanager
def warnings_as_messages() -> Iterator[None]:
    """Library warnings (empty class folders, short classes) become one 'imprint: warning:' line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        warn(str(item.message))


def scan(folder: str, min_classes: int = 2):
    from imprint.data.folder import scan_folder

    with warnings_as_messages():
        return scan_folder(folder, min_classes=min_classes)


def write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ---------------------------------------------------------------- commands
def cmd_embed(args: argparse.Namespace) -> None:
    data = scan(args.folder, min_classes=1)
    if args.output.endswith(".npz"):
        if args.engine != "local":
            raise CLIError("--engine ray writes a memory-mapped store: give a folder as --output, not a .npz file")
        encoder, run = embedder(args, args.encoder)
        embeddings, ok = run(data.paths)
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=embeddings, labels=np.asarray(data.class_labels[ok], dtype=str),
                 paths=np.asarray([str(p) for p, good in zip(data.paths, ok) if good]),
                 encoder=np.asarray(encoder.id))
        atomic_write_bytes(args.output, buffer.getvalue())
        print(f"embedded {len(embeddings)} images of {len(data.class_names)} classes with {encoder.id} "
              f"-> {args.output}")
        return
    embed_store(args, data)


def embed_store(args: argparse.Namespace, data) -> None:
    """Embed into a memory-mapped store folder, resuming an interrupted run (locally or with Ray)."""
    from imprint.cache import encoder_namespace
    from imprint.embed import embed_into_store
    from imprint.encoders import DEFAULT_ENCODER, create_encoder
    from imprint.store import EmbeddingStore

    encoder = create_encoder(args.encoder or DEFAULT_ENCODER, device=args.device)
    store = EmbeddingStore.create(args.output, encoder_id=encoder.id, encoder_key=encoder_namespace(encoder),
                                  dim=encoder.embedding_dim, paths=[str(p) for p in data.paths],
                                  labels=data.labels, class_names=data.class_names)
    before = len(store.pending())
    if before < len(data.paths):
        print(f"resuming: {len(data.paths) - before} of {len(data.paths)} images already embedded")
    if args.engine == "ray":
        from imprint.distributed import embed_with_ray

        embed_with_ray(encoder.id, store, batch_size=args.batch_size, actors=args.actors, address=args.ray_address,
                       device=args.device, progress=not args.quiet)
    else:
        embed_into_store(encoder, store, batch_size=args.batch_size, workers=args.workers, progress=not args.quiet)
    failed = store.unreadable()
    if failed:
        warn(f"skipped {len(failed)} unreadable image(s): {', '.join(failed)}")
    print(f"embedded {len(data.paths) - len(failed)} images of {len(data.class_names)} classes with {encoder.id} "
          f"-> {args.output} (memory-mapped store)")


def _settings(args: argparse.Namespace) -> dict:
    names = inspect.signature(ImprintClassifier).parameters
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def cmd_fit(args: argparse.Namespace) -> None:
    from imprint.data.folder import sample_shots, split_support_test
    from imprint.store import is_store

    if is_store(args.folder):
        fit_from_store(args)
        return
    data = scan(args.folder, min_classes=1 if args.zero_shot else 2)
    support = np.arange(len(data.paths))
    test = None
    if args.test_fraction:
        support, test = split_support_test(data.labels, args.test_fraction, seed=args.seed)
    if args.shots:
        with warnings_as_messages():
            support = support[sample_shots(data.labels[support], args.shots, args.seed, data.class_names)]
    settings = _settings(args)
    clf = ImprintClassifier(**settings)
    clf._check_settings()  # a bad setting fails before any image is embedded
    encoder, run = embedder(args, args.encoder)
    X, ok = run([data.paths[i] for i in support])
    lost = sorted(set(data.class_labels[support]) - set(data.class_labels[support][ok]))
    if lost:
        warn(f"{len(lost)} class(es) have no readable support image and are left out: {', '.join(lost)}")
    text = zero_shot_proxies(encoder, data.class_names + data.empty_classes, args) if args.zero_shot else {}
    clf.fit(X, data.class_labels[support][ok], encoder_id=encoder.id, **text)
    clf.save(args.output)
    print(f"imprinted {len(clf.classes_)} classes from {len(X)} images ({len(clf.proxies_)} proxies, "
          f"{encoder.id}) -> {args.output}")
    if test is not None:
        Xq, okq = run([data.paths[i] for i in test])
        report_accuracy(clf, Xq, data.class_labels[test][okq], "held-out")
    if args.test_dir:
        evaluate_folder(clf, args.test_dir, args, run)


def fit_from_store(args: argparse.Namespace) -> None:
    """Imprint from a memory-mapped store of 'imprint embed' (nothing re-encoded; the whole support set is
    read in place unless a split or few-shot sample selects rows)."""
    from imprint.data.folder import sample_shots, split_support_test
    from imprint.store import EmbeddingStore

    if args.zero_shot or args.test_dir:
        raise CLIError("--zero-shot and --test-dir need the encoder and images: fit from the image folder instead")
    from imprint.encoders.factory import ALIASES

    store = EmbeddingStore.open(args.folder)
    if args.encoder and ALIASES.get(args.encoder, args.encoder) != store.meta["encoder"]:
        raise CLIError(f"{args.folder} holds embeddings of {store.meta['encoder']}, not {args.encoder}; "
                       "drop --encoder or embed again with it")
    X, names = store.labelled()
    codes = np.unique(names, return_inverse=True)[1]
    clf = ImprintClassifier(**_settings(args))
    clf._check_settings()
    support, test = np.arange(len(names)), None
    if args.test_fraction:
        support, test = split_support_test(codes, args.test_fraction, seed=args.seed)
    if args.shots:
        with warnings_as_messages():
            support = support[sample_shots(codes[support], args.shots, args.seed, sorted(set(names)))]
    every_row = len(support) == len(names)
    clf.fit(X if every_row else X[support], names[support], encoder_id=store.meta["encoder"])
    clf.save(args.output)
    print(f"imprinted {len(clf.classes_)} classes from {len(support)} stored embeddings "
          f"({len(clf.proxies_)} proxies, {store.meta['encoder']}) -> {args.output}")
    if test is not None:
        report_accuracy(clf, X[test], names[test], "held-out")


def zero_shot_proxies(encoder, class_names: list[str], args: argparse.Namespace) -> dict:
    """Text embeddings of every class name (folder names, '_' and '-' read as spaces) for fit()."""
    from imprint.encoders.open_clip_backend import DEFAULT_TEMPLATES, read_templates

    if not hasattr(encoder, "text_proxies"):
        raise CLIError(f"--zero-shot needs an encoder with a text tower (open_clip:MODEL/TAG); {encoder.id} has none")
    templates = read_templates(args.templates) if args.templates else DEFAULT_TEMPLATES
    readable = [name.replace("_", " ").replace("-", " ") for name in class_names]
    return {"text_embeddings": encoder.text_proxies(readable, templates),
            "text_labels": np.asarray(class_names, dtype=object)}


def report_accuracy(clf: ImprintClassifier, X: np.ndarray, y: np.ndarray, what: str):
    from sklearn.metrics import f1_score

    predicted = clf.predict(X)
    accuracy = float((predicted == y).mean())
    macro_f1 = float(f1_score(y, predicted, average="macro", labels=clf.classes_, zero_division=0))
    print(f"{what} accuracy: {accuracy:.4f} ({int((predicted == y).sum())}/{len(y)}), macro-F1: {macro_f1:.4f}")
    return predicted, accuracy, macro_f1


def evaluate_folder(clf: ImprintClassifier, folder: str, args: argparse.Namespace, run) -> None:
    from sklearn.metrics import precision_recall_fscore_support

    data = scan(folder, min_classes=1)
    known = np.isin(data.class_labels, clf.classes_)
    if not known.all():
        unknown = sorted(set(data.class_labels[~known]))
        warn(f"{int((~known).sum())} image(s) in classes the classifier does not know are left out: "
             f"{', '.join(unknown)}")
    if not known.any():
        raise CLIError(f"no class of {folder} is known to the classifier ({', '.join(map(str, clf.classes_))})")
    X, ok = run([p for p, k in zip(data.paths, known) if k])
    y = data.class_labels[known][ok]
    predicted, _, _ = report_accuracy(clf, X, y, "test")
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=clf.classes_,
                                                                     zero_division=0)
    width = max(len(str(c)) for c in clf.classes_)
    print(f"\n{'class':<{width}}  precision  recall  f1      support")
    for row in zip(clf.classes_, precision, recall, f1, support):
        print(f"{row[0]!s:<{width}}  {row[1]:9.4f}  {row[2]:6.4f}  {row[3]:6.4f}  {row[4]:7d}")
    if getattr(args, "confusion", None):
        save_confusion(y, predicted, clf.classes_, args.confusion)
        print(f"confusion matrix -> {args.confusion}")


def save_confusion(y, predicted, classes, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(y, predicted, labels=classes, ax=ax, xticks_rotation=45,
                                            colorbar=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def load_for_images(args: argparse.Namespace):
    clf = ImprintClassifier.load(args.classifier, device=args.device)
    if clf.encoder_id_ is None and not args.encoder:
        raise CLIError(f"{args.classifier} does not record its encoder; pass --encoder with the one it was fitted with")
    if args.encoder and clf.encoder_id_ and args.encoder != clf.encoder_id_:
        raise CLIError(f"{args.classifier} was fitted with {clf.encoder_id_}, not {args.encoder}; "
                       "drop --encoder to use the recorded one")
    encoder, run = embedder(args, args.encoder or clf.encoder_id_)
    if encoder.embedding_dim != clf.n_features_in_:
        raise CLIError(f"{encoder.id} gives {encoder.embedding_dim}-dim embeddings but {args.classifier} expects "
                       f"{clf.n_features_in_}")
    return clf, run


def cmd_predict(args: argparse.Namespace) -> None:
    from imprint.data.folder import list_images

    clf, run = load_for_images(args)
    paths = []
    for item in args.paths:
        path = Path(item)
        if not path.exists():
            raise CLIError(f"no such image or folder: {path}")
        paths.extend(list_images(path))
    if not paths:
        raise CLIError(f"no images found in {', '.join(args.paths)}")
    X, ok = run(paths)
    good = [p for p, k in zip(paths, ok) if k]
    proba = clf.predict_proba(X) if len(X) else np.empty((0, len(clf.classes_)))
    top = min(args.top_k, len(clf.classes_))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "label", "score", "top_k"])
    for path, ranks, row in zip(good, order, proba):
        alternatives = ";".join(f"{clf.classes_[r]}:{row[r]:.4f}" for r in ranks)
        writer.writerow([str(path), clf.classes_[ranks[0]], f"{row[ranks[0]]:.4f}", alternatives])
    if args.output:
        write_text(args.output, out.getvalue())
        print(f"predicted {len(good)} images -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out.getvalue())


def cmd_eval(args: argparse.Namespace) -> None:
    clf, run = load_for_images(args)
    evaluate_folder(clf, args.folder, args, run)


def cmd_info(args: argparse.Namespace) -> None:
    from imprint.persistence import read_metadata

    meta, tensors = read_metadata(args.classifier)
    counts = tensors["proxy_counts"].tolist()
    if args.json:
        print(json.dumps(dict(meta, proxy_counts=counts), indent=2))
        return
    settings = meta["settings"]
    print(f"file: {args.classifier}\nformat version: {meta['format_version']}\nencoder: {meta['encoder']}\n"
          f"embedding dim: {meta['embedding_dim']}\nclasses: {len(meta['classes'])}\nproxies: {sum(counts)}")
    print("pipeline: " + " -> ".join(f"{key}={settings[key]}" for key in
                                     ("norm_pre", "generation", "k", "norm_post", "norm_inf", "aggregation",
                                      "m", "metric")))
    for name, count in zip(meta["classes"], counts):
        print(f"  {name}: {count} proxies")


def labelled_embeddings(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels from an image folder (embedded now), a store or an 'imprint embed' file."""
    from imprint.store import EmbeddingStore, is_store

    source = Path(args.source)
    if is_store(source):
        return EmbeddingStore.open(source).labelled()
    if source.is_dir():
        data = scan(args.source)
        _, run = embedder(args, args.encoder)
        X, ok = run(data.paths)
        y = data.class_labels[ok]
    elif source.is_file():
        try:
            with np.load(source, allow_pickle=False) as stored:
                X, y = stored["embeddings"], stored["labels"]
        except (ValueError, KeyError, OSError) as exc:
            raise CLIError(f"{source} is not an embeddings file from 'imprint embed' ({exc})") from None
    else:
        raise CLIError(f"no such folder or embeddings file: {source}")
    return X, y


def cmd_collapse(args: argparse.Namespace) -> None:
    from imprint.collapse import collapse_report

    X, y = labelled_embeddings(args)
    report = collapse_report(X, y)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value:.6g}" if isinstance(value, float) else f"{key:>22}: {value}")


def cmd_fewshot(args: argparse.Namespace) -> None:
    from imprint.fewshot import episodes

    X, y = labelled_embeddings(args)
    settings = _settings(args)
    seed = settings.pop("seed")  # seeds the episode sampling; each episode's classifier keeps seed 0
    result = episodes(X, y, n_way=args.ways, k_shot=args.shots, n_query=args.queries, n_episodes=args.episodes,
                      seed=seed, **settings)
    print(result)


def cmd_cache(args: argparse.Namespace) -> None:
    from imprint.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_dir)
    if args.action == "clear":
        print(f"removed {cache.clear()} cached embeddings from {cache.root}")
    else:
        info = cache.info()
        print(f"cache: {info['path']}\nentries: {info['entries']}\nsize: {info['bytes'] / 2**20:.1f} MiB\n"
              f"encoders: {info['encoders']}")


# ---------------------------------------------------------------- parser
def cmd_grid(args: argparse.Namespace) -> None:
    from imprint.cache import EmbeddingCache
    from imprint.grid.config import load_config
    from imprint.grid.runner import run_grid
    from imprint.report import write_report

    config = load_config(args.config)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    try:
        run_grid(config, args.out, workers=args.workers, cache=cache, progress=not args.quiet)
    finally:  # the finished cells are reported even when others failed or the run was interrupted
        if any(Path(args.out, "cells").glob("*.json")):
            for path in write_report(args.out):
                print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from imprint.report import write_report

    for path in write_report(args.folder):
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imprint", description="Training-free classifiers by weight imprinting.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed a folder of images (root/<class>/<image>) to a .npz file or a "
                                     "memory-mapped store folder (resumable)")
    p.add_argument("folder")
    p.add_argument("-o", "--output", required=True,
                   help="FILE.npz (in memory), or a folder: memory-mapped store, written as it goes; rerun to resume")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: Ray Data map_batches with encoder actors (store output only)")
    p.add_argument("--actors", type=int, default=None, help="Ray encoder actors (default: one per GPU, else 1)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    add_encoding_options(p)
    p.set_defaults(run=cmd_embed)

    stages = "\n\n".join(f"{title}:\n" + "\n".join("  " + line for line in registry.describe().splitlines())
                           for title, registry in (("generation", GENERATORS), ("normalisation", NORMS),
                                                   ("aggregation", AGGREGATIONS), ("metric", METRICS)))
    p = sub.add_parser("fit", help="imprint a classifier from a folder of images (or a store from 'imprint embed')",
                       epilog=stages,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("-o", "--output", required=True, help="classifier file (.safetensors)")
    p.add_argument("--shots", type=int, default=None, help="use N images per class (few-shot)")
    p.add_argument("--test-fraction", type=float, default=None, help="hold out this share of every class and "
                   "report accuracy on it")
    p.add_argument("--test-dir", default=None, help="a second folder to evaluate on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero-shot", action="store_true", help="add a text proxy per class from its folder name "
                   "(CLIP encoders); empty class folders are then imprinted from text alone")
    p.add_argument("--templates", default=None, help="prompt templates file, one per line with {} for the name")
    add_encoding_options(p)
    add_stage_options(p)
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser("predict", help="predict images or folders with a saved classifier (CSV)")
    p.add_argument("classifier")
    p.add_argument("paths", nargs="+")
    p.add_argument("-o", "--output", default=None, help="CSV file (default: standard output)")
    p.add_argument("--top-k", type=int, default=3)
    add_encoding_options(p)
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("eval", help="accuracy, macro-F1 and per-class table on a labelled folder")
    p.add_argument("classifier")
    p.add_argument("folder")
    p.add_argument("--confusion", default=None, help="write a confusion-matrix picture (PNG)")
    add_encoding_options(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("info", help="describe a saved classifier")
    p.add_argument("classifier")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("collapse", help="neural-collapse report of a labelled folder or embeddings file")
    p.add_argument("source", help="image folder (root/<class>/<image>) or .npz from 'imprint embed'")
    p.add_argument("--json", action="store_true")
    add_encoding_options(p)
    p.set_defaults(run=cmd_collapse)

    p = sub.add_parser("fewshot", help="n-way k-shot episodes: mean accuracy +- 95% confidence interval")
    p.add_argument("source", help="image folder (root/<class>/<image>) or .npz from 'imprint embed'")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15, help="query images per class and episode")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    add_encoding_options(p)
    add_stage_options(p)
    p.set_defaults(run=cmd_fewshot)

    p = sub.add_parser("grid", help="run a YAML grid of variants x encoders x datasets x tasks (resumable)")
    p.add_argument("config", help="YAML grid config (see configs/)")
    p.add_argument("--out", required=True, help="results folder; a rerun skips the cells already there")
    p.add_argument("--workers", type=int, default=None, help="parallel processes for the cells (default: cores)")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default: user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_grid)

    p = sub.add_parser("report", help="results.csv, summary.md and figures of a grid folder")
    p.add_argument("folder")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("cache", help="inspect or clear the embedding cache")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(run=cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except BrokenPipeError:
        return 0
    except (CLIError, ValueError, OSError) as exc:  # user mistakes: one line, no traceback
        message = str(exc) if not isinstance(exc, FileNotFoundError) or not exc.filename else \
            f"{exc.strerror}: {exc.filename}"
        print(f"imprint: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imprint: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
