"""What ``imprint info`` shows: a classifier file's contents (``imprint.io.classifier_file.summarize``), read and
checked without loading a model (no torch)."""
from __future__ import annotations

import os
from typing import Any

from imprint.core.presets import PRESETS
from imprint.core.settings import SETTINGS
from imprint.estimator.configuration import parameter_names
from imprint.estimator.provenance import describe as describe_provenance
from imprint.io.classifier_file import summarize

PIPELINE = ("norm_pre", "generation", "norm_post", "norm_inf", "metric", "aggregation")
QUIET = ("device", "seed", "temperature", "method")  # settings that do not describe what was fitted


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Encoder, width, classes, proxies per class, the pipeline with its settings, the values chosen for "auto"
    settings, the zero-shot text blend where there is one, and a note when k was capped at the class sizes."""
    summary = summarize(path)
    counts = summary.proxy_counts
    method = summary.tuned.get("method")  # method="auto": the settings of the method chosen
    settings = {**summary.settings, **PRESETS[method].settings} if method in PRESETS else summary.settings
    blends = summary.text_classes is not None
    active = [name for name in summary.active if name != "text_alpha" or blends]
    pipeline = " -> ".join(f"{slot}={settings.get(slot)}" for slot in PIPELINE if slot in settings)
    pipeline += "".join(f", {name}={settings[name]}" for name in active if name in settings and name not in PIPELINE
                        and name not in QUIET)
    shown = {k: v for k, v in settings.items() if k in active and k not in PIPELINE and k != "device"}
    info = {"format_version": summary.format_version, "encoder": summary.encoder,
            "embedding_dim": summary.embedding_dim, "classes": summary.classes, "proxy_counts": counts,
            "proxies": int(sum(counts)), "pipeline": pipeline, "settings": shown, "tuned": summary.tuned}
    if summary.fitted_on is not None:
        info["fitted_on"] = describe_provenance(summary.fitted_on, summary.support_images)
    if settings.get("reject") is not None and summary.threshold is not None:
        info["rejection"] = (f"rejection: {settings['reject']} score, at most {settings.get('reject_rate')} of "
                             f"known images rejected: threshold {summary.threshold:.4g} (unknown scores above it are "
                             "called unknown)")
    if blends:
        alpha = summary.tuned.get("text_alpha", settings.get("text_alpha"))
        info["zero_shot"] = (f"zero-shot text blend: class scores + {alpha} x {summary.text_scale:.4g} x cosine with "
                             f"the text weight of each of {summary.text_classes} classes")
    for name in parameter_names():  # a count of proxies per class (k), capped at the class's samples, or by rule
        setting, value = SETTINGS[name], settings.get(name)
        if name not in active or not setting.capped:
            continue
        if isinstance(value, int) and counts and min(counts) < value:
            short = sum(c < value for c in counts)
            info["note"] = (f"{name}={value}: {short} of {len(counts)} classes have fewer than {value} proxies (a "
                            f"class with fewer support samples than {name} uses all of them)")
        elif value == "auto" and summary.proxy_ratio is not None:
            info["note"] = (f"{name}=auto: {summary.proxy_ratio:.3f} proxies per support sample, shared out by class "
                            f"spread ({min(counts)} to {max(counts)} per class)")
    return info
