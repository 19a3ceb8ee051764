"""The ``imprint`` subcommands: each turns its arguments into one library call and prints what it returns."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from imprint.cli.output import chosen_text, json_text, percent, say, table, warn


def embedding_options(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding keywords of a library call (``imprint.workflows.embedder.EmbedOptions``) from the shared flags."""
    return {"encoder": args.encoder, "device": args.device, "runtime": args.runtime, "cache_dir": args.cache_dir,
            "cache": not args.no_cache, "threads": args.threads, "batch_size": args.batch_size,
            "workers": args.workers, "progress": not args.quiet, "strict": args.strict}


def classifier_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The classifier settings given as flags (a flag not given is absent, so a preset's value stands)."""
    return {name: getattr(args, name) for name in args.setting_names if hasattr(args, name)}


def report_evaluation(evaluation: Any, what: str, per_class: bool = False) -> None:
    closed = " (closed set: every image gets its best class)" if evaluation.known_rejected is not None else ""
    say(f"{what} accuracy{closed}: {evaluation.accuracy:.4f} ({evaluation.correct}/{len(evaluation.labels)}); chance "
        f"level {evaluation.chance:.4f} (always the most frequent class); macro-F1: {evaluation.macro_f1:.4f} over "
        f"{len(evaluation.classes)} class(es)")
    if evaluation.known_rejected is not None:
        say(f"rejected as unknown: {percent(evaluation.known_rejected)} of these known-class images (target at "
            f"most {percent(evaluation.target_rate)}); accuracy of the accepted ones "
            f"{percent(evaluation.accepted_accuracy)}")
    if per_class:
        say(f"calibration: expected calibration error {evaluation.ece:.3f} (0: probabilities that mean what they say)")
    if per_class:
        columns = (evaluation.classes, evaluation.precision, evaluation.recall, evaluation.f1, evaluation.support)
        rows = [[str(c), p, r, f, int(n)] for c, p, r, f, n in zip(*columns)]
        say()
        say(table(rows, ["class", "precision", "recall", "f1", "images"]))


def report_open_set(result: Any, reject: str) -> None:
    say(f"\nopen set ({reject}, target rate {percent(result.target_rate)}): known images rejected "
        f"{percent(result.known_rejected)} of {result.n_known}; unknown images rejected "
        f"{percent(result.unknown_rejected)} of {result.n_unknown}; AUROC {result.auroc:.4f}; FPR at 95% TPR "
        f"{percent(result.fpr95)}; accuracy of the accepted known images {percent(result.accepted_accuracy)}")


def write_file(path: str, data: bytes) -> None:
    from imprint.core.atomic import atomic_write_bytes

    atomic_write_bytes(path, data)


# ---------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> None:
    from imprint.workflows.fit import fit_folder

    clf = fit_folder(args.source, output=args.output, preset=args.preset, test_fraction=args.test_fraction,
                     shots=args.shots, test_dir=args.test_dir, zero_shot=args.zero_shot, templates=args.templates,
                     seed=args.seed, force=args.force, keep_examples=args.keep_examples, **embedding_options(args),
                     **classifier_settings(args))
    report = clf.fit_report_
    chosen = {**clf.tuned_, **clf.tuning_report_, **({"temperature": clf.temperature_} if clf.temperature == "auto"
                                                     else {})}
    tuned = f", {chosen_text(chosen)}" if chosen else ""
    say(f"imprinted {len(clf.classes_)} classes from {report.n_support} {'images' if report.images else 'embeddings'} "
        f"({len(clf.proxies_)} proxies{tuned}; {clf.encoder_id_}) in {report.seconds:.2f} s -> {args.output}")
    if report.held_out is not None:
        report_evaluation(report.held_out, "held-out")
    if report.test is not None:
        report_evaluation(report.test.evaluation, "test", per_class=True)
    say(next_steps(args.output))


def next_steps(path: str) -> str:
    """What a newly fitted classifier is for: the commands that use it."""
    import shlex

    clf = shlex.quote(str(path))
    return ("next:\n"
            f"  imprint predict {clf} IMAGE_OR_FOLDER        # classify images\n"
            f"  imprint eval {clf} LABELLED_FOLDER           # accuracy on images it was not fitted on\n"
            f"  imprint export {clf} -o model.onnx           # one ONNX graph from pixels to answers\n"
            f"  imprint serve {clf}                          # an HTTP API and a page that teaches new classes")


def cmd_inspect(args: argparse.Namespace) -> None:
    from imprint.analysis.inspection import inspect_data

    found = inspect_data(args.source, args.output, test_dir=args.test_dir, unlabelled=args.unlabelled,
                         budget=args.budget, preset=args.preset, folds=args.folds, reject=args.reject,
                         outlier_rate=args.outlier_rate, duplicate_threshold=args.duplicate_threshold,
                         pixel_threshold=args.pixel_threshold, fix=args.fix, seed=args.seed, force=args.force,
                         **embedding_options(args))
    counts = found.counts
    to_label = f"; {len(found.contents.to_label)} images to label next" if found.contents.to_label else ""
    say(f"inspected {found.contents.settings['n_support']} support images of {len(found.contents.classes)} classes "
        f"in {found.seconds:.1f} s: {counts['label']} likely wrong label(s), {counts['duplicate']} duplicate(s) or "
        f"leak(s), {counts['similar']} very similar pair(s), {counts['outlier']} outlier(s){to_label}")
    for finding in found.findings[:10]:
        other = finding.suggested_label or finding.other_path
        say(f"  {finding.kind:9s} {finding.score:8.3f}  {finding.path}" + (f" -> {other}" if other else "")
            + f"  ({finding.detail})")
    if len(found.findings) > 10:
        say(f"  ... {len(found.findings) - 10} more in {Path(args.output) / 'issues.csv'}")
    say(f"report -> {Path(args.output) / 'index.html'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from imprint.workflows.deployed import open_classifier
    from imprint.workflows.embedder import EmbedOptions
    from imprint.workflows.evaluate import confusion_png, evaluate_folder

    for picture in (args.confusion, args.calibration):
        if picture:
            from imprint.io.outputs import check_output
            from imprint.io.png import is_imprint_png

            check_output(picture, ours=is_imprint_png, what="picture", force=args.force,
                         inputs=[args.classifier, args.folder])
    clf, embedder = open_classifier(args.classifier, EmbedOptions(**embedding_options(args)))
    result = evaluate_folder(clf, args.folder, unknown=args.unknown, embedder=embedder)
    if args.format != "json":
        report_evaluation(result.evaluation, "test", per_class=True)
    if result.in_support:
        held = "" if result.held_out_accuracy is None else \
            f" (on the images held out at fit it scored {result.held_out_accuracy:.4f})"
        warn(f"{result.in_support} of these {len(result.evaluation.labels)} images are images the classifier was "
             f"fitted on: its accuracy on them says little about new images{held}; evaluate on images it has not "
             "seen")
    title = f"{Path(args.folder).name}: {Path(args.classifier).name}"
    if args.confusion:
        write_file(args.confusion, confusion_png(result.evaluation, result.evaluation.classes, title))
        print(f"confusion matrix -> {args.confusion}", file=sys.stderr)
    if args.calibration:
        from imprint.workflows.evaluate import reliability_png

        write_file(args.calibration, reliability_png(result.evaluation.proba, result.evaluation.columns, title))
        print(f"reliability diagram -> {args.calibration}", file=sys.stderr)
    if result.open_set is not None and args.format != "json":
        report_open_set(result.open_set, clf.reject)
    if args.format == "json":
        sys.stdout.write(json_text(result.payload()))


def cmd_predict(args: argparse.Namespace) -> None:
    from imprint.io.outputs import check_output
    from imprint.workflows.deployed import open_classifier
    from imprint.workflows.embedder import EmbedOptions
    from imprint.workflows.predict import (
        check_top_k,
        is_predictions_file,
        list_image_paths,
        predict_images,
        predictions_text,
    )

    check_top_k(args.top_k)
    paths = list_image_paths(args.paths, strict=args.strict)
    if args.output:
        check_output(args.output, ours=is_predictions_file, what="predictions file", force=args.force,
                     inputs=[args.classifier, *paths])
    clf, embedder = open_classifier(args.classifier, EmbedOptions(**embedding_options(args)))
    found = predict_images(clf, paths, top_k=args.top_k, embedder=embedder)
    fmt = args.format
    if fmt == "auto":
        fmt = "json" if args.output and args.output.endswith(".json") else \
            "csv" if args.output or not sys.stdout.isatty() else "table"
    seen = sum(bool(p.in_support) for p in found)
    if seen:
        warn(f"{seen} of these {len(found)} images are images the classifier was fitted on"
             + (" (in_support in the JSON)" if fmt == "json" else ""))
    text = predictions_text(found, fmt, clf.reject is not None)
    if args.output:
        write_file(args.output, text.encode("utf-8", "surrogateescape"))  # file names that are not UTF-8 as they are
        print(f"predicted {len(found)} image(s) -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_embed(args: argparse.Namespace) -> None:
    from imprint.workflows.embed import embed_folder

    report = embed_folder(args.folder, args.output, engine=args.engine, actors=args.actors,
                          ray_address=args.ray_address, force=args.force, **embedding_options(args))
    if not report.store:
        say(f"embedded {report.embedded} images of {report.classes} classes with {report.encoder} -> {args.output}")
        return
    if report.resumed_from:
        say(f"resuming: {report.resumed_from} of {report.embedded + len(report.unreadable)} images already embedded")
    if report.unreadable:
        failed = report.unreadable
        warn(f"skipped {len(failed)} unreadable image(s): {', '.join(failed[:5])}"
             + (f" and {len(failed) - 5} more" if len(failed) > 5 else ""))
    say(f"embedded {report.embedded} images of {report.classes} classes with {report.encoder} -> {args.output} "
        "(memory-mapped store)")


def cmd_export(args: argparse.Namespace) -> None:
    from imprint.workflows.export import export_file

    done = export_file(args.classifier, args.output, encoder=args.encoder, force=args.force)
    say(f"exported {done.n_classes} classes with {done.encoder} -> {done.path} (input: uint8 RGB images "
        f"N x {done.height} x {done.width} x 3, resized and centre-cropped; see examples/onnx_predict.py)")


def cmd_serve(args: argparse.Namespace) -> None:
    from imprint.serve import read_token, serve

    serve(args.classifier, args.host, args.port, read_only=args.read_only, token=read_token(args.token_file),
          max_images=args.max_images, max_image_mb=args.max_image_mb, max_request_mb=args.max_request_mb,
          memory_mb=args.memory_mb, max_queue=args.max_queue, allow_hosts=tuple(args.allow_host),
          allow_origins=tuple(args.allow_origin), log=say, encoder=args.encoder, device=args.device,
          runtime=args.runtime, threads=args.threads, progress=False)


def cmd_info(args: argparse.Namespace) -> None:
    from imprint.workflows.info import describe

    info = describe(args.classifier)
    if args.json:
        sys.stdout.write(json_text(info))
        return
    say(f"file: {args.classifier}\nformat version: {info['format_version']}\nencoder: {info['encoder']}\n"
        f"embedding dim: {info['embedding_dim']}\nclasses: {len(info['classes'])}\nproxies: {info['proxies']}")
    say("pipeline: " + info["pipeline"])
    if info["tuned"]:
        say("chosen on the support set: " + chosen_text(info["tuned"]))
    for line in ("fitted_on", "rejection", "zero_shot", "note"):
        if info.get(line):
            say(info[line])
    say(table([[name, count] for name, count in zip(info["classes"], info["proxy_counts"])], ["class", "proxies"]))


def cmd_presets(args: argparse.Namespace) -> None:
    from imprint.core.presets import PRESETS

    if args.json:
        sys.stdout.write(json_text({p.name: {"summary": p.summary, "paper": p.paper, "settings": p.settings}
                                    for p in PRESETS.values()}))
        return
    for preset in PRESETS.values():
        settings = " ".join(f"{k}={v}" for k, v in preset.settings.items())
        say(f"{preset.name}: {preset.summary}\n    {preset.paper}\n    {settings}")


def _labelled(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Every embedding of a labelled source (folder, store or embeddings file) with its class name."""
    from imprint.workflows.embedder import Embedder, EmbedOptions
    from imprint.workflows.sources import open_source

    source = open_source(args.source, embedder=Embedder(EmbedOptions(**embedding_options(args))),
                         strict=args.strict)
    X, ok = source.embed(np.arange(len(source.labels)))
    return X, source.labels[ok]


def cmd_collapse(args: argparse.Namespace) -> None:
    from imprint.analysis.collapse import collapse_report

    report = collapse_report(*_labelled(args))
    if args.json:
        sys.stdout.write(json_text(report))
        return
    for key, value in report.items():
        say(f"{key:>22}: {value:.6g}" if isinstance(value, float) else f"{key:>22}: {value}")


def cmd_fewshot(args: argparse.Namespace) -> None:
    from imprint.core.presets import preset_settings
    from imprint.workflows.fewshot import episodes

    settings = preset_settings(args.preset, classifier_settings(args)) if args.preset else classifier_settings(args)
    result = episodes(*_labelled(args), n_way=args.ways, k_shot=args.shots, n_query=args.queries,
                      n_episodes=args.episodes, seed=args.seed, **settings)
    say(str(result))


def cmd_grid(args: argparse.Namespace) -> None:
    from imprint.grid.config import load_config
    from imprint.grid.report import write_report
    from imprint.grid.runner import is_grid_folder, run_grid
    from imprint.io.cache import EmbeddingCache
    from imprint.io.outputs import check_output_folder

    config = load_config(args.config)
    check_output_folder(args.out, ours=is_grid_folder, what="grid results folder", force=args.force)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    try:
        run_grid(config, args.out, workers=args.workers, cache=cache, progress=not args.quiet, log=say)
    finally:  # the finished cells are reported even when others failed or the run was interrupted
        if any(Path(args.out, "cells").glob("*.json")):
            for path in write_report(args.out):
                say(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from imprint.grid.report import write_report

    for path in write_report(args.folder):
        say(f"wrote {path}")


def cmd_cache(args: argparse.Namespace) -> None:
    from imprint.encoders.runtime import cached_graphs, clear_graphs, graph_cache_dir
    from imprint.io.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_dir)
    if args.action == "clear":
        say(f"removed {cache.clear()} cached embeddings from {cache.root}")
        say(f"removed {clear_graphs()} encoder graphs from {graph_cache_dir()}")
    else:
        info = cache.info()
        files = cached_graphs()
        graphs = [f for f in files if f.suffix == ".graph"]
        say(f"cache: {info['path']}\nentries: {info['entries']}\nsize: {info['bytes'] / 2**20:.1f} MiB\n"
            f"encoders: {info['encoders']}\nencoder graphs: {len(graphs)} in {graph_cache_dir()} "
            f"({sum(f.stat().st_size for f in files) / 2**20:.1f} MiB)")


COMMANDS = {"fit": cmd_fit, "predict": cmd_predict, "eval": cmd_eval, "inspect": cmd_inspect, "embed": cmd_embed,
            "export": cmd_export, "serve": cmd_serve, "info": cmd_info,
            "presets": cmd_presets, "collapse": cmd_collapse, "fewshot": cmd_fewshot, "grid": cmd_grid,
            "report": cmd_report, "cache": cmd_cache}
