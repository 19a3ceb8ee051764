"""``imprint fit`` as one library call: imprint a classifier from a folder of images, a store or an embeddings
file (``fit_folder``). The command line parses arguments, calls it and prints what it returns; a program calls it
the same way:

    import imprint
    clf = imprint.fit_folder("photos/", preset="gda", test_fraction=0.2)
    print(clf.fit_report_.held_out.accuracy)
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint.estimator.provenance import Provenance
from imprint.workflows import WorkflowError
from imprint.workflows.embedder import Embedder, EmbedOptions
from imprint.workflows.evaluate import Evaluation, FolderEvaluation, evaluate, evaluate_folder

EMBED_OPTIONS = tuple(EmbedOptions.__dataclass_fields__)


@dataclass
class FitReport:
    """What ``fit_folder`` did: from what, how many support rows of how many classes, how long the fit took, and
    the accuracy on the held-out images (``test_fraction``) and on a test folder (``test_dir``)."""

    source: str
    images: bool  # support rows are images (else stored embeddings)
    n_support: int
    seconds: float
    output: Path | None = None
    held_out: Evaluation | None = None
    test: FolderEvaluation | None = None


def split_options(options: dict[str, Any]) -> tuple[EmbedOptions, dict[str, Any]]:
    """(the embedding options, the classifier settings) among the keyword arguments of a workflow."""
    embedding = {name: options.pop(name) for name in list(options) if name in EMBED_OPTIONS and name != "device"}
    return EmbedOptions(**embedding, device=options.get("device", "auto")), options


def fit_folder(source: str | Path, *, output: str | Path | None = None, preset: str | None = None,
               test_fraction: float | None = None, shots: int | None = None, test_dir: str | Path | None = None,
               zero_shot: bool = False, templates: str | Path | None = None, seed: int = 0, force: bool = False,
               keep_examples: bool = False, **options: Any) -> Any:
    """Imprint a classifier from `source`: an image folder (DIR/<class>/<image>), a store or an embeddings file
    from ``imprint embed``. Returns the fitted ``ImprintClassifier``, with a ``FitReport`` as its ``fit_report_``.

    `preset` names a published method, and any other keyword that is a classifier setting overrides it (k=5,
    metric="mahalanobis", ...); embedding keywords (encoder, device, cache_dir, cache, threads, batch_size,
    workers, progress, strict) say how images are embedded. `test_fraction` holds out that share of every class
    and reports accuracy on it; `shots` keeps that many support images per class; `test_dir` is a second
    labelled folder to evaluate on; `zero_shot` blends the class names' text embeddings (CLIP encoders);
    `output` saves the classifier once fitted and scored on the held-out images (`force`: even over a file
    imprint did not write), with what it was fitted on (``imprint.estimator.provenance``);
    `keep_examples` keeps the support embeddings in it, so a class can later get more examples (``imprint serve``).
    The paths, the preset and the output are checked before anything heavy is imported, the settings before any
    image is embedded."""
    from imprint.core.presets import preset_settings
    from imprint.io.classifier_file import is_classifier_file
    from imprint.io.outputs import check_output
    from imprint.workflows.sources import check_source, open_source, select

    if preset:
        preset_settings(preset)  # an unknown preset is refused before anything heavy is imported
    inputs = [check_source(path) for path in [source] + ([test_dir] if test_dir else [])]
    if output is not None:
        check_output(output, ours=is_classifier_file, what="classifier file", force=force, inputs=inputs)
    from imprint.estimator.classifier import ImprintClassifier
    from imprint.estimator.text_blend import needs_text

    embedding, settings = split_options(dict(options))
    clf = ImprintClassifier(**preset_settings(preset, settings) if preset else settings, seed=seed).check()
    if not zero_shot and needs_text(clf.text_alpha):
        raise WorkflowError("--text-alpha weighs zero-shot text scores: add --zero-shot (with an encoder that has a "
                            "text tower, open_clip:MODEL/TAG)")
    embedder = Embedder(embedding)
    data = open_source(source, embedder=embedder, min_classes=1 if zero_shot else 2, strict=embedding.strict)
    if data.paths is None and (zero_shot or test_dir):
        raise WorkflowError("--zero-shot and --test-dir need the encoder and images: fit from the image folder "
                            "instead")
    selection = select(data.labels, test_fraction=test_fraction, shots=shots, seed=seed)
    for note in selection.notes:
        warnings.warn(note, stacklevel=2)
    X, ok = data.embed(selection.support)
    labels = data.labels[selection.support][ok]
    lost = sorted(set(data.labels[selection.support].tolist()) - set(labels.tolist()))
    if lost:
        warnings.warn(f"{len(lost)} class(es) have no readable support image and are left out: "
                      f"{', '.join(map(str, lost))}", stacklevel=2)
    text = {}
    if zero_shot:
        from imprint.encoders.open_clip_backend import class_name_proxies

        names = data.class_names + data.empty_classes
        text = {"text_embeddings": class_name_proxies(embedder.encoder, names, templates),
                "text_labels": np.asarray(names, dtype=object)}
    start = time.perf_counter()
    clf.fit(X, labels, encoder_id=data.encoder_id, keep_examples=keep_examples, **text)
    report = FitReport(data.description, data.paths is not None, len(X), time.perf_counter() - start,
                       None if output is None else Path(output))
    clf.fit_report_ = report
    images = None if data.paths is None else [data.paths[i] for i in selection.support[ok]]
    clf.provenance_ = Provenance.of_images(f"{'images' if images else 'embeddings'} of {Path(source).resolve()}",
                                           images)
    if selection.test is not None and len(selection.test):
        Xq, okq = data.embed(selection.test)
        report.held_out = evaluate(clf, Xq, data.labels[selection.test][okq])
        clf.provenance_.held_out_accuracy = report.held_out.accuracy
        clf.provenance_.held_out_images = len(report.held_out.labels)
    if output is not None:
        clf.save(output)
    if test_dir:
        report.test = evaluate_folder(clf, test_dir, embedder=embedder)
    return clf
