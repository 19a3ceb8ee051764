"""The ``imprint`` subcommands: each parses nothing itself, calls library functions and prints their results."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from imprint.cli.output import json_text, percent, say, table, warn


class CLIError(Exception):
    """A user mistake reported as one line, exit status 2."""


@contextmanager
def warnings_as_messages() -> Iterator[None]:
    """Library warnings (empty class folders, short classes, untunable settings) become one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:  # said even when the command then stops on an error: the warning may be why
            for item in caught:
                warn(str(item.message))


def write_file(path: str, data: bytes) -> None:
    from imprint.atomic import atomic_write_bytes

    atomic_write_bytes(path, data)


# ---------------------------------------------------------------- shared steps
def make_embedder(args: argparse.Namespace, encoder_id: str | None):
    """(encoder, function paths -> (embeddings, ok mask)) for the chosen encoder, cache and threads."""
    from imprint.cache import EmbeddingCache
    from imprint.embed import embed_paths
    from imprint.encoders import DEFAULT_ENCODER, create_encoder
    from imprint.threads import encoder_threads, set_torch_threads

    encoder = create_encoder(encoder_id or DEFAULT_ENCODER, device=args.device)
    if encoder.device.type == "cpu":
        set_torch_threads(encoder_threads(args.threads))
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)

    def run(paths: Sequence[Path]):
        with warnings_as_messages():  # e.g. a cache that cannot be written: one line, and embedding goes on
            result = embed_paths(encoder, paths, cache=cache, batch_size=args.batch_size, workers=args.workers,
                                 progress=not args.quiet, strict=args.strict)
        if result.failed:
            warn("skipped " + result.describe_failures())
        return result.embeddings, result.ok

    return encoder, run


def open_source(args: argparse.Namespace, path: str, min_classes: int = 2):
    """A labelled source (folder, store or embeddings file) and, for a folder, the encoder embedding it."""
    from imprint.workflow import open_source as open_labelled

    holder: dict[str, Any] = {}

    def embed_folder(paths: Sequence[Path]):
        if "run" not in holder:
            holder["encoder"], holder["run"] = make_embedder(args, args.encoder)
        return holder["run"](paths)

    with warnings_as_messages():
        source = open_labelled(path, folder_embedder=embed_folder, min_classes=min_classes,
                               strict=getattr(args, "strict", False))
    wanted = getattr(args, "encoder", None)
    if source.paths is None and wanted and source.encoder_id:
        from imprint.encoders.factory import ALIASES

        if ALIASES.get(wanted, wanted) != source.encoder_id:
            raise CLIError(f"{path} holds embeddings of {source.encoder_id}, not {wanted}; drop --encoder or embed "
                           "again with it")
    return source, holder


def classifier_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's settings overridden by every flag given on the command line."""
    from imprint.configuration import parameter_names
    from imprint.presets import preset_settings

    settings = preset_settings(args.preset) if args.preset else {}
    settings.update({name: getattr(args, name) for name in parameter_names()  # flags given (none: None)
                     if name not in ("seed", "device") and hasattr(args, name)})
    return settings


def report_evaluation(evaluation, what: str, per_class: bool = False) -> None:
    say(f"{what} accuracy: {evaluation.accuracy:.4f} ({evaluation.correct}/{len(evaluation.labels)}); chance level "
        f"{evaluation.chance:.4f} (always the most frequent class); macro-F1: {evaluation.macro_f1:.4f} over "
        f"{len(evaluation.classes)} class(es)")
    if per_class:
        columns = (evaluation.classes, evaluation.precision, evaluation.recall, evaluation.f1, evaluation.support)
        rows = [[str(c), p, r, f, int(n)] for c, p, r, f, n in zip(*columns)]
        say()
        say(table(rows, ["class", "precision", "recall", "f1", "images"]))


def load_for_images(args: argparse.Namespace):
    """The saved classifier and an embedder with the encoder it was fitted with. What a file says never makes
    imprint download weights or read a checkpoint on its own: only packaged encoders are built from the recorded
    id; any other must be named with --encoder."""
    from imprint.classifier import ImprintClassifier
    from imprint.encoders.factory import ALIASES, self_contained
    from imprint.errors import printable

    clf = ImprintClassifier.load(args.classifier, device=args.device)
    recorded = clf.encoder_id_
    if recorded is None and not args.encoder:
        raise CLIError(f"{printable(args.classifier)} does not record its encoder; pass --encoder with the one it "
                       "was fitted with")
    if args.encoder and recorded:
        if ALIASES.get(args.encoder, args.encoder) != recorded:
            raise CLIError(f"{printable(args.classifier)} was fitted with {printable(recorded)}, not "
                           f"{printable(args.encoder)}; drop --encoder to use the recorded one")
    elif recorded and not self_contained(recorded):
        raise CLIError(f"{printable(args.classifier)} was fitted with {printable(recorded)}, which imprint does not "
                       "build from what a file says (it would download weights or read a checkpoint): if you trust "
                       f"it, name it: --encoder {printable(recorded)}")
    encoder, run = make_embedder(args, args.encoder or recorded)
    if encoder.embedding_dim != clf.n_features_in_:
        raise CLIError(f"{encoder.id} gives {encoder.embedding_dim}-dimensional embeddings but "
                       f"{printable(args.classifier)} expects {clf.n_features_in_}")
    return clf, run


# ---------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> None:
    from imprint.classifier import ImprintClassifier
    from imprint.outputs import check_output
    from imprint.persistence import is_classifier_file
    from imprint.text_blend import needs_text
    from imprint.workflow import evaluate, select

    settings = classifier_settings(args)
    clf = ImprintClassifier(**settings, seed=args.seed, device=args.device)
    clf.check()  # a bad setting fails before any image is embedded
    if not args.zero_shot and needs_text(clf.text_alpha):
        raise CLIError("--text-alpha weighs zero-shot text scores: add --zero-shot (with an encoder that has a text "
                       "tower, open_clip:MODEL/TAG)")
    check_output(args.output, ours=is_classifier_file, what="classifier file", force=args.force,
                 inputs=[args.source] + ([args.test_dir] if args.test_dir else []))
    source, holder = open_source(args, args.source, min_classes=1 if args.zero_shot else 2)
    if source.paths is None and (args.zero_shot or args.test_dir):
        raise CLIError("--zero-shot and --test-dir need the encoder and images: fit from the image folder instead")
    selection = select(source.labels, test_fraction=args.test_fraction, shots=args.shots, seed=args.seed)
    for note in selection.notes:
        warn(note)
    X, ok = source.embed(selection.support)
    labels = source.labels[selection.support][ok]
    lost = sorted(set(source.labels[selection.support].tolist()) - set(labels.tolist()))
    if lost:
        warn(f"{len(lost)} class(es) have no readable support image and are left out: {', '.join(map(str, lost))}")
    text = {}
    if args.zero_shot:
        from imprint.encoders.open_clip_backend import class_name_proxies

        encoder = holder.get("encoder") or make_embedder(args, args.encoder)[0]
        names = source.class_names + source.empty_classes
        text = {"text_embeddings": class_name_proxies(encoder, names, args.templates),
                "text_labels": np.asarray(names, dtype=object)}
    start = time.perf_counter()
    with warnings_as_messages():
        clf.fit(X, labels, encoder_id=source.encoder_id, **text)
    seconds = time.perf_counter() - start
    clf.save(args.output)
    tuned = "".join(f", {name}={value}" for name, value in clf.tuned_.items())
    say(f"imprinted {len(clf.classes_)} classes from {len(X)} {'images' if source.paths else 'embeddings'} "
        f"({len(clf.proxies_)} proxies{tuned}; {clf.encoder_id_}) in {seconds:.2f} s -> {args.output}")
    if selection.test is not None and len(selection.test):
        Xq, okq = source.embed(selection.test)
        report_evaluation(evaluate(clf, Xq, source.labels[selection.test][okq]), "held-out")
    if args.test_dir:
        evaluate_folder(clf, args.test_dir, args, holder["run"])


def evaluate_folder(clf, folder: str, args: argparse.Namespace, run) -> dict[str, Any]:
    from imprint.workflow import confusion_png, evaluate, open_source

    with warnings_as_messages():
        source = open_source(folder, folder_embedder=run, min_classes=1, strict=args.strict)
    known = np.isin(source.labels, clf.classes_)
    if not known.any():
        raise CLIError(f"no class of {folder} is known to the classifier ({', '.join(map(str, clf.classes_))})")
    if not known.all():
        unknown = sorted(set(source.labels[~known].tolist()))
        warn(f"{int((~known).sum())} image(s) in classes the classifier does not know are left out: "
             f"{', '.join(map(str, unknown))}")
    X, ok = source.embed(np.flatnonzero(known))
    evaluation = evaluate(clf, X, source.labels[known][ok])
    payload = {"accuracy": evaluation.accuracy, "chance": evaluation.chance, "macro_f1": evaluation.macro_f1,
               "images": len(evaluation.labels),
               "per_class": [dict(zip(("class", "precision", "recall", "f1", "images"), row))
                             for row in zip(evaluation.classes, evaluation.precision, evaluation.recall,
                                            evaluation.f1, evaluation.support)]}
    if getattr(args, "format", "text") != "json":
        report_evaluation(evaluation, "test", per_class=True)
    if getattr(args, "confusion", None):
        write_file(args.confusion, confusion_png(evaluation, evaluation.classes, f"{Path(folder).name}: "
                                                 f"{Path(args.classifier).name}"))
        print(f"confusion matrix -> {args.confusion}", file=sys.stderr)
    return payload


def cmd_eval(args: argparse.Namespace) -> None:
    if args.confusion:
        from imprint.outputs import check_output
        from imprint.pictures import is_imprint_png

        check_output(args.confusion, ours=is_imprint_png, what="picture", force=args.force,
                     inputs=[args.classifier, args.folder])
    clf, run = load_for_images(args)
    if args.unknown and clf.reject is None:
        raise CLIError(f"--unknown scores rejection, but {args.classifier} has none: fit with --reject "
                       "(e.g. --reject mahalanobis --reject-rate 0.05)")
    payload = evaluate_folder(clf, args.folder, args, run)
    if args.unknown:
        payload["open_set"] = evaluate_unknown(clf, args, run)
    if args.format == "json":
        sys.stdout.write(json_text(payload))


def evaluate_unknown(clf, args: argparse.Namespace, run) -> dict[str, Any]:
    """Open-set metrics: the labelled folder's images as known, every image under --unknown as unknown."""
    from imprint.data.folder import list_images
    from imprint.workflow import evaluate_open_set, open_source

    with warnings_as_messages():
        source = open_source(args.folder, folder_embedder=run, min_classes=1, strict=args.strict)
    known = np.flatnonzero(np.isin(source.labels, clf.classes_))
    X_known, ok = source.embed(known)
    with warnings_as_messages():
        unknown_paths = list_images(Path(args.unknown), strict=args.strict)
    if not unknown_paths:
        raise CLIError(f"no images found in {args.unknown}")
    X_unknown, _ = run(unknown_paths)
    result = evaluate_open_set(clf, X_known, source.labels[known][ok], X_unknown)
    if args.format == "json":
        return dict(result.__dict__)
    say(f"\nopen set ({clf.reject}, target rate {percent(result.target_rate)}): known images rejected "
        f"{percent(result.known_rejected)} of {result.n_known}; unknown images rejected "
        f"{percent(result.unknown_rejected)} of {result.n_unknown}; AUROC {result.auroc:.4f}; FPR at 95% TPR "
        f"{percent(result.fpr95)}; accuracy of the accepted known images {percent(result.accepted_accuracy)}")
    return dict(result.__dict__)


def cmd_predict(args: argparse.Namespace) -> None:
    from imprint.data.folder import list_images
    from imprint.outputs import check_output
    from imprint.workflow import is_predictions_file, predictions, predictions_text

    if args.top_k < 1:
        raise CLIError(f"--top-k must be an integer >= 1; got {args.top_k}")
    paths = []
    for item in args.paths:
        path = Path(item)
        if not path.exists():
            raise CLIError(f"no such image or folder: {path}")
        with warnings_as_messages():
            paths.extend(list_images(path, strict=args.strict))
    if not paths:
        raise CLIError(f"no images found in {', '.join(args.paths)}")
    if args.output:
        check_output(args.output, ours=is_predictions_file, what="predictions file", force=args.force,
                     inputs=[args.classifier, *paths])
    clf, run = load_for_images(args)
    X, ok = run(paths)
    if not ok.any():
        raise CLIError(f"none of the {len(paths)} image(s) could be read; nothing was predicted")
    found = predictions(clf, [p for p, k in zip(paths, ok) if k], X, args.top_k)
    fmt = args.format
    if fmt == "auto":
        fmt = "json" if args.output and args.output.endswith(".json") else \
            "csv" if args.output or not sys.stdout.isatty() else "table"
    text = predictions_text(found, fmt, clf.reject is not None)
    if args.output:
        write_file(args.output, text.encode("utf-8", "surrogateescape"))  # file names that are not UTF-8 as they are
        print(f"predicted {len(found)} image(s) -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_embed(args: argparse.Namespace) -> None:
    from imprint.data.folder import scan_folder

    with warnings_as_messages():
        data = scan_folder(args.folder, min_classes=1, strict=args.strict)
    if args.output.endswith(".npz"):
        from imprint.embeddings_file import is_embeddings_file, write_embeddings_file
        from imprint.outputs import check_output

        if args.engine != "local":
            raise CLIError("--engine ray writes a memory-mapped store: give a folder as --output, not a .npz file")
        check_output(args.output, ours=is_embeddings_file, what="embeddings file", force=args.force,
                     inputs=data.paths)
        encoder, run = make_embedder(args, args.encoder)
        X, ok = run(data.paths)
        paths = [str(p) for p, good in zip(data.paths, ok) if good]
        write_embeddings_file(args.output, X, data.class_labels[ok], paths, encoder.id)
        say(f"embedded {len(X)} images of {len(data.class_names)} classes with {encoder.id} -> {args.output}")
        return
    embed_store(args, data)


def embed_store(args: argparse.Namespace, data) -> None:
    """Embed into a memory-mapped store folder, resuming an interrupted run (locally or with Ray)."""
    from imprint.cache import encoder_namespace
    from imprint.embed import embed_into_store
    from imprint.encoders import DEFAULT_ENCODER, create_encoder
    from imprint.store import EmbeddingStore
    from imprint.threads import encoder_threads, set_torch_threads

    encoder = create_encoder(args.encoder or DEFAULT_ENCODER, device=args.device)
    if encoder.device.type == "cpu":
        set_torch_threads(encoder_threads(args.threads))
    store = EmbeddingStore.create(args.output, encoder_id=encoder.id, encoder_key=encoder_namespace(encoder),
                                  dim=encoder.embedding_dim, paths=[str(p) for p in data.paths],
                                  labels=data.labels, class_names=data.class_names)
    before = len(store.pending())
    if before < len(data.paths):
        say(f"resuming: {len(data.paths) - before} of {len(data.paths)} images already embedded")
    if args.engine == "ray":
        from imprint.distributed import embed_with_ray

        embed_with_ray(encoder.id, store, batch_size=args.batch_size, actors=args.actors, address=args.ray_address,
                       device=args.device, progress=not args.quiet)
    else:
        embed_into_store(encoder, store, batch_size=args.batch_size, workers=args.workers, progress=not args.quiet)
    failed = store.unreadable()
    if failed:
        warn(f"skipped {len(failed)} unreadable image(s): {', '.join(failed[:5])}"
             + (f" and {len(failed) - 5} more" if len(failed) > 5 else ""))
    say(f"embedded {len(data.paths) - len(failed)} images of {len(data.class_names)} classes with {encoder.id} "
        f"-> {args.output} (memory-mapped store)")


def cmd_info(args: argparse.Namespace) -> None:
    from imprint.info import describe

    info = describe(args.classifier)
    if args.json:
        sys.stdout.write(json_text(info))
        return
    say(f"file: {args.classifier}\nformat version: {info['format_version']}\nencoder: {info['encoder']}\n"
        f"embedding dim: {info['embedding_dim']}\nclasses: {len(info['classes'])}\nproxies: {info['proxies']}")
    say("pipeline: " + info["pipeline"])
    if info["tuned"]:
        say("chosen on the support set: " + ", ".join(f"{k}={v}" for k, v in info["tuned"].items()))
    for line in ("zero_shot", "note"):
        if info.get(line):
            say(info[line])
    say(table([[name, count] for name, count in zip(info["classes"], info["proxy_counts"])], ["class", "proxies"]))


def cmd_presets(args: argparse.Namespace) -> None:
    from imprint.presets import PRESETS

    if args.json:
        sys.stdout.write(json_text({p.name: {"summary": p.summary, "paper": p.paper, "settings": p.settings}
                                    for p in PRESETS.values()}))
        return
    for preset in PRESETS.values():
        settings = " ".join(f"{k}={v}" for k, v in preset.settings.items())
        say(f"{preset.name}: {preset.summary}\n    {preset.paper}\n    {settings}")


def cmd_collapse(args: argparse.Namespace) -> None:
    from imprint.collapse import collapse_report

    source, _ = open_source(args, args.source)
    X, ok = source.embed(np.arange(len(source.labels)))
    report = collapse_report(X, source.labels[ok])
    if args.json:
        sys.stdout.write(json_text(report))
        return
    for key, value in report.items():
        say(f"{key:>22}: {value:.6g}" if isinstance(value, float) else f"{key:>22}: {value}")


def cmd_fewshot(args: argparse.Namespace) -> None:
    from imprint.fewshot import episodes

    source, _ = open_source(args, args.source)
    X, ok = source.embed(np.arange(len(source.labels)))
    with warnings_as_messages():
        result = episodes(X, source.labels[ok], n_way=args.ways, k_shot=args.shots, n_query=args.queries,
                          n_episodes=args.episodes, seed=args.seed, **classifier_settings(args))
    say(str(result))


def cmd_grid(args: argparse.Namespace) -> None:
    from imprint.cache import EmbeddingCache
    from imprint.grid.config import load_config
    from imprint.grid.runner import is_grid_folder, run_grid
    from imprint.outputs import check_output_folder
    from imprint.report import write_report

    config = load_config(args.config)
    check_output_folder(args.out, ours=is_grid_folder, what="grid results folder", force=args.force)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    try:
        run_grid(config, args.out, workers=args.workers, cache=cache, progress=not args.quiet, log=say)
    finally:  # the finished cells are reported even when others failed or the run was interrupted
        if any(Path(args.out, "cells").glob("*.json")):
            with warnings_as_messages():
                written = write_report(args.out)
            for path in written:
                say(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from imprint.report import write_report

    with warnings_as_messages():
        written = write_report(args.folder)
    for path in written:
        say(f"wrote {path}")


def cmd_cache(args: argparse.Namespace) -> None:
    from imprint.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_dir)
    if args.action == "clear":
        say(f"removed {cache.clear()} cached embeddings from {cache.root}")
    else:
        info = cache.info()
        say(f"cache: {info['path']}\nentries: {info['entries']}\nsize: {info['bytes'] / 2**20:.1f} MiB\n"
            f"encoders: {info['encoders']}")


COMMANDS = {"fit": cmd_fit, "predict": cmd_predict, "eval": cmd_eval, "embed": cmd_embed, "info": cmd_info,
            "presets": cmd_presets, "collapse": cmd_collapse, "fewshot": cmd_fewshot, "grid": cmd_grid,
            "report": cmd_report, "cache": cmd_cache}
