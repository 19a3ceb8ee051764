"""A plug-in stage that lives outside imprint, as a user's own module would: a trimmed class mean.

Importing this module registers generation 'trimmed_mean' with its own setting 'trim'; the tests use it to
show that a plug-in works everywhere a built-in stage does (classifier, CLI, grid, save and load).
"""
from __future__ import annotations

import torch

from imprint.core.settings import Setting
from imprint.stages.generation import GENERATORS, class_means

TRIM = Setting("trim", float, 0.2, "share of each class's samples farthest from its mean left out of the mean",
               low=0.0, high=0.5, open_high=True)


@GENERATORS.register("trimmed_mean", settings=[TRIM], one_per_class=True)
def trimmed_mean(X: torch.Tensor, counts: torch.Tensor, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One proxy per class: the mean of the samples nearest to the class mean (the farthest `trim` share dropped)."""
    codes = torch.repeat_interleave(torch.arange(len(counts), device=X.device), counts.to(X.device))
    means = class_means(X, counts).to(X.dtype)
    distance = (X - means[codes]).square().sum(1)
    order = torch.argsort(codes.double() * (distance.max() + 1) + distance.double())  # by class, nearest first
    rank = torch.arange(len(X), device=X.device) - (torch.cumsum(counts, 0) - counts).to(X.device)[codes[order]]
    kept = order[rank < torch.clamp((counts.to(X.device) * (1 - options["trim"])).ceil().long(), min=1)[codes[order]]]
    keep_counts = torch.bincount(codes[kept], minlength=len(counts))
    return class_means(X[kept.sort().values], keep_counts).to(X.dtype), torch.ones_like(counts)
