"""The classifier's settings: the stage chosen at each pipeline point, the settings that apply whatever the stages,
and the rules for combinations of settings, each written once.

The stages declare their own settings where they are registered (``imprint.stages``, ``imprint.openset``); this
module declares the rest, lists the classifier's parameters in order and checks a set of them. The estimator,
the command line and the grid all read it.
"""
from __future__ import annotations

from typing import Any

from imprint.devices import resolve_device
from imprint.errors import UserError, quoted
from imprint.openset import REJECTORS
from imprint.settings import AUTO, SETTINGS, Setting
from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS
from imprint.text_blend import TEXT_ALPHA

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
GENERAL = (
    TEXT_ALPHA,
    Setting("temperature", float, 0.01, "softmax temperature of predict_proba (0.01 matches CLIP's logit scale)",
            low=0.0, open_low=True),
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


def is_oracle(params: dict[str, Any]) -> bool:
    """Whether the generator uses cross-class statistics (an upper-bound baseline, not imprinting)."""
    return GENERATORS.entry(params.get("generation", SETTINGS["generation"].default)).oracle


def check_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Every value valid, none set for a stage that is not chosen, and the combinations that cannot work refused,
    each in one line; returns `params`."""
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
            not METRICS.get(metric).has_distance:
        raise SettingsError(f"mnn_weights='distance' needs a metric with distances; metric={quoted(metric)} has "
                            "none: use mnn_weights='uniform'")
    if params.get("reject") is not None and is_oracle(params):
        raise SettingsError(f"reject needs an imprinted classifier; generation={quoted(params.get('generation'))} "
                            "is an oracle baseline (it uses statistics of all classes at once), not meant for "
                            "deployment")
    resolve_device(params.get("device", "auto"))
    return params
