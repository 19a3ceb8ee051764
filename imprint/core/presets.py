"""Published methods by name: a preset is the set of stage settings that reproduces one.

``ImprintClassifier.from_preset(name, **overrides)``, ``imprint fit --preset NAME`` and ``preset: NAME``
in a grid variant all read this table; ``imprint presets`` prints it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imprint.core.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    paper: str
    settings: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("qi", "class means, cosine (mean imprinting)",
           "Qi, Brown, Lowe. Low-shot learning with imprinted weights. CVPR 2018",
           dict(norm_pre="l2", generation="mean", norm_post="l2", norm_inf="l2", metric="dot", aggregation="max")),
    Preset("hosoda", "class means with quantile-normalised weights",
           "Hosoda et al. (as configured in the IMPRINT paper, Table 1)",
           dict(norm_pre="none", generation="mean", norm_post="quantile", norm_inf="none", metric="dot",
                aggregation="max")),
    Preset("janson", "nearest class mean by Euclidean distance",
           "Janson et al. (as configured in the IMPRINT paper, Table 1)",
           dict(norm_pre="none", generation="mean", norm_post="none", norm_inf="none", metric="euclidean",
                aggregation="max")),
    Preset("imprint", "k-means proxies (k=20), L2 everywhere, max: the IMPRINT paper's best",
           "Westerhoff et al. Robust weight imprinting. TMLR 2025",
           dict(norm_pre="l2", generation="kmeans", k=20, norm_post="l2", norm_inf="l2", metric="dot",
                aggregation="max")),
    Preset("simpleshot", "CL2N (centre on the support mean, then L2) and the nearest class mean",
           "Wang, Chao, Weinberger, van der Maaten. SimpleShot. arXiv:1911.04623, 2019",
           dict(norm_pre="center+l2", generation="mean", norm_post="none", norm_inf="center+l2",
                metric="euclidean", aggregation="max")),
    Preset("gda", "class means with a shared, shrunk covariance (linear discriminant)",
           "Wang, Lu, Ke, Wang. A hard-to-beat baseline for training-free CLIP-based adaptation. ICLR 2024",
           dict(norm_pre="l2", generation="mean", norm_post="none", norm_inf="l2", metric="mahalanobis",
                shrinkage="auto", aggregation="max")),
    Preset("fecam", "per-class covariances shrunk to S + mean(diag S) I and normalised to correlations (FeCAM)",
           "Goswami, Liu, Twardowski, van de Weijer. FeCAM. NeurIPS 2023 (the authors' code for frozen pretrained "
           "encoders)",
           dict(norm_pre="l2", generation="mean", norm_post="none", norm_inf="l2", metric="fecam", shrinkage=0.5,
                fecam_normalize=True, aggregation="max")),
    Preset("ranpac", "random ReLU projection, then ridge regression onto the classes",
           "McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel. RanPAC. NeurIPS 2023",
           dict(norm_pre="l2+random_relu", generation="mean", norm_post="none", norm_inf="l2+random_relu",
                metric="ridge", ridge_lambda="auto", projection_dim="auto", aggregation="max")),
    Preset("tukey_gda", "FeCAM's Tukey power transform before GDA's shared, shrunk covariance (a combination "
           "of published parts, not a published method)", "imprint: Tukey (FeCAM, NeurIPS 2023) + GDA (ICLR 2024)",
           dict(norm_pre="tukey+l2", generation="mean", norm_post="none", norm_inf="tukey+l2", metric="mahalanobis",
                shrinkage="auto", aggregation="max")),
    Preset("tip_adapter", "every support sample in a cache, exp(-beta (1 - cos)) summed per class",
           "Zhang et al. Tip-Adapter: training-free adaption of CLIP. ECCV 2022",
           dict(norm_pre="l2", generation="all", norm_post="l2", norm_inf="l2", metric="kernel", beta="auto",
                aggregation="sum")),
)}


AUTO = "auto"
# The methods method="auto" chooses among, strongest first on the Table 1 grid (a tie goes to the earlier): the
# published heads and the paper's best imprinting; the weaker Table 1 baselines (hosoda, janson) are left out.
AUTO_CANDIDATES = ("tukey_gda", "gda", "ranpac", "fecam", "tip_adapter", "simpleshot", "qi", "imprint")
CUSTOM = "custom"  # method="custom": exactly the stage settings given


def preset_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of preset `name` with ``method=name`` (``auto``: choose the method on the support set), then
    `overrides`, or a one-line error listing the presets. A preset with one of its own settings changed is no
    longer the published method: its method becomes ``custom``, with every setting it runs with spelled out."""
    if name == AUTO:
        return {"method": AUTO, **(overrides or {})}
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}, auto")
    own = PRESETS[name].settings
    changed = any(key in own and value != own[key] for key, value in (overrides or {}).items())
    return {**own, "method": CUSTOM if changed else name, **(overrides or {})}
