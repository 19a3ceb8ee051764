"""How results are written out: short aligned tables where people read, CSV and JSON where programs read."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from imprint.core.errors import printable


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table, columns padded to their widest cell (numbers right-aligned)."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(header))]
    lines = []
    for r, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if numeric[i] and r else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else printable(value, 300)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def csv_text(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """CSV for programs: values as they are (file names with any bytes), floats with 4 decimals."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([[f"{c:.4f}" if isinstance(c, float) else c for c in row] for row in rows])
    return out.getvalue()


def json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def chosen_text(values: dict) -> str:
    """Settings chosen on the support set as `name=value, ...`, numbers to 4 significant digits (the fit and info
    lines; the file and the JSON keep every digit)."""
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in values.items())


def percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"
