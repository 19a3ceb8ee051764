"""The manifest of a grid results folder (``manifest.json``: the grid's name and the cells it plans), read and
checked without importing anything heavy, so that ``imprint report`` answers a folder holding no grid at once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from imprint.core.errors import UserError

MANIFEST = "manifest.json"


class ReportError(UserError):
    """A folder that holds no grid results."""


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The checked manifest of the grid in `out`, or a ReportError saying what to run."""
    import json

    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise ReportError(f"{out} holds no grid results (no {MANIFEST}); run: imprint grid CONFIG --out {out}") \
            from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{out}/{MANIFEST} is unreadable ({type(exc).__name__}); rerun: imprint grid CONFIG "
                          f"--out {out}") from None
    entries = manifest.get("cells") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("key"), str)
                                                and isinstance(e.get("variant"), str) for e in entries):
        raise ReportError(f"{out}/{MANIFEST} is not a grid manifest (damaged or edited); rerun: imprint grid "
                          f"CONFIG --out {out}")
    return manifest
