"""Expand a grid config into cells, dropping redundant and invalid combinations with a count of why."""
from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from imprint.data.tasks import task_name
from imprint.grid.config import METHOD_DEFAULTS, DatasetSpec, GridConfig
from imprint.stages import GENERATORS

PROTOCOL_VERSION = 1  # bump when a cell's evaluation changes, so stored results are not reused


@dataclass(frozen=True)
class Cell:
    """One imprint-and-evaluate run: data (encoder, dataset, task, shots, seed) and a method."""

    encoder: str
    dataset: DatasetSpec
    task: str | tuple
    shots: int | str
    seed: int
    variant: str
    method: dict[str, Any] = field(hash=False)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result (the variant's display name does not)."""
        return {"protocol": PROTOCOL_VERSION, "encoder": self.encoder, "dataset": self.dataset.model_dump(),
                "task": list(self.task) if isinstance(self.task, tuple) else self.task, "shots": self.shots,
                "seed": self.seed, "method": self.method}

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True)
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
        """The (encoder, dataset, task, shots) group that variants are ranked within."""
        return self.encoder, self.dataset.label, task_name(self.task), str(self.shots)


@dataclass
class Expansion:
    """The cells to report (each variant in each group) and why others were dropped. Cells whose settings
    coincide after canonicalisation (e.g. k capped at the shots) share one run, stored once by key."""

    cells: list[Cell]
    dropped: Counter = field(default_factory=Counter)

    @property
    def runs(self) -> list[Cell]:
        """One cell per distinct key: what actually has to be computed."""
        return list({cell.key: cell for cell in reversed(self.cells)}.values())[::-1]

    def summary(self) -> str:
        reasons = "; ".join(f"{n} {why}" for why, n in self.dropped.most_common())
        text = f"{len(self.cells)} cells, {len(self.runs)} distinct runs"
        return text + (f" (dropped {sum(self.dropped.values())}: {reasons})" if reasons else "")


def canonical_method(method: dict[str, Any], shots: int | str, dataset: DatasetSpec) -> dict[str, Any]:
    """The settings that matter for this cell: ones its stages ignore removed, k capped at the shots."""
    method = dict(method)
    pool = dataset.support_per_class if shots == "all" else shots
    if GENERATORS.entry(method["generation"]).traits.get("ignores_k"):
        method.pop("k")
    elif method["k"] != "auto" and method["k"] > pool:
        method["k"] = pool
    if method["aggregation"] != "mnn":
        method.pop("m")
        method.pop("mnn_weights")
    if "quantile" not in (method["norm_pre"], method["norm_post"], method["norm_inf"]):
        method.pop("quantile_reference")
    return method


def _variant_blocks(config: GridConfig) -> list[tuple[str | None, dict[str, list]]]:
    top = {axis: getattr(config, axis) for axis in METHOD_DEFAULTS}
    if config.variants is None:
        return [(None, top)]
    return [(v.name, {axis: getattr(v, axis) or top[axis] for axis in METHOD_DEFAULTS}) for v in config.variants]


def method_label(method: dict[str, Any]) -> str:
    """NORM_pre / GEN / NORM_post / NORM_inf / AGG, the paper's way of naming a configuration."""
    gen = method["generation"] + (f" k={method['k']}" if "k" in method else "")
    agg = f"{method['m']}-nn" if method["aggregation"] == "mnn" else method["aggregation"]
    metric = "" if method["metric"] == "dot" else f" {method['metric']}"
    return f"{method['norm_pre']}/{gen}/{method['norm_post']}/{method['norm_inf']}/{agg}{metric}"


def expand(config: GridConfig) -> Expansion:
    """Every (encoder, dataset, task, shots, seed, variant) cell, minus duplicates and invalid ones."""
    methods: list[tuple[str | None, dict, list[str]]] = []
    for name, axes in _variant_blocks(config):
        varying = [axis for axis, values in axes.items() if len(values) > 1]
        for values in itertools.product(*axes.values()):
            methods.append((name, dict(zip(axes, values)), varying))
    expansion = Expansion([])
    seen: set[tuple[str, str]] = set()
    data_axes = itertools.product(config.encoders, config.datasets, config.task_splits, config.shots, config.seeds)
    for encoder, dataset, task, shots, seed in data_axes:
        if shots != "all" and shots > dataset.support_per_class:
            expansion.dropped["with shots above support_per_class"] += len(methods) + len(config.baselines)
            continue
        for name, raw, varying in methods:
            method = canonical_method(raw, shots, dataset)
            label = method_label(method) if name is None else name
            shown = [axis for axis in varying if axis in method]  # not the axes this cell's stages ignore
            if name is not None and shown:
                label += " (" + ", ".join(f"{axis}={raw[axis]}" for axis in shown) + ")"
            cell = Cell(encoder, dataset, task, shots, seed, label, method)
            if (cell.key, label) in seen:
                expansion.dropped["duplicates (differing only in settings their stages ignore)"] += 1
                continue
            seen.add((cell.key, label))
            expansion.cells.append(cell)
        for baseline in config.baselines:
            expansion.cells.append(Cell(encoder, dataset, task, shots, seed, baseline.replace("_", " "),
                                        {"baseline": baseline}))
    return expansion
