"""A classifier being served and taught. Predictions read one version whole; a change is made on a copy, written
to the classifier file atomically (the file it replaces kept beside it as a backup) and only then swapped in, so
a prediction sees the old classifier or the new one, never a mix, and a process killed at any moment leaves a
file equal to one of them.

Several servers (processes, or ASGI workers) may serve one file: a change holds a lock on the file and first
reads it again if another server changed it since, so every acknowledged change is in the file; predictions
follow the file too (a cheap check of its identity before each batch)."""
from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint.core.atomic import atomic_write_bytes, locked
from imprint.core.errors import UserError, printable
from imprint.io.classifier_file import is_classifier_file


class ClassChangeError(UserError):
    """A change of the classes that cannot be made: the service answers it with 409 Conflict."""


@dataclass(frozen=True)
class Version:
    """One state of the served classifier, numbered from 1 at start; never changed once made."""

    number: int
    classifier: Any
    stamp: tuple[int, int, int] | None = None  # the file's identity when this version was read or written

    def classes(self) -> list[dict[str, Any]]:
        """Each class: its name, the examples it was taught with (None for a class imprinted by fit, whose
        support set the file does not keep) and its proxies."""
        clf = self.classifier
        kept = clf.examples_.by_class if clf.examples_ is not None else {}
        return [{"name": label, "count": len(kept[label]) if label in kept else None, "proxies": int(proxies)}
                for label, proxies in zip(clf.classes_.tolist(), clf.proxy_counts_)]


def backup_path(path: Path) -> Path:
    """Where the file a change replaces is kept: ``clf.safetensors`` -> ``clf.previous.safetensors``."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's identity (device, inode, modification time): every atomic replacement changes it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def check_backup_place(path: Path) -> None:
    """Refuse to serve changes where the backup would replace a file imprint did not write there."""
    backup = backup_path(path)
    if backup.exists() and not is_classifier_file(backup):
        raise UserError(f"{printable(backup)} exists and is not a classifier file imprint wrote; class changes keep "
                        "the replaced classifier under that name: move or rename that file, or serve with "
                        "--read-only")


class LiveClassifier:
    """The served classifier file and the encoder it was fitted with."""

    def __init__(self, path: str | os.PathLike, classifier: Any, encoder: Any, read_only: bool = False) -> None:
        self.path = Path(path)
        self.encoder = encoder
        self.read_only = read_only
        self._version = Version(1, classifier, file_stamp(self.path))
        self._changing = threading.Lock()
        self._unreadable: tuple[int, int, int] | None = None  # a file found on disk that is not a classifier
        if not read_only:
            if not os.access(self.path.parent, os.W_OK):
                raise UserError(f"cannot write to {self.path.parent}, where class changes are saved; serve a copy in "
                                "a writable folder, or pass --read-only")
            check_backup_place(self.path)

    @property
    def version(self) -> Version:
        return self._version

    def current(self) -> Version:
        """The version to answer with: the file as it stands, read again where another server has changed it (a
        file that cannot be read as a classifier now leaves the last good version served)."""
        version = self._version
        stamp = file_stamp(self.path)
        if stamp in (version.stamp, self._unreadable, None):
            return version
        with self._changing:
            try:
                return self._reread()
            except UserError:
                self._unreadable = stamp  # tried once; a change refuses to overwrite it
                return self._version

    def _reread(self) -> Version:
        """The file's own version where it changed since this server last read or wrote it (the caller holds
        ``_changing``); raises ClassifierFileError where it is no longer a classifier."""
        version = self._version
        stamp = file_stamp(self.path)
        if stamp == version.stamp or stamp is None:
            return version
        loaded = type(version.classifier).load(self.path, device=version.classifier.device)
        self._version = Version(version.number + 1, loaded, stamp)
        return self._version

    def label_of(self, name: str) -> Any:
        """A class name from a URL as a label of the classifier's type (numbers for a classifier of numbers)."""
        if self._version.classifier.classes_.dtype.kind in "iu":
            try:
                return int(name)
            except ValueError:
                raise UserError(f"this classifier's classes are numbers; {name[:80]!r} is not one") from None
        return name

    def teach(self, name: str, X: np.ndarray, thumbnails: list[bytes] | None = None) -> Version:
        """Add the examples X to class `name` (a new class, or one taught by example before), with a small
        picture of each where given."""
        label = self.label_of(name)
        return self._change(lambda clf: clf.add_examples(X, np.asarray([label] * len(X)), thumbnails=thumbnails))

    def forget(self, name: str) -> Version:
        """Remove class `name`."""
        label = self.label_of(name)

        def remove(clf: Any) -> None:
            if label not in set(clf.classes_.tolist()):
                raise LookupError(f"no class named {name[:80]!r}")
            clf.remove_classes([label])
        return self._change(remove)

    def _change(self, edit: Any) -> Version:
        """Apply `edit` to a copy of the file's current classifier, save it (old file kept as the backup), then
        serve it; the file is locked from reading it to writing it."""
        with self._changing, locked(self.path):
            try:
                current = self._reread()
            except UserError as exc:
                raise ClassChangeError(f"the served file changed on disk and cannot be read ({exc}); nothing was "
                                       "changed") from None
            changed = copy.deepcopy(current.classifier)
            try:
                edit(changed)
            except UserError as exc:
                raise ClassChangeError(str(exc)) from None
            if self.path.exists():
                try:
                    check_backup_place(self.path)
                except UserError as exc:
                    raise ClassChangeError(str(exc)) from None
                atomic_write_bytes(backup_path(self.path), self.path.read_bytes())
            changed.save(self.path)
            self._version = Version(current.number + 1, changed, file_stamp(self.path))
            return self._version
