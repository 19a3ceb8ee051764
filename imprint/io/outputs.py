"""Where a command writes: never over one of its own inputs, never over a file imprint did not write.

Every command that writes a file checks its output before any slow work starts. An output that is one of the
command's inputs is always refused (the input would be lost while it is being read). An existing file is
replaced only when imprint recognises it as one of its own of the same kind (a classifier file, a predictions
table, a picture, an embeddings file), else only with ``--force``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from imprint.core.errors import UserError, printable


class OutputError(UserError):
    """An output path that would destroy an input or a file imprint did not write."""


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, *, ours: Callable[[Path], bool], what: str,
                 inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> Path:
    """`path` if a command may write `what` there: not a folder, not one of `inputs`, and either new, recognised
    by `ours` as a file imprint wrote, or `force`d. Otherwise a one-line OutputError saying what to do."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{printable(path)} is a folder; give a file name for the {what}")
    for item in inputs:
        if _same(path, Path(item)):
            raise OutputError(f"refusing to write the {what} to {printable(path)}: it is one of this command's "
                              "inputs; choose another output name")
    if (path.exists() or path.is_symlink()) and not force and not ours(path):
        raise OutputError(f"{printable(path)} exists and is not {_article(what)} {what} imprint wrote; choose another "
                          "name, or pass --force to replace it")
    return path


def check_output_folder(path: str | os.PathLike, *, ours: Callable[[Path], bool], what: str,
                        force: bool = False) -> Path:
    """`path` if a command may write its `what` folder there: new, empty, recognised by `ours`, or `force`d."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{printable(path)} is a file; give a folder for the {what}")
    if path.is_dir() and not force and any(path.iterdir()) and not ours(path):
        raise OutputError(f"{printable(path)} is a folder with other files in it, not {_article(what)} {what} imprint "
                          "wrote; choose a new or empty folder, or pass --force to write into it")
    return path


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeio" else "a"
