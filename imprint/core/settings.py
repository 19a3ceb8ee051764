"""Settings declared once, with the stage that uses them, and the registries that name the stages.

A ``Setting`` says everything about one knob: its name, type, default, allowed values or range, whether
it accepts ``"auto"`` (chosen on the support set) and a one-line help. Stages declare theirs with their name
(``Registry.declare(name, "module:attribute", summary, settings=...)``, or ``Registry.register`` as a decorator
beside the code); the pipeline declares the stage choices themselves. A declaration names its implementation
without importing it, so the declarations of every built-in stage (``imprint.stages``, ``imprint.openset``,
``imprint.estimator.configuration``) import without torch: the command line's flags and checks, and the grid's
schema, read them at once.
Everything else is derived from these declarations: the classifier's parameters and their validation,
the command-line flags, the grid's YAML schema, what a saved classifier records and the labels of reports.
Two stages may share a setting (``k`` for every generator that makes k proxies) only by declaring it
identically.

A ``Registry`` maps a config word to exactly one implementation of a pipeline stage (or an encoder backend, a
dataset, a grid protocol). A stage registers under a name with the settings it uses; registering from a user's
own module (a plug-in) works exactly like a built-in stage, and the entry remembers that module so a saved
classifier can name the plug-in to import when it is missing.
"""
from __future__ import annotations

import difflib
import importlib
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from imprint.core.errors import UserError, quoted

T = TypeVar("T")

AUTO = "auto"
CHAIN = "+"  # norm stages chain as "center+l2"
OFF_WORDS = ("none", "off")  # how a command line or YAML word says None for an optional setting


@dataclass(frozen=True)
class Setting:
    """One declared setting. ``kind`` is int, float, str or bool; ``words`` are extra fixed words a number
    setting also accepts (e.g. a shrinkage estimator's name); ``stages`` makes it a choice of stage from a
    registry (``chain``: several joined by '+'); ``low``/``high`` bound numbers (``open_low``/``open_high``
    exclude the bound); ``optional`` allows None (off); ``tunable`` lists the candidates tried for "auto" by
    cross-validated accuracy, or ``choose(codes, score, seed)`` is the setting's own way of choosing it on the
    support set, returning a ``PerClassRule``; ``carry(value, ratio)`` is what a value chosen on a sample of the
    support set becomes for the whole set (a value whose best depends on the number of rows)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    words: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    auto: bool = False
    optional: bool = False
    stages: Registry | None = field(default=None, compare=False)
    chain: bool = False
    tunable: Callable[..., Sequence[Any]] | None = field(default=None, compare=False)
    shown: bool = False  # always named in report labels (k, m), not only when it differs from its default
    capped: bool = False  # a count per class, capped at the class size (a grid records the value that ran)
    # its own rule for "auto": a function, or "module:function" imported when it is first used
    choose: Callable[..., PerClassRule] | str | None = field(default=None, compare=False)
    # a value chosen on a sample of the support set, for the whole set `ratio` times larger (None: the same value)
    carry: Callable[[Any, float], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.default is not None and not (self.auto and self.default == AUTO):
            self.check(self.default)

    def chooser(self) -> Callable[..., PerClassRule]:
        """The setting's own rule for "auto" (``choose``), imported where it is named."""
        return resolve(self.choose)

    # ------------------------------------------------------------ validation
    def allowed(self) -> str:
        """What values are valid, in words (for errors and help)."""
        if self.stages is not None:
            text = "one of " + ", ".join(self.stages.names())
            if self.chain:
                text += f" (or several joined by '{CHAIN}', applied in order)"
        elif self.choices is not None:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is object:
            text = "a label (a word or a number)"
        elif self.kind is str:
            text = "a word"
        else:
            noun = "an integer" if self.kind is int else "a number"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.open_high else '<='} {self.high:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
            if self.words:
                text += ", or one of " + ", ".join(self.words)
        if self.auto:
            text += ", or 'auto'"
        if self.optional:
            text += ", or none"
        return text

    def check(self, value: Any) -> Any:
        """The value if it is valid, else a one-line ValueError naming the setting and what is allowed."""
        if value is None and self.optional:
            return None
        if value == AUTO and self.auto and isinstance(value, str):
            return value
        if self.stages is not None:
            names = value.split(CHAIN) if self.chain and isinstance(value, str) else [value]
            for name in names:
                self.stages.entry(name)  # raises UnknownStageError listing the valid names
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise UserError(f"unknown {self.name} {quoted(value)}; valid: {', '.join(sorted(self.choices))}")
            return value
        if isinstance(value, str) and value in self.words:
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"{self.name} must be true or false; got {quoted(value)}")
            return value
        if self.kind in (int, float) and _is_number(value, integer=self.kind is int) and self._in_range(value):
            return int(value) if self.kind is int else float(value)
        if self.kind is str and isinstance(value, str) and self.choices is None:
            return value
        if self.kind is object and isinstance(value, (str, int, float, bool)):  # any plain label
            return value
        raise UserError(f"{self.name} must be {self.allowed()}; got {quoted(value)}")

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def parse(self, text: str) -> Any:
        """A command-line string turned into a value of this setting (then checked)."""
        if self.optional and text.lower() in OFF_WORDS:
            return None
        if (self.auto and text == AUTO) or text in self.words:
            return text
        if self.kind is object:
            try:
                return int(text)
            except ValueError:
                return text
        if self.kind is bool:
            if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UserError(f"{self.name} must be true or false; got {quoted(text)}")
            return text.lower() in ("true", "yes", "1")
        if self.kind in (int, float):
            try:
                return self.check(int(text) if self.kind is int else float(text))
            except ValueError:
                raise UserError(f"{self.name} must be {self.allowed()}; got {quoted(text)}") from None
        return self.check(text)


def _is_number(value: Any, integer: bool) -> bool:
    """Whether `value` is a number of the kind (numpy's scalars too: a value that is one has numpy imported)."""
    if isinstance(value, bool):
        return False
    numeric: tuple[type, ...] = (int,) if integer else (int, float)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numeric += (numpy.integer,) if integer else (numpy.integer, numpy.floating)
    return isinstance(value, numeric) and (integer or math.isfinite(float(value)))


class PerClassRule:
    """A setting chosen on the support set as a rule giving one value per class (k="auto": proxies per support
    sample, shared out by class spread), rather than one value."""

    def per_class(self, support: Any, counts: Any) -> Any:
        """The values for the classes of a support set being fitted (`counts` rows per class)."""
        raise NotImplementedError

    def for_new_classes(self, counts: Any) -> Any:
        """The values for classes added later (only their own rows are known)."""
        raise NotImplementedError

    def for_fold(self, counts: Any, n_folds: int) -> int:
        """One value for a model fitted on all folds but one of a support set with `counts` rows per class."""
        raise NotImplementedError


@dataclass
class Declared:
    """A setting and the stages that use it ("slot:stage" pairs; empty for a pipeline-wide setting)."""

    setting: Setting
    users: list[tuple[str, str]] = field(default_factory=list)


class SettingsTable:
    """Every declared setting, in declaration order: pipeline-wide ones, stage choices, and each
    registered stage's own settings. Registering a plug-in stage adds its settings here."""

    def __init__(self) -> None:
        self._declared: dict[str, Declared] = {}
        self.slots: dict[str, Registry] = {}  # stage-choice settings and the registry they choose from

    def declare(self, setting: Setting, user: tuple[str, str] | None = None) -> None:
        """Add a setting (or a further user of an identical one); conflicting declarations are refused."""
        known = self._declared.get(setting.name)
        if known is None:
            self._declared[setting.name] = Declared(setting, [user] if user else [])
            if setting.stages is not None and user is None:
                self.slots[setting.name] = setting.stages
        elif known.setting != setting:
            raise RuntimeError(f"setting {setting.name!r} is declared twice with different definitions "
                               f"({known.setting} vs {setting}); a shared setting must be declared identically")
        elif user is not None and user not in known.users:
            known.users.append(user)

    def __getitem__(self, name: str) -> Setting:
        return self._declared[name].setting

    def __contains__(self, name: object) -> bool:
        return name in self._declared

    def names(self) -> list[str]:
        return list(self._declared)

    def settings(self) -> list[Setting]:
        return [d.setting for d in self._declared.values()]

    def defaults(self) -> dict[str, Any]:
        return {name: d.setting.default for name, d in self._declared.items()}

    def users(self, name: str) -> list[tuple[str, str]]:
        return list(self._declared[name].users)

    def registry_of(self, kind: str) -> Registry:
        """The registry of stages of a kind ("generation", "metric", ...)."""
        return next(registry for registry in self.slots.values() if registry.kind == kind)

    def selected(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """(slot, stage) pairs chosen by `params`, chains split into their parts."""
        chosen = []
        for slot, registry in self.slots.items():
            value = params.get(slot, self[slot].default)
            if value is None:
                continue
            names = value.split(CHAIN) if self[slot].chain and isinstance(value, str) else [value]
            for name in names:
                chosen.append((registry.kind, name))
        return chosen

    def active(self, params: dict[str, Any]) -> list[str]:
        """The settings that matter for `params`: pipeline-wide ones and those of the chosen stages."""
        chosen = set(self.selected(params))
        return [name for name, d in self._declared.items() if not d.users or chosen & set(d.users)]

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate every value, and refuse a non-default value for a setting no chosen stage uses."""
        for name, value in params.items():
            if name in self._declared:
                self[name].check(value)
        active = set(self.active(params))
        for name, value in params.items():
            if name in self._declared and name not in active and value != self[name].default:
                raise UserError(f"{name}={quoted(value)} is only used by {self._describe_users(name)}; "
                                 f"{self._current_choice(name, params)}")
        return params

    def _describe_users(self, name: str) -> str:
        by_kind: dict[str, list[str]] = {}
        for kind, stage in self._declared[name].users:
            by_kind.setdefault(kind, []).append(stage)
        return " or ".join(f"{self._slot_of(kind)}=" + "/".join(repr(s) for s in stages)
                           for kind, stages in by_kind.items())

    def _slot_of(self, kind: str) -> str:
        slots = [slot for slot, registry in self.slots.items() if registry.kind == kind]
        return slots[0] if len(slots) == 1 else "/".join(slots)

    def _current_choice(self, name: str, params: dict[str, Any]) -> str:
        kinds = {kind for kind, _ in self._declared[name].users}
        slots = [slot for slot, registry in self.slots.items() if registry.kind in kinds]
        return "got " + ", ".join(f"{slot}={params.get(slot, self[slot].default)!r}" for slot in slots)

    def in_pipeline_order(self, names: Iterable[str]) -> list[str]:
        """`names` ordered by the first pipeline slot that uses each (NORM before GEN before the metric ...)."""
        kinds = [registry.kind for registry in self.slots.values()]

        def position(name: str) -> int:
            used = [kinds.index(kind) for kind, _ in self._declared[name].users if kind in kinds]
            return min(used, default=len(kinds))

        return sorted(names, key=position)


SETTINGS = SettingsTable()


class UnknownStageError(UserError):
    """A stage name that is not registered; the message lists the valid names."""


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """'; did you mean 'x'?' for the closest choice to a mistyped word, or ''."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) or \
        [c for c in choices if c.lower() == word.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve(target: Any) -> Any:
    """`target` itself, or the attribute a "module:attribute" string names, imported."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class Entry(Generic[T]):
    """A registered stage: its name, its implementation (or the "module:attribute" that names it, imported on first
    use), a one-line summary, whether it is an oracle, its traits, its settings and the module it comes from."""

    name: str
    target: Any
    summary: str
    oracle: bool = False
    traits: dict[str, Any] = field(default_factory=dict)
    settings: tuple[Setting, ...] = ()
    module: str = ""

    @property
    def impl(self) -> T:
        """The implementation, imported the first time it is asked for."""
        self.target = resolve(self.target)
        return self.target

    @property
    def builtin(self) -> bool:
        return self.module.split(".")[0] == "imprint"


class Registry(Generic[T]):
    """A named set of interchangeable implementations of one pipeline stage."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def declare(self, name: str, target: str, summary: str, settings: Sequence[Setting] = (), oracle: bool = False,
                **traits: Any) -> None:
        """Make the implementation named by `target` ("module:attribute", imported when the stage is first used)
        available under `name`, with a one-line `summary`, the `settings` it reads (declared once, here) and
        `traits`: facts other modules may ask about without importing it (a generator that makes one proxy per
        class, a head whose scores turn into distances)."""
        self._add(Entry(name, target, summary, oracle, dict(traits), tuple(settings), target.partition(":")[0]))

    def register(self, name: str, oracle: bool = False, settings: Sequence[Setting] = (),
                 **traits: Any) -> Callable[[T], T]:
        """Decorator: ``declare`` the decorated implementation under `name` (its docstring's first line is its
        summary), as a plug-in does beside its own code."""

        def add(impl: T) -> T:
            doc = (getattr(impl, "__doc__", None) or "").strip().splitlines()
            self._add(Entry(name, impl, doc[0] if doc else "", oracle, dict(traits), tuple(settings),
                            getattr(impl, "__module__", "") or ""))
            return impl

        return add

    def _add(self, entry: Entry[T]) -> None:
        if entry.name in self._entries:
            raise RuntimeError(f"{self.kind} stage {entry.name!r} is registered twice")
        if not entry.name or "+" in entry.name or not entry.name.replace("_", "").isalnum():
            raise RuntimeError(f"{self.kind} stage name {entry.name!r} must be letters, digits and '_'")
        for setting in entry.settings:
            SETTINGS.declare(setting, (self.kind, entry.name))
        self._entries[entry.name] = entry

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
