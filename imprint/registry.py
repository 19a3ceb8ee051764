"""Name -> implementation registries, so a config word maps to exactly one stage."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownStageError(ValueError):
    """A stage name that is not registered; the message lists the valid names."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    impl: T
    summary: str
    oracle: bool = False
    traits: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named set of interchangeable implementations of one pipeline stage."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, oracle: bool = False, **traits: Any) -> Callable[[T], T]:
        """Decorator: make `impl` available under `name` (its docstring's first line is its summary);
        `traits` are facts other modules may ask about, e.g. a generator that ignores k."""

        def add(impl: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} stage {name!r} is registered twice")
            doc = (getattr(impl, "__doc__", None) or "").strip().splitlines()
            self._entries[name] = Entry(name, impl, doc[0] if doc else "", oracle, dict(traits))
            return impl

        return add

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownStageError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).impl

    def describe(self) -> str:
        """One line per registered name with its summary (oracles marked), for help texts."""
        return "\n".join(f"{e.name}: {e.summary}{' [oracle]' if e.oracle else ''}"
                         for e in sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)
