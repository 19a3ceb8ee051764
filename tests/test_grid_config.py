"""Grid configs: validation errors name the key and the valid choices; expansion drops what is redundant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from imprint.grid.config import ConfigError, load_config, parse_config
from imprint.grid.data import EmbeddedDataset, split
from imprint.grid.expand import expand

BASE = {"datasets": ["mnist5k"]}


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
    for path in Path(__file__).parents[1].joinpath("configs").glob("*.yaml"):
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


def _toy_data() -> EmbeddedDataset:
    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 5)])
    is_test = np.repeat([False, True], [120, 20])
    return EmbeddedDataset(rng.normal(size=(140, 8)).astype(np.float32), y, is_test, ["a", "b", "c", "d"])


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
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "example_folder.yaml")
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
