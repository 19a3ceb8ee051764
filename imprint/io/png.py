"""PNG pictures imprint draws (confusion matrices, reliability diagrams, grid figures), signed as imprint's.

Each PNG carries ``Software: imprint`` in its text chunk, so a later command may replace a picture it drew
and refuse to overwrite anyone else's (``imprint.io.outputs``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

SOFTWARE = "imprint"


def png_bytes(figure: Any, **savefig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, signed as imprint's; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": SOFTWARE}, **savefig)
    plt.close(figure)
    return buffer.getvalue()


def is_imprint_png(path: Path) -> bool:
    """Whether `path` is a PNG imprint drew."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith(SOFTWARE)
    except Exception:  # not an image, unreadable: not ours
        return False
