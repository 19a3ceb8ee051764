"""The files of an inspection report, and how to recognise a report folder: ``issues.csv`` and ``issues.json``
(one row per finding), ``classes.csv`` (class health), ``to_label.csv`` (with unlabelled images), optionally
``relabelled.csv`` (every support image with the suggested label where one is flagged), and ``index.html``: a
static page with thumbnails that needs no server."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imprint.core.atomic import atomic_write_bytes

FORMAT = "imprint-inspect/1"
KINDS = ("label", "duplicate", "similar", "outlier")
COLUMNS = ("path", "kind", "score", "given_label", "suggested_label", "other_path", "detail")
REPORT_FILES = ("issues.csv", "issues.json", "classes.csv", "to_label.csv", "relabelled.csv", "index.html")
SHOWN = 60  # findings of each kind with thumbnails on the page (all of them are in the CSV and JSON)
THUMB = 96  # thumbnail side in pixels


@dataclass
class Finding:
    """One row of issues.csv: a support image (`path`) of one `kind` with its `score` (higher: more certain), its
    label, the suggested label (label rows) or the other image (duplicate rows), and a sentence of detail."""

    path: str
    kind: str
    score: float
    given_label: str
    suggested_label: str = ""
    other_path: str = ""
    detail: str = ""


@dataclass
class ReportContents:
    """Everything a report shows: the findings, class health rows, picks to label and the settings used."""

    source: str
    findings: list[Finding]
    classes: list[dict[str, Any]]
    to_label: list[dict[str, Any]]
    settings: dict[str, Any]
    relabelled: list[tuple[str, str]] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def is_report_folder(path: Path) -> bool:
    """True for a folder an inspection wrote (its issues.json names this format)."""
    try:
        with open(Path(path) / "issues.json", encoding="utf-8") as handle:
            return json.load(handle).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogateescape")  # file names that are not UTF-8, as they are


def _thumbnail(path: str) -> str:
    """A data: URI of a small JPEG of the image at `path`, or "" when it cannot be read."""
    from imprint.data.folder import load_rgb

    try:  # decoded as for embedding: thin images and decompression bombs are refused from the header
        small = load_rgb(Path(path))
        small.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a stored path that is gone or unreadable shows no picture
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image(path: str, thumbnails: bool) -> str:
    uri = _thumbnail(path) if thumbnails and path else ""
    return f'<img src="{uri}" alt="{html.escape(path)}" title="{html.escape(path)}">' if uri else ""


def _page(contents: ReportContents, thumbnails: bool) -> str:
    """The static HTML report."""
    esc = html.escape
    settings = contents.settings
    threshold = settings["outlier_threshold"]
    threshold = "none: no image could be scored" if threshold is None else f"{threshold:.4g}"
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>imprint inspect: {esc(contents.source)}"
             "</title><style>body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:"
             "collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;"
             "vertical-align:middle;font-size:14px}th{background:#f2f2f2}img{width:64px;height:64px;object-fit:"
             "contain;background:#eee;margin-right:4px}.n{text-align:right}.muted{color:#666}</style></head><body>",
             f"<h1>imprint inspect</h1><p>{esc(contents.source)}: {settings['n_support']} support images of "
             f"{len(contents.classes)} classes. Findings: "
             + ", ".join(f"<a href='#{k}'>{contents.counts.get(k, 0)} {k}</a>" for k in KINDS) + ".</p>",
             "<p class=muted>How: class probabilities and unknown scores of every support image come from "
             f"{esc(str(settings['preset']))} classifiers fitted without it ({settings['folds']} folds). Likely wrong "
             "labels: confident learning (a class's threshold is the mean probability its own images get). "
             f"Outliers: the {settings['outlier_rate']:.1%} of the support set (at least one image) with the highest "
             f"{esc(str(settings['reject']))} unknown scores (from {threshold}). Pairs alike: "
             f"identical files, embedding cosine &ge; {settings['duplicate_threshold']}, 16 x 16 pixel-thumbnail "
             f"cosine &ge; {settings['pixel_threshold']} or 8 x 8 &ge; {settings['coarse_pixel_threshold']}, where "
             "the pair also stands out from each image's nearest neighbours; a pair is a duplicate (a copy) when "
             "its pixels, lined up, differ by little, else very similar. Neighbour search: "
             f"{esc(str(settings['neighbour_search']))}.</p>"]
    titles = {"label": ("Likely wrong labels", ["image", "path", "given", "suggested", "score", "why"]),
              "duplicate": ("Duplicates and leaks (copies)", ["images", "path", "other path", "similarity", "why"]),
              "similar": ("Very similar, not copies", ["images", "path", "other path", "similarity", "why"]),
              "outlier": ("Outliers (look like no class)", ["image", "path", "label", "unknown score", "why"])}
    for kind in KINDS:
        title, header = titles[kind]
        rows = [f for f in contents.findings if f.kind == kind]
        parts.append(f"<h2 id={kind}>{title} ({len(rows)})</h2>")
        if not rows:
            parts.append("<p class=muted>none found</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>")
        for f in rows[:SHOWN]:
            if kind == "label":
                cells = [_image(f.path, thumbnails), esc(f.path), esc(f.given_label), esc(f.suggested_label),
                         f"{f.score:.3f}", esc(f.detail)]
            elif kind in ("duplicate", "similar"):
                cells = [_image(f.path, thumbnails) + _image(f.other_path, thumbnails), esc(f.path),
                         esc(f.other_path), f"{f.score:.4f}", esc(f.detail)]
            else:
                cells = [_image(f.path, thumbnails), esc(f.path), esc(f.given_label), f"{f.score:.4g}", esc(f.detail)]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        if len(rows) > SHOWN:
            parts.append(f"<p class=muted>{len(rows) - SHOWN} more in issues.csv</p>")
    parts.append("<h2 id=classes>Class health</h2><table><tr><th>class</th><th>images</th><th>spread (CDNV to "
                 "nearest)</th><th>nearest class</th><th>most confused with</th><th>recall</th><th>more examples "
                 "help?</th></tr>")
    for c in contents.classes:
        confused = f"{esc(c['confused_with'])} ({c['confused_share']:.0%})" if c["confused_with"] else ""
        parts.append(f"<tr><td>{esc(c['name'])}</td><td class=n>{c['count']}</td><td class=n>{c['spread']:.3f}</td>"
                     f"<td>{esc(c['nearest'])}</td><td>{confused}</td><td class=n>{c['recall']:.2f}</td>"
                     f"<td>{esc(c['more_examples'])}</td></tr>")
    parts.append("</table>")
    if contents.to_label:
        parts.append(f"<h2 id=to_label>Label next ({len(contents.to_label)})</h2><table><tr><th>rank</th><th>image"
                     "</th><th>path</th><th>expected class</th><th>uncertainty</th><th>cluster size</th></tr>")
        for pick in contents.to_label[:SHOWN]:
            parts.append(f"<tr><td class=n>{pick['rank']}</td><td>{_image(pick['path'], thumbnails)}</td><td>"
                         f"{esc(pick['path'])}</td><td>{esc(pick['expected'])}</td><td class=n>"
                         f"{pick['uncertainty']:.3f}</td><td class=n>{pick['cluster_size']}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, contents: ReportContents, thumbnails: bool) -> list[Path]:
    """Write the report files into `folder` (created if needed), each atomically; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    contents.counts = {kind: sum(f.kind == kind for f in contents.findings) for kind in KINDS}
    rows = [[getattr(f, c) if c != "score" else f"{f.score:.6g}" for c in COLUMNS] for f in contents.findings]
    files = {"issues.csv": _csv_bytes(list(COLUMNS), rows)}
    if contents.classes:
        header = list(contents.classes[0])
        files["classes.csv"] = _csv_bytes(header, [[c[h] for h in header] for c in contents.classes])
    if contents.to_label:
        header = list(contents.to_label[0])
        files["to_label.csv"] = _csv_bytes(header, [[p[h] for h in header] for p in contents.to_label])
    if contents.relabelled is not None:
        files["relabelled.csv"] = _csv_bytes(["path", "label"], [list(r) for r in contents.relabelled])
    payload = {"format": FORMAT, "source": contents.source, "settings": contents.settings, "counts": contents.counts,
               "findings": [asdict(f) for f in contents.findings], "classes": contents.classes,
               "to_label": contents.to_label}
    files["index.html"] = _page(contents, thumbnails).encode("utf-8", "xmlcharrefreplace")  # any file name
    for name in set(REPORT_FILES) - set(files) - {"issues.json"}:  # an earlier run's, naming what is gone now
        (folder / name).unlink(missing_ok=True)
    written = [atomic_write_bytes(folder / name, data) for name, data in files.items()]
    # issues.json last: it marks the folder as a finished report
    written.append(atomic_write_bytes(folder / "issues.json", json.dumps(payload, indent=1).encode("utf-8")))
    return written
