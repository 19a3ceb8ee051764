"""Name -> implementation registries, so a config word maps to exactly one stage.

A stage registers under a name with the settings it uses (see ``imprint.settings``); registering from a
user's own module (a plug-in) works exactly like a built-in stage, and the entry remembers that module so
a saved classifier can name the plug-in to import when it is missing.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from imprint.errors import quoted
from imprint.settings import SETTINGS, Setting

T = TypeVar("T")


class UnknownStageError(ValueError):
    """A stage name that is not registered; the message lists the valid names."""


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """'; did you mean 'x'?' for the closest choice to a mistyped word, or ''."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) or \
        [c for c in choices if c.lower() == word.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    impl: T
    summary: str
    oracle: bool = False
    traits: dict[str, Any] = field(default_factory=dict)
    settings: tuple[Setting, ...] = ()
    module: str = ""

    @property
    def builtin(self) -> bool:
        return self.module.split(".")[0] == "imprint"


class Registry(Generic[T]):
    """A named set of interchangeable implementations of one pipeline stage."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, oracle: bool = False, settings: Sequence[Setting] = (),
                 **traits: Any) -> Callable[[T], T]:
        """Decorator: make `impl` available under `name` (its docstring's first line is its summary).
        `settings` are the settings this stage reads (declared once, here); `traits` are facts other
        modules may ask about, e.g. a generator that makes one proxy per class."""

        def add(impl: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} stage {name!r} is registered twice")
            if not name or "+" in name or not name.replace("_", "").isalnum():
                raise RuntimeError(f"{self.kind} stage name {name!r} must be letters, digits and '_'")
            doc = (getattr(impl, "__doc__", None) or "").strip().splitlines()
            for setting in settings:
                SETTINGS.declare(setting, (self.kind, name))
            self._entries[name] = Entry(name, impl, doc[0] if doc else "", oracle, dict(traits), tuple(settings),
                                        getattr(impl, "__module__", "") or "")
            return impl

        return add

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownStageError(f"unknown {self.kind} {quoted(name)}; valid: {', '.join(self.names())}"
                                    f"{did_you_mean(name, self.names())}") from None

    def get(self, name: str) -> T:
        return self.entry(name).impl

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def describe(self) -> str:
        """One line per registered name with its summary and settings (oracles marked), for help texts."""
        lines = []
        for e in sorted(self._entries.values(), key=lambda e: e.name):
            own = f" [settings: {', '.join(s.name for s in e.settings)}]" if e.settings else ""
            lines.append(f"{e.name}: {e.summary}{' [oracle]' if e.oracle else ''}{own}")
        return "\n".join(lines)

    def names(self) -> list[str]:
        return sorted(self._entries)
