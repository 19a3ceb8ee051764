"""Know your data: likely wrong labels, duplicates and leaks, outliers, class health and which images to label
next, all from the embeddings and cross-fitted closed-form classifiers (``imprint inspect``).

    import imprint
    found = imprint.inspect_data("photos/", "report/", test_dir="photos_test/")
    print(found.counts)   # {'label': 12, 'duplicate': 3, 'similar': 5, 'outlier': 4}

Every judgement of a support image comes from models fitted without it; nothing reads a test image's label, and
nothing is written outside the report folder.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint.analysis.inspection.report import KINDS, Finding, ReportContents, is_report_folder, write_report
from imprint.core.errors import UserError, printable

DEFAULTS = dict(preset="gda", folds=5, reject="knn", outlier_rate=0.01, duplicate_threshold=0.92,
                pixel_threshold=0.98, budget=50)


class InspectError(UserError):
    """Options or paths an inspection cannot use; the message says what would work."""


@dataclass
class Inspection:
    """What ``inspect_data`` found and wrote: the report's contents, its files and how long it took."""

    output: Path
    contents: ReportContents
    files: list[Path]
    seconds: float

    @property
    def findings(self) -> list[Finding]:
        return self.contents.findings

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.contents.counts)


def _check(source: Path, output: Path, inputs: list[Path], *, budget: int | None, unlabelled: Any, folds: int,
           outlier_rate: float, thresholds: tuple[float, float], force: bool) -> None:
    """Refuse, in one line and before any work, what cannot be inspected or written."""
    from imprint.io.outputs import check_output_folder

    if budget is not None and unlabelled is None:
        raise InspectError("--budget picks images to label from --unlabelled DIR; give that folder too")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise InspectError(f"--budget must be a whole number >= 1; got {budget!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InspectError(f"--folds must be a whole number >= 2; got {folds!r}")
    if not (isinstance(outlier_rate, (int, float)) and 0 < outlier_rate < 1):
        raise InspectError(f"--outlier-rate must be a number between 0 and 1 (exclusive); got {outlier_rate!r}")
    for name, value in zip(("--duplicate-threshold", "--pixel-threshold"), thresholds):
        if not (isinstance(value, (int, float)) and 0 < value <= 1):
            raise InspectError(f"{name} must be a cosine between 0 (exclusive) and 1; got {value!r}")
    for item in [source, *inputs]:
        if not item.exists():
            raise InspectError(f"not found: {printable(item)}")
    target = output.resolve()
    for item in [source, *inputs]:
        folder = item.resolve()
        if folder.is_dir() and (target == folder or folder in target.parents):
            raise InspectError(f"refusing to write the report inside {printable(item)}: inspect never changes the "
                               "folders it reads; choose an output folder outside it")
    check_output_folder(output, ours=is_report_folder, what="report folder", force=force)


def _support_names(source: Path, data: Any, ok: np.ndarray) -> list[str]:
    """A name per readable support row: the image path as given (folder), the path recorded by ``imprint embed``
    (store, embeddings file), else SOURCE:row N."""
    from imprint.io.store import EmbeddingStore, is_store

    rows = np.flatnonzero(ok)
    if data.paths is not None:
        return [str(data.paths[i]) for i in rows]
    paths: Any = None
    if is_store(source):
        paths = EmbeddingStore.open(source).paths
    elif source.suffix.lower() == ".npz":  # the paths member alone (the file was checked when opened)
        with np.load(source, allow_pickle=False) as members:
            paths = members["paths"] if "paths" in members.files else None
    if paths is not None and len(paths) == len(ok):
        return [str(paths[i]) for i in rows]
    return [f"{source}:row {i}" for i in rows]


def _existing(names: list[str]) -> list[Path] | None:
    """The names as paths when every one is a readable file (images to fingerprint and show), else None."""
    paths = [Path(n) for n in names]
    return paths if paths and all(p.is_file() for p in paths) else None


def _label_rows(found: Any, proba: np.ndarray, names: list[str], codes: np.ndarray,
                class_names: list[str]) -> list[Finding]:
    """A `label` finding per flagged support row, with the two probabilities behind it."""
    rows = []
    for i in np.flatnonzero(found.flagged):
        given, suggested = class_names[codes[i]], int(found.suggested[i])
        rows.append(Finding(names[i], "label", float(found.score[i]), given, class_names[suggested],
                            detail=f"p({given}) = {proba[i, codes[i]]:.3f}, p({class_names[suggested]}) = "
                                   f"{proba[i, suggested]:.3f} from models that did not see it"))
    return rows


def _to_label(embedder: Any, pool_paths: list[Path], X: np.ndarray, codes: np.ndarray, class_names: list[str],
              preset: str, budget: int, seed: int) -> list[dict[str, Any]]:
    """The rows of to_label.csv: `budget` readable images of the pool, best first."""
    from imprint.analysis.inspection.selection import pick_to_label
    from imprint.estimator.classifier import ImprintClassifier

    Xu, ok = embedder(pool_paths)
    pool = [p for p, good in zip(pool_paths, ok) if good]
    if not pool:
        return []
    Xu = np.asarray(Xu, dtype=np.float32)
    model = ImprintClassifier.from_preset(preset, seed=seed).fit(X, codes)
    picks = pick_to_label(model.predict_proba(Xu), Xu, budget, seed=seed)
    return [{"rank": rank + 1, "path": str(pool[i]), "expected": class_names[int(e)], "uncertainty": round(float(u), 6),
             "cluster_size": int(n)}
            for rank, (i, u, n, e) in enumerate(zip(picks.rows, picks.uncertainty, picks.cluster_size, picks.expected))]


def inspect_data(source: str | Path, output: str | Path, *, test_dir: str | Path | None = None,
                 unlabelled: str | Path | None = None, budget: int | None = None, preset: str = DEFAULTS["preset"],
                 folds: int = DEFAULTS["folds"], reject: str = DEFAULTS["reject"],
                 outlier_rate: float = DEFAULTS["outlier_rate"],
                 duplicate_threshold: float = DEFAULTS["duplicate_threshold"],
                 pixel_threshold: float = DEFAULTS["pixel_threshold"], fix: bool = False, seed: int = 0,
                 force: bool = False, **embedding: Any) -> Inspection:
    """Inspect the labelled support set `source` (an image folder DIR/<class>/<image>, a store or an embeddings
    file) and write a report folder `output`: likely wrong labels, duplicates (and leaks into `test_dir`), outliers,
    class health, and with `unlabelled` the `budget` images to label next. `fix` adds relabelled.csv (every support
    image with the suggested label where one is flagged); the user's files are never changed. `preset` is the
    classifier cross-fitted in `folds` folds; `reject` the unknown score flagging `outlier_rate` of the support set;
    `duplicate_threshold` / `pixel_threshold` the cosines of embeddings / pixel thumbnails that make a near copy.
    Keywords: embedding options (encoder, device, runtime, cache_dir, threads, batch_size, progress, ...)."""
    start = time.perf_counter()
    source, output = Path(source), Path(output)
    inputs = [Path(p) for p in (test_dir, unlabelled) if p is not None]
    if unlabelled is not None and budget is None:
        budget = DEFAULTS["budget"]
    _check(source, output, inputs, budget=budget, unlabelled=unlabelled, folds=folds, outlier_rate=outlier_rate,
           thresholds=(duplicate_threshold, pixel_threshold), force=force)
    from imprint.analysis.inspection.crossfit import NEIGHBOUR_VOTES, cross_fitted_proba, neighbour_votes
    from imprint.analysis.inspection.duplicates import CANDIDATES, COARSE_THRESHOLD, find_duplicates, unit_rows
    from imprint.analysis.inspection.health import class_health
    from imprint.analysis.inspection.labels import find_label_issues
    from imprint.analysis.inspection.outliers import classifier_scores, flag_outliers, knn_scores, knn_width
    from imprint.core.presets import preset_settings
    from imprint.core.search import nearest_within
    from imprint.estimator.classifier import ImprintClassifier
    from imprint.workflows.embedder import Embedder
    from imprint.workflows.fit import split_options
    from imprint.workflows.predict import list_image_paths
    from imprint.workflows.sources import open_source

    preset_settings(preset)  # an unknown preset is refused here, before any image is embedded
    ImprintClassifier.from_preset(preset, reject=reject).check()
    options, rest = split_options(dict(embedding))
    rest.pop("device", None)  # in the embedding options too; the classifiers run where imprint chooses
    if rest:
        raise InspectError(f"unknown option(s) for inspect: {', '.join(sorted(rest))}")
    embedder = Embedder(options)
    data = open_source(source, embedder=embedder, strict=options.strict)
    test_paths = list_image_paths([test_dir]) if test_dir is not None else None
    pool_paths = list_image_paths([unlabelled]) if unlabelled is not None else None

    X, ok = data.embed(np.arange(len(data.labels)))
    encoder_id = getattr(X, "encoder_id", None) or data.encoder_id or embedder.encoder_id
    X = np.asarray(X, dtype=np.float32)
    names = _support_names(source, data, ok)
    labels = data.labels[ok]
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise InspectError(f"{printable(source)} has {len(classes)} readable class(es); inspecting needs at least 2")
    class_names = [str(c) for c in classes]

    proba = cross_fitted_proba(X, codes, len(classes), preset=preset, n_folds=folds, seed=seed)
    proba_half = cross_fitted_proba(X, codes, len(classes), preset=preset, n_folds=2, seed=seed)
    knn_columns = knn_width(preset, reject, codes)
    # one search serves the k-NN votes, the duplicates and (for the knn score) the outliers
    similarities, indices, search = nearest_within(unit_rows(X), max(NEIGHBOUR_VOTES, CANDIDATES, knn_columns) + 1)
    judged_proba = (proba + neighbour_votes(indices, codes, len(classes))) / 2
    label_findings = find_label_issues(judged_proba, codes)
    outlier_scores = knn_scores(similarities, knn_columns) if knn_columns else \
        classifier_scores(X, codes, preset=preset, reject=reject, rate=outlier_rate, seed=seed)
    outliers = flag_outliers(outlier_scores, reject=reject, rate=outlier_rate)
    image_paths = _existing(names)
    given = [class_names[c] for c in codes]
    findings = _label_rows(label_findings, judged_proba, names, codes, class_names)
    pairs = find_duplicates(X, image_paths, threshold=duplicate_threshold, pixel_threshold=pixel_threshold,
                            found=(similarities, indices))
    findings += [Finding(names[p.first], "duplicate" if p.copy else "similar", p.similarity, given[p.first],
                         other_path=names[p.second], detail=f"{p.reason()}; within the support set, "
                         + ("same label" if codes[p.first] == codes[p.second]
                            else f"labelled {given[p.first]} and {given[p.second]}")) for p in pairs]
    if test_paths is not None:
        Xt, okt = embedder(test_paths)
        kept = [p for p, good in zip(test_paths, okt) if good]
        pairs = find_duplicates(X, image_paths, threshold=duplicate_threshold, pixel_threshold=pixel_threshold,
                                other=np.asarray(Xt, dtype=np.float32), other_paths=kept)
        findings += [Finding(names[p.first], "duplicate" if p.copy else "similar", p.similarity, given[p.first],
                             other_path=str(kept[p.second]),
                             detail=f"{'leak: a copy' if p.copy else 'a look-alike'} in the test folder: {p.reason()}")
                     for p in pairs]
    findings += [Finding(names[i], "outlier", float(outliers.score[i]), given[i],
                         detail=f"{reject} unknown score {outliers.score[i]:.4g}, among the highest {outlier_rate:.1%} "
                                "(from models that did not see it)") for i in np.flatnonzero(outliers.flagged)]
    order = {kind: rank for rank, kind in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind], -f.score))
    to_label = _to_label(embedder, pool_paths, X, codes, class_names, preset, budget, seed) if pool_paths else []
    health = [asdict(h) for h in class_health(X, codes, class_names, proba, proba_half)]
    relabelled = None
    if fix:
        suggested = np.where(label_findings.flagged, label_findings.suggested, codes)
        relabelled = [(names[i], class_names[int(suggested[i])]) for i in range(len(names))]
    settings = {"preset": preset, "folds": folds, "reject": reject, "outlier_rate": outlier_rate,
                "outlier_threshold": outliers.threshold if math.isfinite(outliers.threshold) else None,
                "duplicate_threshold": duplicate_threshold, "pixel_threshold": pixel_threshold,
                "coarse_pixel_threshold": COARSE_THRESHOLD, "seed": seed,
                "n_support": len(X), "encoder": encoder_id, "neighbour_search": search,
                "label_thresholds": {n: round(float(t), 6) for n, t in zip(class_names, label_findings.thresholds)
                                     if math.isfinite(t)}}
    contents = ReportContents(data.description, findings, health, to_label, settings, relabelled)
    files = write_report(output, contents, thumbnails=image_paths is not None)
    return Inspection(output, contents, files, time.perf_counter() - start)
