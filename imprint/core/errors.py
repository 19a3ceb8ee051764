"""The one base class of the mistakes a user can make and the problems of their files or machine.

Every such error says, in one line, what is wrong and how to fix it; the command line prints it as
``imprint: error: ...`` with exit status 2. Any other exception is a bug in imprint, shown as one.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class UserError(ValueError):
    """Bad input, a file that cannot be used as asked, or a setting that cannot work: the message names the
    problem and the fix. (A ValueError, so code that caught ValueError before keeps working.)"""


class UserTypeError(UserError, TypeError):
    """An argument of the wrong kind (a sparse matrix, a dict for numbers): a user mistake, and a TypeError."""


class MissingExtra(UserError):
    """A feature whose optional dependencies are not installed; the message names the extra that installs them."""


def require(modules: tuple[str, ...], extra: str, purpose: str) -> list[ModuleType]:
    """`modules` imported, or a one-line ``MissingExtra`` naming `purpose`, what is missing and the pip command
    of the extra that brings it: called where a feature starts, before any slow work."""
    loaded = []
    for module in modules:
        try:
            loaded.append(importlib.import_module(module))
        except ModuleNotFoundError as exc:
            raise MissingExtra(f"{purpose} needs {exc.name or module}, which is not installed: "
                               f"pip install 'imprint[{extra}]' (from a checkout: pip install -e '.[{extra}]')") \
                from None
    return loaded


def quoted(value: object, limit: int = 80) -> str:
    """`repr(value)` for an error message, cut to about `limit` characters, control characters escaped: a message
    never quotes a whole hostile input."""
    text = value if isinstance(value, str) else None
    try:
        shown = repr(value) if text is None else repr(text[:limit + 1])
    except Exception:  # a repr that fails or recurses: name the type
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def printable(text: object, limit: int = 200) -> str:
    """Text read from a file (a class name, an encoder id, a path) made safe to print on one terminal line:
    control characters and lone surrogates escaped, cut to `limit` characters."""
    value = str(text)
    out = []
    for char in value[:limit]:
        code = ord(char)
        if code < 32 or code == 127 or 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 in a file name (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out) + ("..." if len(value) > limit else "")
