"""Every grid config shipped in configs/, run small (one encoder, one seed, few images), gives a summary with a
mean accuracy and an average rank for every variant it names."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imprint.grid.config import parse_config
from imprint.grid.expand import expand
from imprint.grid.report import write_report
from imprint.grid.runner import run_grid
from imprint.io.cache import EmbeddingCache

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def reduced(config: dict) -> dict:
    """The same variants on a fraction of the data: Lite0, one seed, the last task (the smallest: first3), the
    extreme shots, two numbers of steps; RanPAC's projection 256 wide (its cost does not shrink with the
    data)."""
    config = dict(config, encoders=["lite0"], seeds=config.get("seeds", [0])[:1])
    config["task_splits"] = config.get("task_splits", ["all"])[-1:]
    shots = config.get("shots", ["all"])
    config["shots"] = sorted({shots[0], shots[-1]}, key=str)
    if "steps" in config:
        config["steps"] = config["steps"][:2]
    if "episodes" in config:
        config["episodes"] = dict(config["episodes"], count=10)
    for variant in config.get("variants", []):
        if variant.get("preset") == "ranpac":
            variant["projection_dim"] = 256
    for key in ("datasets", "unknown_datasets"):
        for dataset in config.get(key, []):
            if "folder" in dataset:
                dataset["folder"] = str((ROOT / "configs" / dataset["folder"]).resolve())  # as load_config reads it
            dataset.update(support_per_class=16, val_per_class=min(dataset.get("val_per_class", 2), 2),
                           test_per_class=4)
    return config


@pytest.fixture(scope="module")
def cache_dir(kept_dir) -> Path:
    return kept_dir("imprint-grid-embeddings")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_shipped_config_ranks_every_variant(path: Path, tmp_path: Path, cache_dir: Path):
    config = parse_config(reduced(yaml.safe_load(path.read_text())), path.name)
    variants = {cell.variant for cell in expand(config).cells}
    run_grid(config, tmp_path, workers=1, cache=EmbeddingCache(cache_dir), progress=False, log=lambda _: None)
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    table = summary.split("## Variants")[1].split("\n\n")[1]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert set(rows) == variants, path.name
    for variant, cells in rows.items():
        accuracy, rank = float(cells[1]), float(cells[2])
        assert 0 <= accuracy <= 100 and 1 <= rank <= len(variants), (path.name, variant)
    groups = {cell.group for cell in expand(config).cells}
    assert f"{len(groups)} groups (encoder x dataset x task x shots)" in summary  # steps keep groups apart
