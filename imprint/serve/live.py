"""A classifier being served and taught. Predictions read one version whole; a change is made on a copy, written
to the classifier file atomically (the file it replaces kept beside it as a backup) and only then swapped in, so
a prediction sees the old classifier or the new one, never a mix, and a process killed at any moment leaves a
file equal to one of them."""
from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imprint.atomic import atomic_write_bytes
from imprint.errors import UserError


class ClassChangeError(UserError):
    """A change of the classes that cannot be made: the service answers it with 409 Conflict."""


@dataclass(frozen=True)
class Version:
    """One state of the served classifier, numbered from 1 at start; never changed once made."""

    number: int
    classifier: Any

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


class LiveClassifier:
    """The served classifier file and the encoder it was fitted with."""

    def __init__(self, path: str | os.PathLike, classifier: Any, encoder: Any, read_only: bool = False) -> None:
        self.path = Path(path)
        self.encoder = encoder
        self.read_only = read_only
        self._version = Version(1, classifier)
        self._changing = threading.Lock()
        if not read_only and not os.access(self.path.parent, os.W_OK):
            raise UserError(f"cannot write to {self.path.parent}, where class changes are saved; serve a copy in a "
                            "writable folder, or pass --read-only")

    @property
    def version(self) -> Version:
        return self._version

    def label_of(self, name: str) -> Any:
        """A class name from a URL as a label of the classifier's type (numbers for a classifier of numbers)."""
        if self._version.classifier.classes_.dtype.kind in "iu":
            try:
                return int(name)
            except ValueError:
                raise UserError(f"this classifier's classes are numbers; {name[:80]!r} is not one") from None
        return name

    def teach(self, name: str, X: np.ndarray) -> Version:
        """Add the examples X to class `name` (a new class, or one taught by example before)."""
        label = self.label_of(name)
        return self._change(lambda clf: clf.add_examples(X, np.asarray([label] * len(X))))

    def forget(self, name: str) -> Version:
        """Remove class `name`."""
        label = self.label_of(name)
        if label not in set(self._version.classifier.classes_.tolist()):
            raise LookupError(f"no class named {name[:80]!r}")
        return self._change(lambda clf: clf.remove_classes([label]))

    def _change(self, edit: Any) -> Version:
        """Apply `edit` to a copy, save it (old file kept as the backup), then serve it."""
        with self._changing:
            current = self._version
            changed = copy.deepcopy(current.classifier)
            try:
                edit(changed)
            except UserError as exc:
                raise ClassChangeError(str(exc)) from None
            if self.path.exists():
                atomic_write_bytes(backup_path(self.path), self.path.read_bytes())
            changed.save(self.path)
            self._version = Version(current.number + 1, changed)
            return self._version
