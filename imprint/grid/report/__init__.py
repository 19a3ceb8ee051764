"""Reports of a grid run: results.csv, summary.md and PNG figures, all written atomically."""
from __future__ import annotations

from pathlib import Path

from imprint.core.atomic import atomic_write_bytes
from imprint.grid.manifest import ReportError
from imprint.grid.report.plots import accuracy_vs_k, accuracy_vs_shots, cd_diagram
from imprint.grid.report.tables import load_results, per_group, summarize

__all__ = ["ReportError", "load_results", "write_report"]


def write_report(out: str | Path) -> list[Path]:
    """Write results.csv, summary.md and the figures for the grid in `out`; returns the files written."""
    out = Path(out)
    results, manifest = load_results(out)
    if results.empty:
        raise ReportError(f"no finished cells in {out} yet; run or resume: imprint grid CONFIG --out {out}")
    written = [atomic_write_bytes(out / "results.csv", results.to_csv(index=False).encode())]
    groups = per_group(results)
    text, figures = summarize(results, groups, len(manifest["cells"]), manifest["name"])
    written.append(atomic_write_bytes(out / "summary.md", text.encode()))
    for figure in (accuracy_vs_k(results, out / "accuracy_vs_k.png"),
                   accuracy_vs_shots(results, out / "accuracy_vs_shots.png")):
        if figure is not None:
            written.append(figure)
    if figures["cliques"] is not None:
        written.append(cd_diagram(figures["variants"], figures["ranks"], figures["cliques"], out / "cd_diagram.png"))
    return written
