"""Zero-shot text scores blended with any head's class scores: head(x) + alpha * scale * cos(x, t_c).

With a CLIP-style encoder, the text tower embeds class names (prompts) in the image space, and the cosine
of a query with each class's text weight is a zero-shot classifier. Tip-Adapter and GDA (Wang et al. 2024)
add a few-shot head's logits to these with a weight alpha. Heads score on very different scales (a cosine
in [-1, 1], GDA's logits in the hundreds, a kernel's sums), so here the text term is first put on the
head's scale: `scale` is the ratio of the spread of the head's class scores to that of the text cosines,
both measured on the support set over the classes each sample is not in (with its own class, a head that
memorises its samples would look wider than it is on queries). alpha = 1 then weighs both equally, 0 is the
head alone, and large values approach zero-shot classification; "auto" chooses alpha by cross-validation on
the support set.
The text cosines use the raw query embeddings made unit-length (the space the text tower aligned with),
whatever ``norm_inf`` does for the head.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from imprint.settings import AUTO, Setting
from imprint.stages.norm import unit_rows

SCALE_ROWS = 2048  # support rows used to measure the two spreads (a seeded subset of larger sets)


def _alpha_candidates(**_: int) -> tuple[float, ...]:
    return (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


TEXT_ALPHA = Setting("text_alpha", float, AUTO, "zero-shot blend: class scores = head + text_alpha x (zero-shot "
                     "text cosines on the head's scale), with text_embeddings given to fit (imprint fit "
                     "--zero-shot); 0: the head alone; auto: chosen by cross-validation on the support set; none: "
                     "the text embeddings join the support set as samples instead (classes can then be imprinted "
                     "from text alone)", low=0.0, auto=True, optional=True, tunable=_alpha_candidates)


def class_text_weights(text: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class, the unit-length mean of its unit-length text embeddings (several prompts may share a class)."""
    units = unit_rows(torch.from_numpy(np.asarray(text, dtype=np.float32)))
    sums = torch.zeros(n_classes, units.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(np.asarray(codes, dtype=np.int64)), units.double())
    return unit_rows(sums).float().numpy()


def text_cosines(embeddings: Tensor, weights: Tensor) -> Tensor:
    """(n, n_classes) cosines of raw embeddings with each class's (unit) text weight."""
    return unit_rows(embeddings.to(weights.dtype)) @ weights.T


class TextBlend(nn.Module):
    """The zero-shot term added to the class scores: alpha * scale * cos(x, t_c), one column per class."""

    def __init__(self, weights: Tensor, alpha: float, scale: float) -> None:
        super().__init__()
        self.register_buffer("weights", weights.float())
        self.alpha = float(alpha)
        self.scale = float(scale)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """(n, n_classes) cosines of the raw queries with each class's text weight."""
        return text_cosines(embeddings, self.weights)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.cosines(embeddings) * (self.alpha * self.scale)


def other_class_spread(scores: Tensor, own: Tensor) -> Tensor:
    """Per row, the standard deviation of the scores of the classes the row's sample is not in (all classes when
    there are only two). A head that memorises its support samples (Tip-Adapter's kernel, `all` proxies) scores a
    sample's own class far higher than any query's; its other classes are scored as a query's would be."""
    scores = scores.double()
    if scores.shape[1] < 3:
        return scores.std(dim=1)
    others = torch.ones_like(scores, dtype=torch.bool).scatter_(1, own.long()[:, None], False)
    mean = (scores * others).sum(dim=1, keepdim=True) / (scores.shape[1] - 1)
    return (((scores - mean) ** 2 * others).sum(dim=1) / (scores.shape[1] - 2)).sqrt()


def spread_ratio(head_spread: float, text_spread: float) -> float:
    """The factor that puts the text term on the head's scale: how much wider the head's class scores are than
    the text cosines (their spreads summed over the same support rows, ``other_class_spread``). 1 where either is
    degenerate: then the text term cannot change a ranking, or the head gives every class one score."""
    ratio = head_spread / text_spread if text_spread > 0 else float("nan")
    return ratio if np.isfinite(ratio) and ratio > 0 else 1.0
