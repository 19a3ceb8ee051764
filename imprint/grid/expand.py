"""Expand a grid config into cells, dropping redundant and invalid combinations with a count of why."""
from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from imprint.core.presets import preset_settings
from imprint.core.settings import CHAIN, SETTINGS
from imprint.data.folder import folder_fingerprint
from imprint.data.tasks import task_name
from imprint.estimator.configuration import SLOT_NAMES, chooses_method, method_settings
from imprint.grid.config import DatasetSpec, GridBase, method_axes
from imprint.grid.protocols import PROTOCOLS

PROTOCOL_VERSION = 2  # bump when a cell's evaluation changes, so stored results are not reused
DUPLICATE = "combinations that differ only in settings their stages ignore"
ABOVE_POOL = "with shots above support_per_class"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Cell:
    """One imprint-and-evaluate run: data (encoder, dataset, task, shots, seed) and a method.

    `method` holds the settings that run (those the chosen stages use, k capped at the shots); `requested`
    the settings the variant names, which the reports show and rank by."""

    encoder: str
    dataset: DatasetSpec
    task: str | tuple
    shots: int | str
    seed: int
    variant: str
    method: dict[str, Any] = field(hash=False)
    requested: dict[str, Any] = field(hash=False, default_factory=dict)
    protocol: str = "closed_set"
    steps: int = 1  # class-incremental protocol: the task's classes arrive in this many steps
    zero_shot: bool = False  # fit with the text embeddings of the task's class names
    contents: str = ""  # an image folder's fingerprint (files, sizes, times): results never outlive a change
    protocol_options: tuple = ()  # (name, value) pairs of the protocol's own sizes (episodes: ways, queries, count)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result (the variant's display name does not)."""
        return {"protocol": PROTOCOL_VERSION, "evaluation": self.protocol, "encoder": self.encoder,
                "dataset": self.dataset.model_dump(), "task": list(self.task) if isinstance(self.task, tuple)
                else self.task, "shots": self.shots, "seed": self.seed, "method": self.method,
                **({"steps": self.steps} if self.steps > 1 else {}), **({"zero_shot": True} if self.zero_shot else {}),
                **({"contents": self.contents} if self.contents else {}),
                **({"protocol_options": dict(self.protocol_options)} if self.protocol_options else {})}

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def data_key(self) -> tuple[str, DatasetSpec]:
        return self.encoder, self.dataset

    @property
    def support_key(self) -> tuple:
        """What determines the support set: the data, the task, the shots and the seed."""
        return (*self.data_key, self.task, self.shots, self.seed)

    @property
    def group(self) -> tuple[str, str, str, str]:
        """The (encoder, dataset, task, shots) group that variants are ranked within (the task names its steps
        when classes arrive in several)."""
        task = task_name(self.task) + (f" in {self.steps} steps" if self.steps > 1 else "")
        return self.encoder, self.dataset.label, task, str(self.shots)


@dataclass
class Expansion:
    """The cells to report (each variant in each group and seed) and why combinations were left out. Cells
    whose settings coincide once k is capped at the shots share one run, stored once by key."""

    cells: list[Cell]
    dropped: Counter = field(default_factory=Counter)

    @property
    def runs(self) -> list[Cell]:
        """One cell per distinct key: what actually has to be computed."""
        return list({cell.key: cell for cell in reversed(self.cells)}.values())[::-1]

    def summary(self) -> str:
        groups = len({cell.group for cell in self.cells})
        variants = len({cell.variant for cell in self.cells})
        seeds = len({cell.seed for cell in self.cells})
        text = f"{len(self.cells)} cells ({plural(groups, 'group')} x {plural(variants, 'variant')} x " \
               f"{plural(seeds, 'seed')})"
        shared = len(self.cells) - len(self.runs)
        if shared:
            text += f", {len(self.runs)} runs ({shared} cells share a run: k capped at the shots gives the same method)"
        left_out = "; ".join(f"{n} {why}" for why, n in self.dropped.most_common())
        return text + (f"; left out: {left_out}" if left_out else "")


def active_method(method: dict[str, Any]) -> dict[str, Any]:
    """Only the settings the chosen stages use (in declaration order)."""
    active = set(SETTINGS.active(method))
    return {name: value for name, value in method.items() if name in active}


def canonical_method(method: dict[str, Any], shots: int | str, dataset: DatasetSpec) -> dict[str, Any]:
    """The settings that matter for this cell: ones its stages ignore removed, counts per class (k) capped at the
    shots, since a class with fewer samples uses all of them."""
    if chooses_method(method):  # the method is chosen per cell: its stage settings are not the grid's to set
        return {name: value for name, value in active_method(method).items() if name not in method_settings()}
    method = active_method(method)
    pool = dataset.support_per_class if shots == "all" else shots
    for name, value in method.items():
        if SETTINGS[name].capped and isinstance(value, int) and value > pool:
            method[name] = pool
    return method


def _own_settings(slot: str, value: str, names: list[str]) -> list[str]:
    """Which of `names` the stage(s) chosen for `slot` declare."""
    kind, stages = SETTINGS.slots[slot].kind, set(str(value).split(CHAIN))
    return [name for name in names if any(k == kind and stage in stages for k, stage in SETTINGS.users(name))]


def method_label(method: dict[str, Any]) -> str:
    """NORM_pre / GEN / NORM_post / NORM_inf / AGG (metric), the paper's way of naming a configuration, with
    each stage's own settings beside it (k and m always, the others where they differ from their default)."""
    if chooses_method(method):
        return "auto (the method chosen on the support set)"
    method = active_method(method)
    names, shown = [n for n in method if n not in SLOT_NAMES], set()

    def part(slot: str) -> str:
        own = [name for name in _own_settings(slot, method[slot], names) if name not in shown]
        shown.update(own)
        extras = [f"{name}={method[name]}" for name in own if SETTINGS[name].shown or
                  method[name] != SETTINGS[name].default]
        return " ".join([str(method[slot]), *extras])

    text = "/".join(part(slot) for slot in ("norm_pre", "generation", "norm_post", "norm_inf", "aggregation"))
    metric = part("metric")
    text = text if metric == "dot" else f"{text} {metric}"
    return text if method.get("reject") is None else f"{text} reject={part('reject')}"


def _variant_blocks(config: GridBase) -> list[tuple[str | None, dict[str, list]]]:
    top = {axis: getattr(config, axis) for axis in method_axes()}
    if config.variants is None:
        return [(None, top)]
    blocks = []
    for variant in config.variants:
        preset = {axis: [value] for axis, value in preset_settings(variant.preset).items()} if variant.preset else {}
        axes = {axis: getattr(variant, axis) or preset.get(axis) or top[axis] for axis in method_axes()}
        blocks.append((variant.name or variant.preset, axes))
    return blocks


def expand(config: GridBase) -> Expansion:
    """Every (encoder, dataset, task, shots, seed, variant) cell, minus duplicates and invalid ones."""
    methods: list[tuple[str | None, dict, list[str]]] = []
    for name, axes in _variant_blocks(config):
        varying = [axis for axis, values in axes.items() if len(values) > 1]
        for values in itertools.product(*axes.values()):
            methods.append((name, dict(zip(axes, values)), varying))
    expansion = Expansion([])
    seen: set[tuple[str, str]] = set()
    contents = {spec.folder: folder_fingerprint(spec.folder) for spec in [*config.datasets, *config.unknown_datasets]
                if spec.folder is not None}
    far = "".join(contents[spec.folder] for spec in config.unknown_datasets if spec.folder is not None)
    protocol = PROTOCOLS.get(config.protocol)()
    steps_axis = config.steps if protocol.uses_steps else [1]
    options = tuple(sorted(protocol.options(config).items())) if hasattr(protocol, "options") else ()
    data_axes = itertools.product(config.encoders, config.datasets, config.task_splits, steps_axis, config.shots,
                                  config.seeds)
    for encoder, dataset, task, steps, shots, seed in data_axes:
        if shots != "all" and shots > dataset.support_per_class:
            expansion.dropped[ABOVE_POOL] += len(methods) + len(config.baselines)
            continue
        for name, raw, varying in methods:
            requested = active_method(raw)
            label = method_label(raw) if name is None else name
            shown = [axis for axis in varying if axis in requested]
            if name is not None and shown:
                label += " (" + ", ".join(f"{axis}={raw[axis]}" for axis in shown) + ")"
            cell = Cell(encoder, dataset, task, shots, seed, label, canonical_method(raw, shots, dataset), requested,
                        config.protocol, steps, config.zero_shot, contents.get(dataset.folder, "") + far, options)
            if (cell.key, label) in seen:
                expansion.dropped[DUPLICATE] += 1
                continue
            seen.add((cell.key, label))
            expansion.cells.append(cell)
        for baseline in config.baselines:
            expansion.cells.append(Cell(encoder, dataset, task, shots, seed, baseline.replace("_", " "),
                                        {"baseline": baseline}, {"baseline": baseline}, config.protocol, steps,
                                        contents=contents.get(dataset.folder, "") + far))
    return expansion
