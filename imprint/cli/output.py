"""Where the command line speaks: results on stdout, warnings and errors as one line each on stderr."""
from __future__ import annotations

import sys

from imprint.core.errors import printable
from imprint.io.text_formats import chosen_text, csv_text, json_text, percent, table

__all__ = ["chosen_text", "csv_text", "json_text", "percent", "say", "table", "warn"]

MESSAGE_LIMIT = 2000  # characters of one warning or error line


def say(text: str = "") -> None:
    print(text)


def warn(message: str) -> None:
    """One warning line; control characters (from file names or file contents) escaped."""
    print(f"imprint: warning: {printable(message, MESSAGE_LIMIT)}", file=sys.stderr)
