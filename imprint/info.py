"""What ``imprint info`` shows: a classifier file's metadata, read and checked without loading a model (no torch)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from imprint.persistence import read_classifier

PIPELINE = ("norm_pre", "generation", "norm_post", "norm_inf", "metric", "aggregation")


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Encoder, width, classes, proxies per class, the pipeline with its settings, the values chosen for "auto"
    settings, the zero-shot text blend where there is one, and a note when k was capped at the class sizes."""
    meta, arrays = read_classifier(path)
    settings = meta["settings"]
    counts = np.asarray(arrays["proxy_counts"]).astype(int).tolist()
    blends = "text.weights" in arrays
    active = [name for name in meta.get("active") or list(settings) if name != "text_alpha" or blends]
    pipeline = " -> ".join(f"{slot}={settings.get(slot)}" for slot in PIPELINE if slot in settings)
    pipeline += "".join(f", {name}={settings[name]}" for name in active if name in settings and name not in PIPELINE
                        and name not in ("device", "seed", "temperature"))
    shown = {k: v for k, v in settings.items() if k in active and k not in PIPELINE and k != "device"}
    info = {"format_version": meta["format_version"], "encoder": meta.get("encoder"),
            "embedding_dim": meta["embedding_dim"], "classes": meta["classes"], "proxy_counts": counts,
            "proxies": int(sum(counts)), "pipeline": pipeline, "settings": shown, "tuned": meta.get("tuned") or {}}
    if blends:
        alpha = info["tuned"].get("text_alpha", settings.get("text_alpha"))
        info["zero_shot"] = (f"zero-shot text blend: class scores + {alpha} x {meta.get('text_scale'):.4g} x "
                             f"cosine with the text weight of each of {len(arrays['text.weights'])} classes")
    k = settings.get("k")
    if "k" in active and isinstance(k, int) and counts and min(counts) < k:
        short = sum(c < k for c in counts)
        info["note"] = (f"k={k}: {short} of {len(counts)} classes have fewer than {k} proxies (a class with fewer "
                        "support samples than k uses all of them)")
    elif k == "auto" and meta.get("proxy_ratio") is not None:
        info["note"] = (f"k=auto: {meta['proxy_ratio']:.3f} proxies per support sample, shared out by class spread "
                        f"({min(counts)} to {max(counts)} per class)")
    return info
