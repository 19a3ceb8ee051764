"""The classifier settings that ``fit`` and ``fewshot`` turn into flags, without importing the stages that declare
them (which imports torch: 1.2 s, more than a whole ``--help`` should take).

The declarations (``imprint.core.settings``) are read from a snapshot shipped beside this module, and only while every
source file that declares them is byte for byte the one the snapshot was taken from; otherwise, and with
``--plugin``, the stages are imported and the declarations read live. A stale snapshot therefore costs time, never
a wrong flag. Refresh it after changing a declaration (a test says when): ``python -m imprint.cli.setting_flags``
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imprint.core.settings import Registry, Setting

SNAPSHOT = Path(__file__).with_name("setting_flags.json")
PACKAGE = Path(__file__).resolve().parents[1]
FORMAT = 1
KINDS = {kind.__name__: kind for kind in (int, float, str, bool, object)}
# Setting fields that say how a value is written and checked (the rest, callables, say how "auto" is chosen)
PLAIN_FIELDS = tuple(f.name for f in fields(Setting) if f.name not in ("kind", "stages", "tunable", "choose", "carry"))
REGISTRY_TITLES = (("generation", "generation"), ("normalisation", "normalisation (chain with +, e.g. center+l2)"),
                   ("metric", "metric (head)"), ("aggregation", "aggregation"))


@dataclass(frozen=True)
class SettingFlag:
    """One classifier setting as the parser needs it: the declaration and the stages that use it."""

    setting: Setting
    users: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SettingFlags:
    """Every classifier setting in parameter order, and the stages of each pipeline point described for the help."""

    settings: tuple[SettingFlag, ...]
    stages: dict[str, str]  # registry kind -> one line per stage (Registry.describe)


def setting_flags(live: bool = False) -> SettingFlags:
    """The flags from the snapshot when it matches the source files, else (or with `live`) from the declarations;
    from the declarations too where they are imported already (a program calling ``imprint.cli.main``): that is
    free, and counts any plug-in it imported."""
    if live or "imprint.estimator.configuration" in sys.modules:
        return live_flags()
    return read_snapshot() or live_flags()


def live_flags() -> SettingFlags:
    """The flags from the declarations themselves (imports the stages, and torch)."""
    from imprint.core.settings import SETTINGS
    from imprint.estimator.configuration import parameter_names
    from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS

    return SettingFlags(tuple(SettingFlag(SETTINGS[name], tuple(SETTINGS.users(name))) for name in parameter_names()),
                        {r.kind: r.describe() for r in (GENERATORS, NORMS, METRICS, AGGREGATIONS)})


def read_snapshot(path: Path | None = None) -> SettingFlags | None:
    """The snapshot's flags (default: the shipped one), or None where it is missing, unreadable or taken from other
    source files."""
    try:
        data = json.loads((path or SNAPSHOT).read_text(encoding="utf-8"))
        if data["format"] != FORMAT or data["sources"] != source_digests(list(data["sources"])):
            return None
        return SettingFlags(tuple(_flag(item) for item in data["settings"]), dict(data["stages"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _flag(item: dict[str, Any]) -> SettingFlag:
    stages = item["stages"]
    registry = None if stages is None else Registry.listing(stages["kind"], stages["names"])
    setting = Setting(kind=KINDS[item["kind"]], stages=registry,
                      **{name: tuple(value) if isinstance(value, list) else value
                         for name, value in item.items() if name in PLAIN_FIELDS})
    return SettingFlag(setting, tuple(tuple(user) for user in item["users"]))


def snapshot_data(flags: SettingFlags, modules: list[str]) -> dict[str, Any]:
    """What the snapshot file holds: `flags`, and the digests of the source files (package-relative) they come from."""
    settings = []
    for flag in flags.settings:
        s = flag.setting
        item: dict[str, Any] = {name: getattr(s, name) for name in PLAIN_FIELDS}
        item["kind"] = s.kind.__name__
        item["stages"] = None if s.stages is None else {"kind": s.stages.kind, "names": s.stages.names()}
        item["users"] = [list(user) for user in flag.users]
        settings.append(item)
    return {"format": FORMAT, "sources": source_digests(modules), "settings": settings, "stages": flags.stages}


def declaring_modules() -> list[str]:
    """The package's source files (relative paths) a fresh interpreter reads to declare every classifier setting."""
    code = ("import sys, imprint.estimator.configuration\n"
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'imprint'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return sorted(Path(line).resolve().relative_to(PACKAGE).as_posix() for line in done.stdout.split())


def source_digests(modules: list[str]) -> dict[str, str]:
    """The SHA-256 of each package-relative source file (an empty string for one that is missing)."""
    digests = {}
    for name in modules:
        try:
            digests[name] = hashlib.sha256((PACKAGE / name).read_bytes()).hexdigest()
        except OSError:
            digests[name] = ""
    return digests


def write_snapshot(path: Path | None = None) -> Path:
    """Take the snapshot from the live declarations and write it to `path` (default: the shipped one)."""
    from imprint.core.atomic import atomic_write_bytes

    text = json.dumps(snapshot_data(live_flags(), declaring_modules()), indent=1, sort_keys=True) + "\n"
    return atomic_write_bytes(path or SNAPSHOT, text.encode("utf-8"))


if __name__ == "__main__":
    print(f"wrote {write_snapshot()}")
