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

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from imprint.core.errors import UserError, quoted
from imprint.core.settings import AUTO
from imprint.core.validation import check_embeddings, check_labels
from imprint.stages.norm import unit_rows

SCALE_ROWS = 2048  # support rows used to measure the two spreads (a seeded subset of larger sets)


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


TEXT_ONLY_FIX = ("set text_alpha to none (--text-alpha none) so that text embeddings join the support set as samples "
                 "and classes can come from text alone")


def needs_text(text_alpha: Any) -> bool:
    """The rule, written once: a numeric text_alpha weighs zero-shot text scores, so it needs text embeddings of
    the class names ("auto" and none do not: auto is then the head alone, none adds nothing). Each interface says
    how to give them in its own words (fit's arguments, --zero-shot, a grid's zero_shot: true)."""
    return text_alpha not in (None, AUTO)


class ZeroShotText:
    """The zero-shot component of a classifier: one unit text weight per class and the scale that puts the text
    cosines on the head's scores (measured on the support set when the pipeline is fitted; kept when classes
    are added, so the head part of an incremental classifier stays exact)."""

    def __init__(self, weights: np.ndarray, scale: float | None = None) -> None:
        self.weights, self.scale = np.asarray(weights, dtype=np.float32), scale

    @classmethod
    def for_classes(cls, classes: np.ndarray, text_embeddings: Any, text_labels: Any,
                    n_features: int) -> ZeroShotText:
        """Each class's text weight (rows in class order); every class needs text, and every text label images."""
        text = check_embeddings(text_embeddings, name="text_embeddings", n_features=n_features, owner="the images")
        labels = check_labels(text_labels, len(text), one_per_class=True)
        known = set(classes.tolist())
        orphans = [label for label in np.unique(labels).tolist() if label not in known]
        if orphans:
            raise UserError(f"text label {quoted(orphans[0])} has no images, but the zero-shot blend (text_alpha) "
                             f"adds text scores to a head fitted on images: give it images, or {TEXT_ONLY_FIX}")
        covered = set(labels.tolist())
        silent = [label for label in classes.tolist() if label not in covered]
        if silent:
            raise UserError(f"class {quoted(silent[0])} has images but no text embedding: the zero-shot blend needs "
                             "at least one text embedding (prompt) per class; add one for every class")
        return cls(class_text_weights(text, np.searchsorted(classes, labels), len(classes)))

    @staticmethod
    def joined(X: Any, y: Any, text_embeddings: Any, text_labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """The images and the text embeddings as one support set (text_alpha none: text as samples)."""
        text = check_embeddings(text_embeddings, name="text_embeddings")
        labels = check_labels(text_labels, len(text), one_per_class=True)
        if X is None or len(X) == 0:
            return text, labels
        images = check_embeddings(X, n_features=text.shape[1], owner="the text embeddings")
        return np.concatenate([images, text]), np.concatenate([check_labels(y, len(images)), labels])

    def measure_scale(self, pipeline: Any, X: np.ndarray, codes: np.ndarray, seed: int) -> float:
        """The factor putting the text cosines on the head's scale: the ratio of their mean per-sample spreads over
        the classes a support sample is not in, on a seeded subset of the support set (`pipeline` gives the head's
        scores, in blocks)."""
        rows = np.arange(len(X))
        if len(X) > SCALE_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(len(X), SCALE_ROWS, replace=False))
        subset, own = np.asarray(X[rows]), torch.from_numpy(codes[rows]).to(pipeline.device)
        weights = torch.from_numpy(self.weights).to(pipeline.device)
        head, text = 0.0, 0.0
        for positions, block, buffer in pipeline.blocks(subset):
            n = positions.stop - positions.start
            classes = own[positions]
            head += float(other_class_spread(pipeline.model.head_scores(block, out=buffer)[:n], classes).sum())
            text += float(other_class_spread(text_cosines(block[:n], weights), classes).sum())
        return spread_ratio(head, text)

    def blend(self, alpha: float) -> TextBlend:
        """The text term of the class scores with weight `alpha`."""
        return TextBlend(torch.from_numpy(self.weights), alpha, self.scale)

    def extended(self, new: ZeroShotText, order: np.ndarray) -> ZeroShotText:
        """These classes' weights and `new` ones, in the class order `order`; the scale measured at fit is kept."""
        return ZeroShotText(np.concatenate([self.weights, new.weights])[order], self.scale)

    def restricted(self, keep: np.ndarray) -> ZeroShotText:
        return ZeroShotText(self.weights[keep], self.scale)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Its part of a classifier file: the weights as an array, the scale in the header."""
        return {"text_scale": self.scale}, {"text.weights": self.weights}

    @classmethod
    def restore(cls, meta: dict[str, Any], tensors: dict[str, Any]) -> ZeroShotText | None:
        """The component saved by ``state`` (checked by ``imprint.io.classifier_file``), or None without text."""
        if "text.weights" not in tensors:
            return None
        weights = tensors["text.weights"]
        weights = weights.numpy() if hasattr(weights, "numpy") else np.asarray(weights)
        return cls(np.asarray(weights, dtype=np.float32), float(meta["text_scale"]))
