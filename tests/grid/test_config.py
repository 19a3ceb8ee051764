"""Tests of ``imprint.grid.config``: grid configuration: a YAML file of list-valued axes, validated on load with one-
line errors."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, TESTS, run

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.grid.config import ConfigError, load_config, parse_config
from imprint.grid.data import EmbeddedDataset, split
from imprint.grid.expand import expand
from imprint.grid.report import write_report
from imprint.grid.runner import run_grid
from imprint.io.cache import EmbeddingCache

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def reduced(config: dict) -> dict:
    """The same variants on a fraction of the data: Lite0, one seed, the first dataset (and unknown dataset), the
    last task (the smallest: first3), the extreme shots, two numbers of steps; RanPAC's projection 256 wide (its
    cost does not shrink with the data)."""
    config = dict(config, encoders=["lite0"], seeds=config.get("seeds", [0])[:1])
    for key in ("datasets", "unknown_datasets"):
        if key in config:
            config[key] = config[key][:1]
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
def plugin():
    sys.path.insert(0, str(TESTS))
    import plugin_stage

    return plugin_stage


BASE = {"datasets": ["mnist5k"]}


def _toy_data() -> EmbeddedDataset:
    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 5)])
    is_test = np.repeat([False, True], [120, 20])
    return EmbeddedDataset(rng.normal(size=(140, 8)).astype(np.float32), y, is_test, ["a", "b", "c", "d"])


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


def test_grid_yaml_takes_plugins_and_presets(plugin, monkeypatch):
    from imprint.grid.config import ConfigError, parse_config
    from imprint.grid.expand import expand

    monkeypatch.syspath_prepend(str(TESTS))
    config = parse_config({"datasets": ["digits"], "plugins": ["plugin_stage"],
                           "variants": [{"name": "trimmed", "generation": "trimmed_mean", "trim": [0.1, 0.3]},
                                        {"preset": "gda"}, {"name": "gda ledoit-wolf", "preset": "gda",
                                                            "shrinkage": "ledoit_wolf"}]})
    cells = expand(config).cells
    assert [c.variant for c in cells] == ["trimmed (trim=0.1)", "trimmed (trim=0.3)", "gda", "gda ledoit-wolf"]
    assert cells[2].method["metric"] == "mahalanobis" and cells[2].method["shrinkage"] == "auto"
    assert cells[3].method["shrinkage"] == "ledoit_wolf" and cells[3].method["generation"] == "mean"
    with pytest.raises(ConfigError, match="plug-in module 'missing_plugin' cannot be imported"):
        parse_config({"datasets": ["digits"], "plugins": ["missing_plugin"]})


def test_the_grid_default_generation_is_the_classifiers(tmp_path):
    from imprint.grid.config import parse_config

    config = parse_config({"datasets": ["digits"]})
    assert config.generation == [ImprintClassifier().generation] and config.k == [ImprintClassifier().k]


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path, capsys):
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nname: *a9\ndatasets: [fashion_mnist]\n")
    assert bomb.stat().st_size < 700
    started = time.perf_counter()
    code, _, err = run(capsys, "grid", bomb, "--out", tmp_path / "out")
    assert code == 2 and time.perf_counter() - started < 5
    assert "aliases" in err and "write the values out" in err and len(err) < 400 and err.count("\n") == 1
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("name: &x [*x]\ndatasets: [fashion_mnist]\n")
    code, _, err = run(capsys, "grid", recursive, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1


def test_a_key_given_twice_in_yaml_is_refused(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("datasets: [fashion_mnist]\nshots: [1]\nshots: [5]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and "'shots' is given twice" in err and "line 2" in err


@pytest.mark.parametrize("change, expected", [
    ({"norm_pree": "l2"}, "top level: unknown key 'norm_pree'; valid keys: name, plugins, protocol, encoders"),
    ({"norm_pree": "l2"}, "did you mean 'norm_pre'?"),
    ({"variants": [{"generation": "kmean"}]},
     "variants[0].generation: unknown generation 'kmean'; valid: all, fps, kls, kmeans, kmedoids, ls, mean"),
    ({"variants": [{"name": "x", "k_": 3}]}, "variants[0]: unknown key 'k_'; valid keys: name, preset, generation"),
    ({"variants": [{"preset": "gdaa"}]}, "variants[0].preset: unknown preset 'gdaa'; valid: qi, hosoda"),
    ({"datasets": ["mnist"]}, "datasets[0]: unknown dataset 'mnist'; valid: digits, fashion_mnist, mnist5k"),
    ({"datasets": [{"name": "digits", "tests": 3}]}, "datasets[0]: unknown key 'tests'; valid keys: name, folder"),
    ({"datasets": [{"name": "digits", "folder": "x"}]}, "exactly one of 'name' (built-in) or 'folder'"),
    ({"k": [5, 0]}, "k: k must be an integer >= 1, or 'auto'; got 0"),
    ({"m": "three"}, "m: m must be an integer >= 1; got 'three'"),
    ({"shrinkage": 2}, "shrinkage: shrinkage must be a number >= 0 and <= 1, or one of ledoit_wolf, oas, gda"),
    ({"shots": ["al"]}, "shots: shots must be a positive integer or 'all'; got 'al'"),
    ({"task_splits": ["evens"]}, "task_splits: unknown task split 'evens'; valid: all, even, first3, odd"),
    ({"task_splits": [[3]]}, "a list of >= 2 class indices or names; got [3]"),
    ({"norm_inf": "L2"}, "norm_inf: unknown normalisation 'L2'; valid: center, l2, none, quantile, random_relu"),
    ({"norm_inf": "center+l3"}, "norm_inf: unknown normalisation 'l3'; valid: center, l2"),
    ({"aggregation": ["max", "knn"]}, "aggregation: unknown aggregation 'knn'; valid: max, mean, mnn, sum"),
    ({"baselines": ["svm"]}, "baselines: unknown baseline 'svm'; valid: linear_probe"),
    ({"seeds": [-1]}, "seeds: seeds must be integers from 0 to 2^32 - 1; got -1"),
    ({"datasets": [{"name": "digits", "val_per_class": 0}], "baselines": ["linear_probe"]},
     "set val_per_class >= 1"),
    ({"datasets": []}, "'datasets' is empty"),
])
def test_config_errors_name_the_key_and_the_valid_choices(change, expected):
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, **change}, "grid.yaml")
    message = str(error.value)
    assert expected in message and message.startswith("grid.yaml: ")
    assert "\n" not in message


def test_missing_datasets_and_unreadable_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="top level: missing required key 'datasets'"):
        parse_config({"encoders": ["lite0"]})
    with pytest.raises(ConfigError, match="grid config not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [mnist5k\nk: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line \d"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- mnist5k\n")
    with pytest.raises(ConfigError, match="a grid config is a mapping"):
        load_config(listing)


def test_the_shipped_configs_are_valid():
    for path in ROOT.joinpath("configs").glob("*.yaml"):
        assert expand(load_config(path)).cells, path


def test_scalars_become_axes_and_variants_inherit_the_top_level():
    config = parse_config({**BASE, "k": 5, "norm_pre": "none",
                           "variants": [{"name": "km", "generation": "kmeans"}, {"name": "qi", "norm_pre": "l2"}]})
    cells = expand(config).cells
    assert [c.variant for c in cells] == ["km", "qi"]
    assert cells[0].method["k"] == 5 and cells[0].method["norm_pre"] == "none"
    assert cells[1].method["generation"] == "kmeans" and cells[1].method["norm_pre"] == "l2"  # the classifier's default


def test_expansion_drops_settings_the_stages_ignore():
    config = parse_config({**BASE, "generation": ["mean", "kmeans", "all"], "k": [5, 20],
                           "aggregation": ["max", "mnn"], "m": [1, 3], "seeds": [0, 1]})
    expansion = expand(config)
    labels = sorted({c.variant for c in expansion.cells})
    # mean and all ignore k; m only matters for mnn: 3 generators -> (1 + 2 + 1) x (max + 2 mnn) variants
    assert len(labels) == 12
    assert "l2/mean/l2/l2/max" in labels and "l2/kmeans k=20/l2/l2/mnn m=3" in labels
    assert len(expansion.cells) == 12 * 2
    assert sum(expansion.dropped.values()) == 3 * 2 * 2 * 2 * 2 - 24  # generation x k x aggregation x m x seeds
    assert "24 cells (1 group x 12 variants x 2 seeds); left out: 24 combinations that differ only in settings" \
        in expansion.summary()
    mean_cell = next(c for c in expansion.cells if c.variant == "l2/mean/l2/l2/max")
    assert "k" not in mean_cell.method and "m" not in mean_cell.method


def test_k_is_capped_at_the_shots_and_capped_variants_share_one_run():
    config = parse_config({**BASE, "shots": [3, "all"], "variants": [{"name": "km", "generation": "kmeans",
                                                                    "k": [5, 20]}]})
    expansion = expand(config)
    at_three = [c for c in expansion.cells if c.shots == 3]
    assert [c.variant for c in at_three] == ["km (k=5)", "km (k=20)"]
    assert {c.method["k"] for c in at_three} == {3} and len({c.key for c in at_three}) == 1
    assert len(expansion.runs) == 3
    unnamed = expand(parse_config({**BASE, "shots": [1, 3, "all"], "generation": "kmeans", "k": [2, 5]}))
    assert {c.variant for c in unnamed.cells} == {"l2/kmeans k=2/l2/l2/max", "l2/kmeans k=5/l2/l2/max"}
    assert {(c.shots, c.requested["k"], c.method["k"]) for c in unnamed.cells} == {
        (1, 2, 1), (1, 5, 1), (3, 2, 2), (3, 5, 3), ("all", 2, 2), ("all", 5, 5)}  # named as asked, run as capped
    with_shots_above_pool = parse_config({"datasets": [{"name": "digits", "support_per_class": 10}],
                                          "shots": [5, 50]})
    assert expand(with_shots_above_pool).dropped["with shots above support_per_class"] == 1


def test_the_cell_key_ignores_the_display_name_but_not_the_data():
    a = expand(parse_config({**BASE, "variants": [{"name": "a", "generation": "kmeans"}]})).cells[0]
    b = expand(parse_config({**BASE, "variants": [{"name": "b", "generation": "kmeans"}]})).cells[0]
    c = expand(parse_config({**BASE, "seeds": 1, "variants": [{"name": "a", "generation": "kmeans"}]})).cells[0]
    assert a.key == b.key != c.key


def test_baselines_join_every_group():
    config = parse_config({**BASE, "task_splits": ["even", "odd"], "baselines": "linear_probe"})
    cells = expand(config).cells
    assert [c.variant for c in cells] == ["l2/kmeans k=20/l2/l2/max", "linear probe"] * 2


def test_support_validation_and_test_are_disjoint_and_test_is_fixed_across_seeds():
    data = _toy_data()
    spec = parse_config({"datasets": [{"name": "digits", "val_per_class": 4, "test_per_class": 5}]}).datasets[0]
    first, second = split(data, spec, "all", 7, seed=0), split(data, spec, "all", 7, seed=1)
    for rows in (first, second):
        assert not set(rows.support) & set(rows.val) and not set(rows.support) & set(rows.test)
        assert not data.is_test[rows.support].any() and data.is_test[rows.test].all()
        assert np.bincount(rows.labels[rows.support]).tolist() == [7] * 4
        assert np.bincount(rows.labels[rows.val]).tolist() == [4] * 4
    assert np.array_equal(first.test, second.test)
    assert not np.array_equal(first.support, second.support)
    everything = split(data, spec, "all", "all", seed=0)
    assert np.bincount(everything.labels[everything.support]).tolist() == [26] * 4


def test_task_classes_are_relabelled_in_the_listed_order():
    data = _toy_data()
    spec = parse_config({"datasets": [{"name": "digits", "val_per_class": 2}]}).datasets[0]
    rows = split(data, spec, ("d", 1), 3, seed=0)
    assert set(data.y[rows.support][rows.labels[rows.support] == 0]) == {3}
    assert set(data.y[rows.support][rows.labels[rows.support] == 1]) == {1}
    assert set(data.y[rows.test]) == {1, 3}
    with pytest.raises(ValueError, match="task class 'e' is not a class of digits; valid: a, b, c, d"):
        split(data, spec, ("a", "e"), 3, seed=0)


def test_configs_round_trip_through_yaml(tmp_path: Path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"folder": "examples/fashion", "val_per_class": 2,
                                                  "test_per_class": 6}], "task_splits": [["coat", "bag"]]}))
    config = load_config(path)
    assert config.task_splits == [("coat", "bag")] and config.datasets[0].label == "fashion"


def test_relative_image_folders_are_read_from_the_config_files_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root
    config = load_config(ROOT / "configs" / "example_folder.yaml")
    folder = Path(config.datasets[0].folder)
    assert folder.is_absolute() and (folder / "coat").is_dir()
    single = tmp_path / "one.yaml"
    single.write_text(yaml.safe_dump({"datasets": {"folder": "imgs"}}))
    assert load_config(single).datasets[0].folder == str(tmp_path / "imgs")


def test_a_named_variant_is_not_split_by_an_axis_its_stages_ignore():
    config = parse_config({**BASE, "k": [5, 20], "variants": [{"name": "km", "generation": "kmeans"},
                                                              {"name": "1-NN", "generation": "all"}]})
    expansion = expand(config)
    assert [c.variant for c in expansion.cells] == ["km (k=5)", "km (k=20)", "1-NN"]
    assert expansion.dropped["combinations that differ only in settings their stages ignore"] == 1


def test_the_word_none_turns_an_optional_setting_off():
    config = parse_config({"datasets": ["digits"], "reject": ["none", "max_score"],
                           "zero_shot": True, "text_alpha": ["off", "auto"]})
    assert config.reject == [None, "max_score"] and config.text_alpha == [None, "auto"]
    with pytest.raises(ValueError, match="unknown metric 'none'"):
        parse_config({"datasets": ["digits"], "metric": "none"})


def test_a_variant_can_ask_for_the_method_chosen_on_the_support_set():
    config = parse_config({"datasets": ["digits"], "variants": [{"preset": "auto"}, {"preset": "gda"}]})
    cells = expand(config).cells
    assert [cell.method["method"] for cell in cells] == ["auto", "gda"]
    with pytest.raises(ValueError, match="unknown preset 'gdaa'; valid: .*, auto"):
        parse_config({"datasets": ["digits"], "variants": [{"preset": "gdaa"}]})


def test_two_grid_variants_of_one_name_are_refused(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("datasets: [fashion_mnist]\nvariants:\n  - {preset: gda}\n  - {preset: gda, shrinkage: 0.5}\n")
    assert main(["grid", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "two variants are named 'gda'" in capsys.readouterr().err
