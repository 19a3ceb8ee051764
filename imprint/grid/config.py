"""Grid configuration: a YAML file of list-valued axes, validated on load with one-line errors.

Every axis accepts one value or a list. Method axes at the top level form one variant (their cartesian
product); ``variants`` lists named variants instead, each inheriting the top-level method axes it
does not set. Unknown keys and values are errors that name them and list the valid choices.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from imprint.data.builtin import DATASETS
from imprint.data.tasks import TASK_SPLITS
from imprint.encoders import DEFAULT_ENCODER
from imprint.registry import Registry
from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS
from imprint.stages.aggregation import MNN_WEIGHTINGS
from imprint.stages.norm import QUANTILE_REFERENCES

BASELINES = ("linear_probe",)


class ConfigError(ValueError):
    """A grid config that cannot be used; the message names the file, the key and the fix."""


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _each(check: Callable[[Any], Any]) -> BeforeValidator:
    """Wrap a scalar into a list, then check every element."""
    return BeforeValidator(lambda value: [check(item) for item in _as_list(value)])


def _name_in(registry: Registry) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        registry.entry(value)  # raises "unknown <kind> 'x'; valid: ..."
        return value
    return check


def _word_in(kind: str, words: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in words:
            raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(words)}")
        return value
    return check


def _positive_int(kind: str, also: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value in also:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            extra = "".join(f" or {word!r}" for word in also)
            raise ValueError(f"{kind} must be a positive integer{extra}; got {value!r}")
        return value
    return check


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"seeds must be integers >= 0; got {value!r}")
    return value


def _encoder_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an encoder is an id string such as {DEFAULT_ENCODER!r} or 'lite1'; got {value!r}")
    return value


def _task(value: Any) -> str | tuple:
    """A registered split name, or a list of >= 2 distinct class indices or names."""
    if isinstance(value, str):
        TASK_SPLITS.entry(value)
        return value
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(v, int | str) and not isinstance(v, bool)
                                                           for v in value):
        if len(set(value)) != len(value):
            raise ValueError(f"task class list {value} repeats a class")
        return tuple(value)
    raise ValueError(f"a task split is one of {', '.join(TASK_SPLITS.names())} or a list of >= 2 class indices "
                     f"or names; got {value!r}")


def _forbid_unknown_keys(model: type[BaseModel], data: Any) -> Any:
    if isinstance(data, dict):
        unknown = [key for key in data if key not in model.model_fields]
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(model.model_fields)}")
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
            raise ValueError("a dataset needs exactly one of 'name' (built-in) or 'folder' (image folder)")
        if self.name is not None:
            DATASETS.entry(self.name)
        return self

    @property
    def label(self) -> str:
        return self.name if self.name is not None else Path(self.folder).name


Axis = list

NormAxis = Annotated[Axis[str], _each(_name_in(NORMS))]
GenerationAxis = Annotated[Axis[str], _each(_name_in(GENERATORS))]
KAxis = Annotated[Axis[Any], _each(_positive_int("k", also=("auto",)))]
AggregationAxis = Annotated[Axis[str], _each(_name_in(AGGREGATIONS))]
MAxis = Annotated[Axis[int], _each(_positive_int("m"))]
WeightsAxis = Annotated[Axis[str], _each(_word_in("mnn_weights", MNN_WEIGHTINGS))]
MetricAxis = Annotated[Axis[str], _each(_name_in(METRICS))]
ReferenceAxis = Annotated[Axis[str], _each(_word_in("quantile_reference", QUANTILE_REFERENCES))]
METHOD_DEFAULTS = {"norm_pre": ["l2"], "generation": ["mean"], "k": [20], "norm_post": ["l2"], "norm_inf": ["l2"],
                   "aggregation": ["max"], "m": [1], "mnn_weights": ["uniform"], "metric": ["dot"],
                   "quantile_reference": ["pooled"]}


class VariantSpec(_Strict):
    """A named variant; method axes it leaves out come from the top level of the config."""

    name: str | None = None
    norm_pre: NormAxis | None = None
    generation: GenerationAxis | None = None
    k: KAxis | None = None
    norm_post: NormAxis | None = None
    norm_inf: NormAxis | None = None
    aggregation: AggregationAxis | None = None
    m: MAxis | None = None
    mnn_weights: WeightsAxis | None = None
    metric: MetricAxis | None = None
    quantile_reference: ReferenceAxis | None = None


class GridConfig(_Strict):
    """The whole grid: data axes, method axes or variants, baselines and run settings."""

    name: str = "grid"
    encoders: Annotated[Axis[str], _each(_encoder_id)] = [DEFAULT_ENCODER]
    datasets: Annotated[Axis[DatasetSpec], BeforeValidator(_as_list)]
    task_splits: Annotated[Axis[Any], _each(_task)] = ["all"]
    shots: Annotated[Axis[Any], _each(_positive_int("shots", also=("all",)))] = ["all"]
    seeds: Annotated[Axis[int], _each(_seed)] = [0]
    norm_pre: NormAxis = METHOD_DEFAULTS["norm_pre"]
    generation: GenerationAxis = METHOD_DEFAULTS["generation"]
    k: KAxis = METHOD_DEFAULTS["k"]
    norm_post: NormAxis = METHOD_DEFAULTS["norm_post"]
    norm_inf: NormAxis = METHOD_DEFAULTS["norm_inf"]
    aggregation: AggregationAxis = METHOD_DEFAULTS["aggregation"]
    m: MAxis = METHOD_DEFAULTS["m"]
    mnn_weights: WeightsAxis = METHOD_DEFAULTS["mnn_weights"]
    metric: MetricAxis = METHOD_DEFAULTS["metric"]
    quantile_reference: ReferenceAxis = METHOD_DEFAULTS["quantile_reference"]
    variants: list[VariantSpec] | None = None
    baselines: Annotated[Axis[str], _each(_word_in("baseline", BASELINES))] = []
    device: str = "cpu"

    @model_validator(mode="after")
    def _consistent(self) -> GridConfig:
        if not self.datasets:
            raise ValueError("'datasets' is empty; name at least one built-in dataset or image folder")
        if self.variants is not None and not self.variants:
            raise ValueError("'variants' is empty; list at least one variant or leave the key out")
        if "linear_probe" in self.baselines and any(d.val_per_class == 0 for d in self.datasets):
            raise ValueError("the linear_probe baseline chooses its regularisation on validation images; "
                             "set val_per_class >= 1 for every dataset")
        return self


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
        message += f" (got {first['input']!r})"
    return f"{where}: {message}"


def parse_config(data: Any, source: str = "config") -> GridConfig:
    """Validate a config mapping; any problem is a ConfigError naming `source`, the key and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a grid config is a mapping of keys (encoders, datasets, ...); "
                          f"got {type(data).__name__}")
    try:
        return GridConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_one_line(error)}") from None


def load_config(path: str | Path) -> GridConfig:
    """Read and validate a YAML grid config."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"grid config not found: {path}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    return parse_config(data, str(path))
