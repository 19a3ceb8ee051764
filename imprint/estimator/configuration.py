"""The classifier's settings: the stage chosen at each pipeline point, the settings that apply whatever the stages,
and the rules for combinations of settings, each written once.

The stages declare their own settings where they are registered (``imprint.stages``, ``imprint.openset``); this
module declares the rest, lists the classifier's parameters in order and checks a set of them. The estimator,
the command line and the grid all read it.
"""
from __future__ import annotations

from typing import Any

from imprint.core.errors import UserError, quoted
from imprint.core.machine import resolve_device
from imprint.core.presets import AUTO_CANDIDATES, CUSTOM, PRESETS
from imprint.core.settings import AUTO, SETTINGS, Setting
from imprint.openset import REJECTORS
from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS


def alpha_candidates(**_: int) -> tuple[float, ...]:
    """The text weights tried for text_alpha="auto"."""
    return (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


TEXT_ALPHA = Setting("text_alpha", float, AUTO, "zero-shot blend: class scores = head + text_alpha x (zero-shot "
                     "text cosines on the head's scale), with text_embeddings given to fit (imprint fit "
                     "--zero-shot); 0: the head alone; auto: chosen by cross-validation on the support set; none: "
                     "the text embeddings join the support set as samples instead (classes can then be imprinted "
                     "from text alone)", low=0.0, auto=True, optional=True, tunable=alpha_candidates)
SLOTS = (
    Setting("generation", str, "kmeans", "GEN: how each class's support embeddings become proxies",
            stages=GENERATORS),
    Setting("norm_pre", str, "l2", "NORM on support embeddings before generation", stages=NORMS, chain=True),
    Setting("norm_post", str, "l2", "NORM on the generated proxies", stages=NORMS, chain=True),
    Setting("norm_inf", str, "l2", "NORM on queries (fitted on the support set)", stages=NORMS, chain=True),
    Setting("metric", str, "dot", "how a query is scored against each proxy (the head)", stages=METRICS),
    Setting("aggregation", str, "max", "AGG: from proxy scores to one score per class", stages=AGGREGATIONS),
    Setting("reject", str, None, "open set: the score that says a query is of none of the classes (predicted "
            "as unknown_label at reject_rate); none: every query gets a class", optional=True, stages=REJECTORS),
)
METHOD = Setting("method", str, AUTO, "auto: the published method (preset) that cross-validates best on the support "
                 "set, with its own settings (when no stage setting is given); a preset name: that method, any stage "
                 "setting given overriding it; custom: exactly the stage settings given",
                 choices=(AUTO, CUSTOM, *PRESETS))
GENERAL = (
    METHOD,
    TEXT_ALPHA,
    Setting("temperature", float, AUTO, "softmax temperature of predict_proba; auto: fitted to the support set's "
            "cross-fitted class scores (probabilities that mean what they say); calibrate(X, y) refits it on "
            "held-out data", low=0.0, open_low=True, auto=True),
    Setting("seed", int, 0, "random seed of every random choice (k-means seeding, projections, folds)", low=0,
            high=2**32 - 1),
    Setting("device", str, "auto", "auto (cuda, then mps, then cpu) or a torch device string"),
)
for _setting in (*SLOTS, *GENERAL):
    SETTINGS.declare(_setting)
SLOT_NAMES = tuple(s.name for s in SLOTS)
RUN_SETTINGS = ("seed", "device")  # how a fit runs, not what it fits: not a grid axis, not a preset's business


class SettingsError(UserError):
    """Settings that cannot work together; the message names them and the fix."""


def parameter_names() -> list[str]:
    """Every setting of the classifier: stage choices, stage settings in declaration order, then general ones."""
    general = [s.name for s in GENERAL]
    stage_settings = SETTINGS.in_pipeline_order(n for n in SETTINGS.names() if n not in SLOT_NAMES + tuple(general))
    return [*SLOT_NAMES, *stage_settings, *general]


def method_settings() -> list[str]:
    """The settings that make a method: the stage at each pipeline point but rejection, and every setting of the
    normalisation, generation, head and aggregation stages (not rejection's, not how a fit runs)."""
    kinds = {SETTINGS.slots[slot].kind for slot in SLOT_NAMES if slot != "reject"}
    return [name for name in SETTINGS.names() if name in SLOT_NAMES and name != "reject"
            or any(kind in kinds for kind, _ in SETTINGS.users(name))]


def chooses_method(params: dict[str, Any]) -> bool:
    """Whether the method is chosen on the support set: method="auto" and no stage setting given (all at their
    defaults; method="custom" pins the default pipeline)."""
    defaults = SETTINGS.defaults()
    return params.get("method", AUTO) == AUTO and all(params.get(name, defaults[name]) == defaults[name]
                                                      for name in method_settings())


def with_method(params: dict[str, Any], method: str) -> dict[str, Any]:
    """`params` as the method `method` sets them: the preset's stage settings, each overridden by a setting given
    (one not at its default)."""
    if method in (AUTO, CUSTOM):
        return dict(params)
    defaults = SETTINGS.defaults()
    given = {name: value for name, value in params.items() if name in defaults and value != defaults[name]}
    return {**params, **PRESETS[method].settings, **given}


def is_oracle(params: dict[str, Any]) -> bool:
    """Whether the generator uses cross-class statistics (an upper-bound baseline, not imprinting)."""
    return GENERATORS.entry(params.get("generation", SETTINGS["generation"].default)).oracle


def check_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Every value valid, none set for a stage that is not chosen, and the combinations that cannot work refused,
    each in one line; returns the settings as they run (a preset method's stage settings filled in). An "auto"
    method is checked with each of the methods it chooses among."""
    METHOD.check(params.get("method", AUTO))
    if chooses_method(params):
        for method in AUTO_CANDIDATES:
            _check(with_method(params, method))
        return params
    return _check(with_method(params, params.get("method", AUTO)))


def _check(params: dict[str, Any]) -> dict[str, Any]:
    generation = params.get("generation", SETTINGS["generation"].default)
    for name in SETTINGS.names():  # a setting chosen by its own per-class rule needs a stage that takes rules
        if SETTINGS[name].choose is None or params.get(name) != AUTO or generation not in GENERATORS:
            continue
        users = [stage for kind, stage in SETTINGS.users(name) if kind == GENERATORS.kind
                 and GENERATORS.entry(stage).traits.get("per_class_rules")]
        if generation not in users:
            made = " or ".join(GENERATORS.entry(stage).summary.split()[0] for stage in users)
            raise SettingsError(f"{name}='auto' chooses {made} proxies per class; use generation="
                                f"{' or '.join(repr(u) for u in users)} (got {quoted(generation)}) or an integer "
                                f"{name}")
    SETTINGS.check(params)
    metric = params.get("metric", SETTINGS["metric"].default)
    if params.get("aggregation") == "mnn" and params.get("mnn_weights") == "distance" and \
            not METRICS.entry(metric).traits.get("distance", True):
        raise SettingsError(f"mnn_weights='distance' needs a metric with distances; metric={quoted(metric)} has "
                            "none: use mnn_weights='uniform'")
    if params.get("reject") is not None and is_oracle(params):
        raise SettingsError(f"reject needs an imprinted classifier; generation={quoted(params.get('generation'))} "
                            "is an oracle baseline (it uses statistics of all classes at once), not meant for "
                            "deployment")
    resolve_device(params.get("device", "auto"))
    return params
