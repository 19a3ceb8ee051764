"""Grid configuration: a YAML file of list-valued axes, validated on load with one-line errors.

Every axis accepts one value or a list. The method axes are the classifier's settings, derived from their
declarations (``imprint.core.settings``), so a stage added to imprint or imported from a plug-in (``plugins:
[module]``) is a valid axis with its own settings. Method axes at the top level form one variant (their
cartesian product); ``variants`` lists named variants instead, each inheriting the top-level method axes it
does not set, optionally starting from a published method (``preset: gda``). Unknown keys and values are
errors that name them and list the valid choices.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator

from imprint.core.errors import UserError, quoted
from imprint.core.presets import AUTO, PRESETS
from imprint.core.settings import OFF_WORDS, SETTINGS, did_you_mean
from imprint.data.builtin import DATASETS
from imprint.data.tasks import TASK_SPLITS
from imprint.encoders import DEFAULT_ENCODER
from imprint.encoders.runtime import RUNTIMES
from imprint.estimator.configuration import parameter_names
from imprint.estimator.text_blend import needs_text
from imprint.grid.protocols import PROTOCOLS

BASELINES = ("linear_probe",)
NOT_AXES = ("seed", "device")  # the grid's `seeds` axis seeds each cell; `device` is a run setting


GRID_DEFAULTS = {"method": "custom"}  # a grid runs the stages it names; `preset: auto` (or `method: auto`) chooses


class ConfigError(UserError):
    """A grid config that cannot be used; the message names the file, the key and the fix."""


def method_axes() -> list[str]:
    """The classifier settings a grid can vary."""
    return [name for name in parameter_names() if name not in NOT_AXES]


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _each(check: Callable[[Any], Any]) -> BeforeValidator:
    """Wrap a scalar into a list, then check every element."""
    return BeforeValidator(lambda value: [check(item) for item in _as_list(value)])


def _word_in(kind: str, words: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in words:
            raise UserError(f"unknown {kind} {quoted(value)}; valid: {', '.join(words)}")
        return value
    return check


def _positive_int(kind: str, also: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value in also:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            extra = "".join(f" or {word!r}" for word in also)
            raise UserError(f"{kind} must be a positive integer{extra}; got {quoted(value)}")
        return value
    return check


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise UserError(f"seeds must be integers from 0 to 2^32 - 1; got {quoted(value)}")
    return value


def _encoder_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"an encoder is an id string such as {DEFAULT_ENCODER!r} or 'lite1'; got {quoted(value)}")
    return value


def _task(value: Any) -> str | tuple:
    """A registered split name, or a list of >= 2 distinct class indices or names."""
    if isinstance(value, str):
        TASK_SPLITS.entry(value)
        return value
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(v, int | str) and not isinstance(v, bool)
                                                           for v in value):
        if len(set(value)) != len(value):
            raise UserError(f"task class list {value} repeats a class")
        return tuple(value)
    raise UserError(f"a task split is one of {', '.join(TASK_SPLITS.names())} or a list of >= 2 class indices "
                     f"or names; got {quoted(value)}")


def _forbid_unknown_keys(model: type[BaseModel], data: Any) -> Any:
    if isinstance(data, dict):
        unknown = [key for key in data if key not in model.model_fields]
        if unknown:
            raise UserError(f"unknown key {quoted(unknown[0])}; valid keys: {', '.join(model.model_fields)}"
                             f"{did_you_mean(unknown[0], list(model.model_fields))}")
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        return _forbid_unknown_keys(cls, data)


class DatasetSpec(_Strict):
    """A built-in dataset (`name`) or an image folder (`folder`), and how many images per class to draw.

    Test images come from the dataset's official test split when it has one, else they are held out
    from the same pool; validation and support images are drawn from the rest, per seed.
    """

    name: str | None = None
    folder: str | None = None
    support_per_class: int = Field(300, ge=1)
    val_per_class: int = Field(50, ge=0)
    test_per_class: int = Field(150, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.name is None) == (self.folder is None):
            raise UserError("a dataset needs exactly one of 'name' (built-in) or 'folder' (image folder)")
        if self.name is not None:
            DATASETS.entry(self.name)
        return self

    @property
    def label(self) -> str:
        return self.name if self.name is not None else Path(self.folder).name


def _setting_check(name: str) -> Callable[[Any], Any]:
    setting = SETTINGS[name]

    def check(value: Any) -> Any:
        if setting.optional and isinstance(value, str) and value.lower() in OFF_WORDS:
            return None  # YAML reads `none` as a word; it means what null does
        return setting.check(value)
    return check


def _preset(value: Any) -> str:
    if value != AUTO and value not in PRESETS:
        raise UserError(f"unknown preset {quoted(value)}; valid: {', '.join(PRESETS)}, {AUTO}")
    return value


@lru_cache(maxsize=8)
def _models(axes: tuple[str, ...]) -> tuple[type[BaseModel], type[BaseModel]]:
    """(VariantSpec, GridConfig) for the current set of settings (plug-ins add axes)."""
    axis_types = {name: Annotated[list[Any], _each(_setting_check(name))] for name in axes}
    variant = create_model(
        "VariantSpec", __base__=_Strict, __doc__="A named variant; method axes it leaves out come from its preset, "
        "else the top level of the config.",
        name=(str | None, None), preset=(Annotated[str, BeforeValidator(_preset)] | None, None),
        **{name: (kind | None, None) for name, kind in axis_types.items()})
    grid = create_model(
        "GridConfig", __base__=_GridBase,
        variants=(list[variant] | None, None),
        **{name: (kind, [GRID_DEFAULTS.get(name, SETTINGS[name].default)]) for name, kind in axis_types.items()})
    return variant, grid


class _GridBase(_Strict):
    """The whole grid: data axes, method axes or variants, baselines and run settings."""

    name: str = "grid"
    plugins: list[str] = []
    protocol: Annotated[str, BeforeValidator(lambda value: _word_in("protocol", tuple(PROTOCOLS.names()))(value))] \
        = "closed_set"
    encoders: Annotated[list[str], _each(_encoder_id)] = [DEFAULT_ENCODER]
    datasets: Annotated[list[DatasetSpec], BeforeValidator(_as_list)]
    unknown_datasets: Annotated[list[DatasetSpec], BeforeValidator(_as_list)] = []
    task_splits: Annotated[list[Any], _each(_task)] = ["all"]
    shots: Annotated[list[Any], _each(_positive_int("shots", also=("all",)))] = ["all"]
    seeds: Annotated[list[int], _each(_seed)] = [0]
    steps: Annotated[list[int], _each(_positive_int("steps"))] = [2]
    baselines: Annotated[list[str], _each(_word_in("baseline", BASELINES))] = []
    zero_shot: bool = False  # embed each dataset's class names with the encoder's text tower; fit blends them in
    device: str = "cpu"
    runtime: Annotated[str, BeforeValidator(lambda value: _word_in("runtime", RUNTIMES)(value))] = "auto"
    episodes: dict[str, int] | None = None  # protocol episodes: {ways, queries, count}

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        if not self.datasets:
            raise UserError("'datasets' is empty; name at least one built-in dataset or image folder")
        if self.variants is not None and not self.variants:
            raise UserError("'variants' is empty; list at least one variant or leave the key out")
        names = [variant.name or variant.preset for variant in self.variants or [] if variant.name or variant.preset]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UserError(f"two variants are named {quoted(twice[0])} (a name given, or else the preset's); give "
                             "each variant its own name, or the report would merge them as seeds of one")
        if "linear_probe" in self.baselines and any(d.val_per_class == 0 for d in self.datasets):
            raise UserError("the linear_probe baseline chooses its regularisation on validation images; "
                             "set val_per_class >= 1 for every dataset")
        if not self.zero_shot and any(needs_text(value) for _, values in self.per_variant("text_alpha")
                                      for value in values):
            raise UserError("text_alpha weighs zero-shot text scores: set zero_shot: true (an encoder with a "
                            "text tower, open_clip:MODEL/TAG) or leave text_alpha out")
        if self.episodes is not None and self.protocol != "episodes":
            raise UserError("'episodes' sizes are for protocol: episodes")
        PROTOCOLS.get(self.protocol)().check(self)
        return self

    def per_variant(self, setting: str) -> list[tuple[str, list[Any]]]:
        """Each variant's name and values of `setting` (the top level's where the variant sets none)."""
        if not self.variants:
            return [("the top-level variant", getattr(self, setting))]
        return [(variant.name or variant.preset, getattr(variant, setting) or getattr(self, setting))
                for variant in self.variants]


GridBase = _GridBase  # for type hints: the model class itself is built per set of settings by _models()


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(part for part in first["loc"] if not str(part).startswith("function-"))
    if first["type"] == "missing":
        return f"{_location(loc[:-1])}: missing required key {loc[-1]!r}"
    message = first["msg"].removeprefix("Value error, ")
    where = _location(loc)
    if first["type"] not in ("value_error", "assertion_error"):
        message += f" (got {quoted(first['input'])})"
    return f"{where}: {message}"


def import_plugins(modules: list[str], source: str = "config") -> None:
    """Import plug-in modules that register stages; a missing one is a one-line error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{source}: plug-in module {quoted(module)} cannot be imported ({exc}); install it or "
                              "put it on PYTHONPATH") from None


def parse_config(data: Any, source: str = "config") -> Any:
    """Validate a config mapping; any problem is a ConfigError naming `source`, the key and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a grid config is a mapping of keys (encoders, datasets, ...); "
                          f"got {type(data).__name__}")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{source}: plugins: a list of module names; got {quoted(plugins)}")
    import_plugins(plugins, source)
    _, grid = _models(tuple(method_axes()))
    try:
        return grid.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_one_line(error)}") from None


MAX_CONFIG_BYTES = 1 << 20  # a grid config is a page of YAML
MAX_VALUES = 100_000  # values in a config once its aliases are expanded (a 427-byte alias bomb has billions)


class _Loader(yaml.SafeLoader):
    """YAML's safe loader (no tags that run code) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {quoted(key)} is given twice (first at line {seen[key].line + 1}); keep "
                        "one", key_node.start_mark)
                seen[key] = key_node.start_mark
            except TypeError:  # an unhashable key: the constructor names it below
                pass
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None, open_: set[int] | None = None) -> int:
    """How many values `node` holds once every alias is expanded (shared nodes counted each time they are used;
    computed once per node, so a bomb is measured without being expanded)."""
    sizes = {} if sizes is None else sizes
    open_ = set() if open_ is None else open_
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("the YAML refers to itself through an alias (an endless value); write the values out")
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(child, sizes, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, sizes, open_) + expanded_size(v, sizes, open_) for k, v in node.value)
    else:
        size = 1
    open_.discard(key)
    sizes[key] = size
    return size


def read_yaml(text: str, source: str) -> Any:
    """The data of a YAML document, refusing duplicate keys, and aliases that expand beyond MAX_VALUES."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = expanded_size(node)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
        if size > MAX_VALUES:
            raise ConfigError(f"{source}: the config holds {size:.3g} values once its YAML aliases (*name) are "
                              f"expanded, more than the {MAX_VALUES} a grid config may hold; write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_config(path: str | Path) -> Any:
    """Read and validate a YAML grid config."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size / 2**20:.1f} MiB; a grid config is a short YAML "
                              f"file (at most {MAX_CONFIG_BYTES // 2**20} MiB)")
        data = read_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise ConfigError(f"grid config not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the grid's YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; a grid config is YAML") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    return parse_config(_folders_from(data, path.parent), str(path))


def _folders_from(data: Any, base: Path) -> Any:
    """The config with each relative image folder read from `base` (the config file's folder), so a grid runs
    the same from any working directory."""
    if not isinstance(data, dict):
        return data
    for key in ("datasets", "unknown_datasets"):
        value = data.get(key) or []
        for dataset in value if isinstance(value, list) else [value]:
            folder = dataset.get("folder") if isinstance(dataset, dict) else None
            if isinstance(folder, str) and folder and not Path(folder).expanduser().is_absolute():
                dataset["folder"] = str(base.absolute() / folder)
    return data
