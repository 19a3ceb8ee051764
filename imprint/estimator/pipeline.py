"""The imprinting pipeline as one component: NORM_pre -> GEN -> NORM_post on the support set, and NORM_inf ->
metric (the head) -> AGG (+ the zero-shot text term) on queries.

A ``Pipeline`` is fitted from class codes (0..K-1) and fully resolved settings (no "auto" left: the tuning
component chose them); it adds and removes classes, scores queries in fixed-shape blocks (``imprint.core.blocks``),
and saves and restores its part of a classifier file (``state`` / ``restore``). It knows nothing of labels,
tuning or rejection: the estimator maps labels to codes, and the other components use a pipeline.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from imprint.core.blocks import CHUNK_BYTES, MIN_ROWS, block_rows, query_blocks, tensor_view
from imprint.core.settings import PerClassRule
from imprint.core.support import Support
from imprint.estimator.configuration import TEXT_ALPHA
from imprint.estimator.text_blend import ZeroShotText
from imprint.estimator.torch_module import ImprintedModel
from imprint.stages import GENERATORS
from imprint.stages.aggregation import make_aggregation
from imprint.stages.generation import generate, generation_options
from imprint.stages.heads.base import Metric, class_of_proxy, make_metric, restore_metric
from imprint.stages.norm import make_norm, norm_states, restore_norm

NORM_POINTS = ("norm_pre", "norm_post", "norm_inf")
PROJECTED_BYTES = 1 << 28  # a projected support set up to 256 MiB is projected once per fit, not per read


class Pipeline:
    """A fitted pipeline: its NORM stages, its metric (holding the proxies, grouped by class), its aggregation and
    the ``ImprintedModel`` that scores queries; with zero-shot text, the text component too."""

    def __init__(self, settings: dict[str, Any], device: torch.device, norms: tuple[Any, Any, Any],
                 text: ZeroShotText | None = None) -> None:
        self.settings, self.device = settings, device
        self.norm_pre, self.norm_post, self.norm_inf = norms
        self.text = text
        self.metric: Metric | None = None
        self.model: ImprintedModel | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X: np.ndarray, codes: np.ndarray, n_classes: int, settings: dict[str, Any], device: torch.device,
            text: ZeroShotText | None = None, seed: int = 0, solve: bool = True) -> Pipeline:
        """Imprint proxies for classes 0..n_classes-1 from the rows X (read in blocks, never copied whole); with
        `text`, measure the scale of its term on this support set and blend it in with ``text_alpha``. Without
        `solve`, a head that can defer its solve (a precision matrix) does until it scores (models inside
        cross-validation often score candidates from a decomposition instead)."""
        pipeline = cls(settings, device, tuple(make_norm(settings[p], settings) for p in NORM_POINTS), text)
        raw = Support(X, codes, n_classes, device)
        with torch.no_grad():  # not inference_mode: fitted state must stay usable in autograd code
            normed = pipeline._fit_norms(raw)
            proxies, proxy_counts = pipeline._generate(normed, raw.counts, fit=True)
            metric = make_metric(settings["metric"], settings).fit(normed, raw.counts, proxies,
                                                                   proxy_counts.to(proxies.device))
            proxies = metric.proxies
            if isinstance(X, np.ndarray) and proxies.device.type == "cpu" and \
                    np.may_share_memory(proxies.numpy(), X):  # e.g. 'all' on unit-norm float32 input
                metric.set_proxies(proxies.clone(), metric.proxy_counts)
        pipeline._install(metric, n_classes)
        if text is not None:
            text.scale = text.measure_scale(pipeline, X, codes, seed)
            pipeline._install(metric, n_classes)
        if solve:
            metric.solve()
        return pipeline

    def _fit_norms(self, raw: Support) -> Support:
        """Fit norm_inf (queries live where the support embeddings live) and norm_pre on the support set, block by
        block; the normalised support set is then read through norm_pre, never held whole. A stage that needs
        every value at once (quantile) gets the class-sorted set materialised once, and so does a projection's
        output up to PROJECTED_BYTES."""
        if self.norm_inf.streamable:
            self.norm_inf.fit_stream(raw.raw_blocks)
        else:
            self.norm_inf.fit(raw.materialize())
        if self.norm_pre.streamable:
            self.norm_pre.fit_stream(raw.raw_blocks)
            width = self.norm_pre.output_dim
            if width is not None and len(raw) * width * 4 <= PROJECTED_BYTES:
                # a projection (RanPAC's) is the costly part of reading a row, and a fit reads every row several
                # times: while the projected set is small it is projected once and kept for this fit
                return Support.of_sorted(raw.with_transform(self.norm_pre).materialize(), raw.counts)
            return raw.with_transform(self.norm_pre)
        groups = torch.repeat_interleave(torch.arange(len(raw.counts)), raw.counts).to(self.device)
        return Support.of_sorted(self.norm_pre.fit_transform(raw.materialize(), groups), raw.counts)

    def _generate(self, normed: Support, counts: torch.Tensor, fit: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """GEN then norm_post on the normalised support rows (`counts` rows per class). A setting chosen as a
        per-class rule (k="auto") gets its per-class values here; classes added later get the rule's plain
        values."""
        settings = dict(self.settings)
        for name, value in settings.items():
            if isinstance(value, PerClassRule):
                settings[name] = value.per_class(normed, counts) if fit else value.for_new_classes(counts)
        generation = settings["generation"]
        data = normed if GENERATORS.entry(generation).traits.get("streaming") else normed.materialize()
        proxies, proxy_counts = generate(generation, data, counts.to(self.device),
                                         generation_options(generation, settings))
        proxy_groups = torch.repeat_interleave(torch.arange(len(proxy_counts), device=proxies.device),
                                               proxy_counts.to(proxies.device))
        proxies = self.norm_post.fit_transform(proxies, proxy_groups) if fit else self.norm_post(proxies)
        if not proxies.is_contiguous() or isinstance(data, torch.Tensor) and proxies.data_ptr() == data.data_ptr():
            proxies = proxies.clone()  # e.g. 'all': the classifier must own its proxies
        return proxies.float(), proxy_counts.cpu().long()

    def _install(self, metric: Metric, n_classes: int) -> None:
        """Make the fitted metric (holding the proxies) the pipeline's, with its aggregation and model."""
        self.metric = metric
        aggregation = make_aggregation(self.settings["aggregation"], metric.proxy_counts.cpu(), self.settings,
                                       to_distance=metric.to_distance)
        blend = None if self.text is None or self.text.scale is None else \
            self.text.blend(float(self.settings[TEXT_ALPHA.name]))
        self.model = ImprintedModel(self.norm_inf, metric, aggregation, list(range(n_classes)),
                                    text=blend).to(self.device).eval()

    @property
    def proxy_counts(self) -> np.ndarray:
        return self.metric.proxy_counts.cpu().numpy().astype(np.int64)

    @property
    def n_classes(self) -> int:
        return len(self.metric.proxy_counts)

    # ------------------------------------------------------------------ classes added and removed
    def solve(self) -> None:
        """Everything scoring needs computed now (before the model is copied or exported)."""
        self.metric.solve()

    def extend(self, X: np.ndarray, codes: np.ndarray, n_new: int, order: np.ndarray,
               text: ZeroShotText | None = None) -> None:
        """Add `n_new` classes (rows X with codes 0..n_new-1 among them) with the fitted normalisations and
        settings; `order` sorts the old classes followed by the new ones into the new class order. Existing
        classes keep their proxies; a metric with shared statistics updates them exactly."""
        with torch.no_grad():
            normed = Support(X, codes, n_new, self.device, transform=self.norm_pre)
            counts = normed.counts
            proxies, proxy_counts = self._generate(normed, counts, fit=False)
        all_proxies = torch.cat([self.metric.proxies, proxies.to(self.metric.proxies.device)])
        all_counts = torch.cat([self.metric.proxy_counts.cpu(), proxy_counts])
        rows = _class_rows(all_counts, order)
        new = torch.from_numpy(order >= self.n_classes)
        with torch.no_grad():
            metric = self.metric.extend(normed, counts, all_proxies[rows.to(all_proxies.device)],
                                        all_counts[torch.from_numpy(order)], new)
        if text is not None:
            self.text = text
        self._install(metric, len(order))
        metric.solve()

    def restrict(self, keep: np.ndarray) -> None:
        """Drop the classes not in the boolean mask `keep` (metrics that pool statistics over all classes cannot
        lose a class exactly, and say so)."""
        counts = self.metric.proxy_counts.cpu()
        rows = _class_rows(counts, np.flatnonzero(keep))
        proxies = self.metric.proxies[rows.to(self.metric.proxies.device)]
        metric = self.metric.restrict(torch.from_numpy(keep), proxies, counts[torch.from_numpy(keep)])
        if self.text is not None:
            self.text = self.text.restricted(keep)
        self._install(metric, int(keep.sum()))
        metric.solve()

    # ------------------------------------------------------------------ scoring
    def blocks(self, X: np.ndarray) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """Consecutive fixed-shape blocks of queries (see ``imprint.core.blocks``): memory-bounded, and each query's
        scores independent of the batch it came in; with each, a proxy-score buffer reused from block to block
        (a fresh 80 MiB block per call would cost page faults)."""
        proxies = len(self.metric.proxies)
        rows = block_rows(proxies + getattr(self.metric, "scratch_per_query", 0), X.shape[1])
        with torch.inference_mode():
            buffer = torch.empty(rows, proxies, dtype=torch.float32, device=self.device)
            for positions, block in query_blocks(X, rows, self.device):
                yield positions, block, buffer

    def class_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes) class scores, block by block."""
        out = np.empty((len(X), self.n_classes), dtype=np.float32)
        for positions, block, buffer in self.blocks(X):
            out[positions] = self.model(block, out=buffer)[:positions.stop - positions.start].cpu().numpy()
        return out

    def held_out_class_scores(self, X: np.ndarray) -> np.ndarray:
        """``class_scores`` of a model fitted only to score these rows (cross-fitting): from the metric's
        statistics where that is cheaper than solving for its parameters (``Metric.unsolved_scores``)."""
        out = np.empty((len(X), self.n_classes), dtype=np.float32)
        with torch.inference_mode():
            for positions, block, _ in self.blocks(X):
                scores = self.metric.unsolved_scores(self.model.norm_inf(block.to(self.metric.proxies.dtype)))
                if scores is None:
                    return self.class_scores(X)
                scores = self.model.aggregation(scores)
                if self.model.text is not None:
                    scores = scores + self.model.text(block)
                out[positions] = scores[:positions.stop - positions.start].cpu().numpy()
        return out

    def predict_codes(self, X: np.ndarray) -> np.ndarray:
        """The class with the highest score for each query; class scores are never all held at once. With `max`
        that is the class of the best proxy (proxies are grouped by class in class order, so ties go to the first
        class, as with the class scores)."""
        best = np.empty(len(X), dtype=np.int64)
        owner = self.proxy_owner()
        for positions, block, buffer in self.blocks(X):
            best[positions] = self.best_in_block(block, buffer, owner)[:positions.stop - positions.start].cpu().numpy()
        return best

    def proxy_owner(self) -> torch.Tensor:
        """The class index of each proxy, on the pipeline's device."""
        return class_of_proxy(self.metric.proxy_counts.cpu()).to(self.device)

    def best_in_block(self, block: torch.Tensor, buffer: torch.Tensor | None, owner: torch.Tensor) -> torch.Tensor:
        """Class index of the best score of each row of a block, from the ranking scores (no query-only terms);
        with `max`, the class of the best proxy, so the class scores are never formed (they are where zero-shot
        text scores are blended in)."""
        scores = self.model.ranking_scores(block, out=buffer)
        if self.model.text is not None:  # a per-query constant left out of the head's scores changes no argmax
            return (self.model.aggregation(scores) + self.model.text(block)).argmax(dim=1)
        if self.settings["aggregation"] == "max":
            return owner[scores.argmax(dim=1)]
        return self.model.aggregation(scores).argmax(dim=1)

    def candidate_predictions(self, name: str, values: list[Any], X: np.ndarray) -> list[np.ndarray] | None:
        """Class indices predicted for X under each value of setting `name`, from this one fit, where the metric
        can score them all at once (a decomposition or a Gram matrix reused), or the setting is the text blend's
        weight (the head's scores reused); None where it cannot. Blocks of queries are sized so that every
        value's float64 scores fit in CHUNK_BYTES (4096 rows at most)."""
        per_row = 8 * len(self.metric.proxies) * (len(values) + 1)
        rows = max(MIN_ROWS, min(4096, CHUNK_BYTES // per_row))
        predicted = np.empty((len(values), len(X)), dtype=np.int64)  # copied into: no small tensor outlives its
        text = self.model.text                                          # block (heap fragmentation grew by GiBs)
        with torch.inference_mode():
            for start in range(0, len(X), rows):
                block = tensor_view(np.asarray(X[start:start + rows])).to(self.device, torch.float32)
                if name == TEXT_ALPHA.name:
                    head, cosines = self.model.head_scores(block), text.cosines(block)
                    class_scores = [head + cosines * (value * text.scale) for value in values]
                else:
                    scores = self.metric.candidate_scores(name, values, self.model.norm_inf(block))
                    if scores is None:
                        return None
                    class_scores = [self.model.aggregation(value_scores.to(block.dtype)) for value_scores in scores]
                    if text is not None:
                        text_term = text(block)
                        class_scores = [value_scores + text_term for value_scores in class_scores]
                for i, value_scores in enumerate(class_scores):
                    predicted[i, start:start + len(block)] = value_scores.argmax(dim=1).cpu().numpy()
        return list(predicted)

    # ------------------------------------------------------------------ its part of the file
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The pipeline's part of a classifier file: its stages (options and fitted arrays) and the proxies."""
        tensors = {"proxies": self.metric.proxies.detach().cpu().numpy(), "proxy_counts": self.proxy_counts}
        parts = {point: norm_states(getattr(self, point)) for point in NORM_POINTS}
        parts["metric"] = [(self.metric.options(), self.metric.tensors())]
        stages = stage_records(parts, tensors)
        meta: dict[str, Any] = {"stages": stages}
        if self.text is not None:
            text_meta, text_tensors = self.text.state()
            meta.update(text_meta)
            tensors.update(text_tensors)
        return meta, tensors

    @classmethod
    def restore(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor], settings: dict[str, Any],
                device: torch.device, n_classes: int) -> Pipeline:
        """Rebuild a fitted pipeline from its part of a classifier file (checked by ``imprint.io.classifier_file``)."""
        text = ZeroShotText.restore(meta, tensors)
        norms = tuple(restore_norm(settings[point], stage_states(meta, tensors, point)) for point in NORM_POINTS)
        pipeline = cls(settings, device, norms, text)
        (options, saved), = stage_states(meta, tensors, "metric")
        metric = restore_metric(settings["metric"], options, saved, tensors["proxies"].float().to(device),
                                tensors["proxy_counts"].long())
        pipeline._install(metric, n_classes)
        metric.solve()
        return pipeline

    def stage_arrays(self) -> dict[str, list[list[str]]]:
        """Per pipeline point, the names of the arrays each of its stages saves (to check a file against)."""
        parts = {point: norm_states(getattr(self, point)) for point in NORM_POINTS}
        parts["metric"] = [(None, self.metric.tensors())]
        return {slot: [sorted(arrays) for _, arrays in states] for slot, states in parts.items()}


def stage_records(parts: dict[str, list[tuple[dict, dict[str, torch.Tensor]]]],
                  tensors: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
    """The file's record of fitted stages: per point, each stage's options and the names of its arrays, which are
    added to `tensors` as 'point.i.name'."""
    from imprint.io.classifier_file import json_ready

    stages = {}
    for slot, states in parts.items():
        stages[slot] = []
        for i, (options, arrays) in enumerate(states):
            stages[slot].append({"options": json_ready(options, slot), "tensors": sorted(arrays)})
            tensors.update({f"{slot}.{i}.{name}": value.detach().cpu().numpy() for name, value in arrays.items()})
    return stages


def stage_states(meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                 slot: str) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """(options, arrays) of each stage saved at pipeline point `slot`."""
    return [(part["options"], {name: tensors[f"{slot}.{i}.{name}"] for name in part["tensors"]})
            for i, part in enumerate(meta["stages"][slot])]


def _class_rows(counts: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
    """Proxy rows of the given classes, in that order."""
    starts = torch.cumsum(counts, 0) - counts
    return torch.cat([torch.arange(int(starts[c]), int(starts[c] + counts[c])) for c in classes])
