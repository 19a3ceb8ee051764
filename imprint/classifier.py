"""``ImprintClassifier``: a training-free classifier imprinted from support embeddings (scikit-learn API)."""
from __future__ import annotations

import copy
import os
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from imprint.auto_k import per_class_k, proxy_ratio
from imprint.blocks import block_rows, query_blocks, tensor_view
from imprint.model import ImprintedModel
from imprint.stages import (
    AGGREGATIONS,
    GENERATORS,
    KMEANS_BACKENDS,
    METRICS,
    NORMS,
    GenerationOptions,
    generate,
    make_aggregation,
    make_norm,
)
from imprint.stages.aggregation import MNN_WEIGHTINGS
from imprint.stages.norm import QUANTILE_REFERENCES, Norm
from imprint.validation import check_choice, check_embeddings, check_labels, check_positive_int


def resolve_device(device: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is passed to torch."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None


class ImprintClassifier(ClassifierMixin, BaseEstimator):
    """Imprint proxies for each class from support embeddings; classify queries by their proxy scores.

    The pipeline (IMPRINT, Westerhoff et al. 2025): ``norm_pre`` on support embeddings -> ``generation``
    of ``k`` proxies per class -> ``norm_post`` on the proxies; queries get ``norm_inf``, are scored
    against every proxy with ``metric`` and the scores are reduced per class by ``aggregation``.
    A class with fewer than k samples uses all of them. Stage names: see ``imprint.stages``.

    Parameters
    ----------
    generation, k : GEN stage and proxies per class (``mean`` and ``all`` ignore k). ``k="auto"`` (k-means)
        chooses proxies per class from the support set: a proxies-per-sample ratio by 2-fold
        cross-validation, shared out by each class's spread (see ``imprint.auto_k``); the chosen counts
        are in ``proxy_counts_`` and the ratio in ``proxy_ratio_``.
    norm_pre, norm_post, norm_inf : NORM stages: ``none``, ``l2`` or ``quantile``.
    aggregation, m, mnn_weights : AGG stage; ``m`` nearest proxies and their weighting for ``mnn``.
    metric : ``dot`` (inner product) or ``euclidean`` (negative squared distance).
    temperature : softmax temperature of ``predict_proba`` (0.01 matches CLIP's logit scale of 100).
    quantile_reference : ``pooled`` (order-independent) or ``sequential`` (the paper's) for quantile NORM.
    kmeans_backend : ``batched`` (all classes at once, torch) or ``faiss`` (per-class FAISS k-means).
    kmeans_max_iter, ls_lambda, seed : k-means iterations, ridge term of the ``ls``/``kls`` oracles, random seed.
    device : ``auto`` (cuda, then mps, then cpu) or a torch device string.
    """

    def __init__(self, generation: str = "kmeans", k: int | str = 20, norm_pre: str = "l2", norm_post: str = "l2",
                 norm_inf: str = "l2", aggregation: str = "max", m: int = 1, mnn_weights: str = "uniform",
                 metric: str = "dot", temperature: float = 0.01, quantile_reference: str = "pooled",
                 kmeans_backend: str = "batched", kmeans_max_iter: int = 100, ls_lambda: float = 1e-4,
                 seed: int = 0, device: str = "auto") -> None:
        self.generation = generation
        self.k = k
        self.norm_pre = norm_pre
        self.norm_post = norm_post
        self.norm_inf = norm_inf
        self.aggregation = aggregation
        self.m = m
        self.mnn_weights = mnn_weights
        self.metric = metric
        self.temperature = temperature
        self.quantile_reference = quantile_reference
        self.kmeans_backend = kmeans_backend
        self.kmeans_max_iter = kmeans_max_iter
        self.ls_lambda = ls_lambda
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ settings
    def _check_settings(self) -> None:
        for stage in (self.norm_pre, self.norm_post, self.norm_inf):
            NORMS.entry(stage)
        GENERATORS.entry(self.generation)
        AGGREGATIONS.entry(self.aggregation)
        METRICS.entry(self.metric)
        if self.k == "auto":
            if self.generation != "kmeans":
                raise ValueError(f"k='auto' chooses k-means proxies per class; use generation='kmeans' "
                                 f"(got {self.generation!r}) or an integer k")
        else:
            check_positive_int(self.k, "k")
        check_positive_int(self.m, "m")
        check_positive_int(self.kmeans_max_iter, "kmeans_max_iter")
        if self.m != 1 and self.aggregation != "mnn":
            raise ValueError(f"m={self.m} is only used by aggregation='mnn'; got aggregation={self.aggregation!r}")
        check_choice(self.mnn_weights, "mnn_weights", MNN_WEIGHTINGS)
        check_choice(self.quantile_reference, "quantile_reference", QUANTILE_REFERENCES)
        check_choice(self.kmeans_backend, "kmeans_backend", KMEANS_BACKENDS)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0; got {self.temperature!r}")
        if not (isinstance(self.ls_lambda, (int, float)) and self.ls_lambda >= 0):
            raise ValueError(f"ls_lambda must be a number >= 0; got {self.ls_lambda!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        resolve_device(self.device)

    def _generation_options(self) -> GenerationOptions:
        return GenerationOptions(seed=int(self.seed), max_iter=self.kmeans_max_iter,
                                 kmeans_backend=self.kmeans_backend, ls_lambda=float(self.ls_lambda))

    @property
    def is_oracle(self) -> bool:
        """True for generators that use cross-class statistics (upper-bound baselines, not imprinting)."""
        return GENERATORS.entry(self.generation).oracle

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any, *, encoder_id: str | None = None, text_embeddings: Any = None,
            text_labels: Any = None) -> ImprintClassifier:
        """Imprint proxies for every class in y from the embeddings X; returns self.

        `encoder_id` records which encoder produced X, so a saved classifier is used with the same one.
        `text_embeddings` with `text_labels` (zero-shot prompts from a CLIP text tower) join the support
        set as extra samples of their classes: a class can be imprinted from text alone (X may then
        have no rows for it, or no rows at all) and improves with every image added.
        """
        self._check_settings()
        if text_embeddings is None:
            X_checked = check_embeddings(X)
            y = check_labels(y, len(X_checked))
            validate_data(self, X, reset=True, skip_check_array=True)
        else:
            X_checked, y = self._join_text(X, y, text_embeddings, text_labels)
            self.n_features_in_ = X_checked.shape[1]
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"needs at least 2 classes to imprint a classifier; got 1 class ({classes[0]!r})")
        self.device_ = resolve_device(self.device)
        self.n_features_in_ = X_checked.shape[1]
        self.norm_pre_ = make_norm(self.norm_pre, reference=self.quantile_reference)
        self.norm_post_ = make_norm(self.norm_post, reference=self.quantile_reference)
        self.norm_inf_ = make_norm(self.norm_inf, reference=self.quantile_reference)
        if self.k == "auto":
            self.proxy_ratio_ = self._cross_validated_ratio(X_checked, codes)
        support, groups = self._sorted_support(X_checked, codes)
        self.norm_inf_.fit(support)  # queries live where the support embeddings live
        proxies, counts = self._imprint(support, groups, fit=True)
        self.classes_ = classes
        self._set_proxies(proxies, counts)
        self.encoder_id_ = encoder_id
        return self

    def _cross_validated_ratio(self, X: np.ndarray, codes: np.ndarray) -> float:
        """Proxies per support sample for k='auto', by 2-fold cross-validation of this very pipeline."""
        def score(k: int, train: np.ndarray, test: np.ndarray) -> float:
            fold = clone(self).set_params(k=k).fit(X[train], codes[train])
            return float((fold.predict(X[test]) == codes[test]).mean())

        return proxy_ratio(codes, score, seed=int(self.seed))

    @staticmethod
    def _join_text(X: Any, y: Any, text_embeddings: Any, text_labels: Any) -> tuple[np.ndarray, np.ndarray]:
        text = check_embeddings(text_embeddings, name="text_embeddings")
        labels = check_labels(text_labels, len(text))
        if X is None or len(X) == 0:
            return text, labels
        images = check_embeddings(X, n_features=text.shape[1], owner="the text embeddings")
        return np.concatenate([images, text]), np.concatenate([check_labels(y, len(images)), labels])

    def _sorted_support(self, X: np.ndarray, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if np.all(codes[:-1] <= codes[1:]):  # already grouped by class: no copy
            return tensor_view(X).to(self.device_), torch.from_numpy(codes.astype(np.int64)).to(self.device_)
        order = np.argsort(codes, kind="stable")
        support = torch.from_numpy(X[order]).to(self.device_)
        return support, torch.from_numpy(codes[order].astype(np.int64)).to(self.device_)

    def _imprint(self, support: torch.Tensor, groups: torch.Tensor, fit: bool) -> tuple[np.ndarray, np.ndarray]:
        """norm_pre -> generation -> norm_post on class-sorted support rows with class codes `groups`."""
        counts = torch.bincount(groups)
        with torch.no_grad():  # not inference_mode: fitted norm state must stay usable in autograd code
            normed = self.norm_pre_.fit_transform(support, groups) if fit else self.norm_pre_(support)
            k = self.k
            if k == "auto":  # new classes added later get the ratio without the spread weighting
                k = per_class_k(normed, counts, self.proxy_ratio_) if fit else \
                    torch.round(self.proxy_ratio_ * counts.double()).long().clamp_min(1)
            proxies, proxy_counts = generate(self.generation, normed, counts.to(normed.device), k,
                                             self._generation_options())
            proxy_groups = torch.repeat_interleave(torch.arange(len(proxy_counts), device=proxies.device),
                                                   proxy_counts.to(proxies.device))
            proxies = self.norm_post_.fit_transform(proxies, proxy_groups) if fit else self.norm_post_(proxies)
        out = proxies.float().cpu().numpy()
        if support.device.type == "cpu" and np.shares_memory(out, support.numpy()):
            out = out.copy()  # e.g. 'all' on unit-norm input: the classifier must own its proxies
        return out, proxy_counts.cpu().numpy()

    def _set_proxies(self, proxies: np.ndarray, counts: np.ndarray) -> None:
        self.proxies_ = np.ascontiguousarray(proxies, dtype=np.float32)
        self.proxy_counts_ = np.asarray(counts, dtype=np.int64)
        self.proxy_labels_ = np.repeat(self.classes_, self.proxy_counts_)
        aggregation = make_aggregation(self.aggregation, torch.from_numpy(self.proxy_counts_), m=self.m,
                                       weighting=self.mnn_weights, metric=self.metric)
        self.model_ = ImprintedModel(torch.from_numpy(self.proxies_), self.norm_inf_, self.metric,
                                     aggregation).to(self.device_).eval()

    # ------------------------------------------------------------------ incremental
    def add_classes(self, X: Any, y: Any) -> ImprintClassifier:
        """Imprint new classes with the fitted normalisations, leaving existing classes' proxies untouched."""
        check_is_fitted(self)
        if self.is_oracle:
            raise ValueError(f"add_classes is not available for oracle generation {self.generation!r}: "
                             "it uses statistics of all classes; refit instead")
        X = check_embeddings(X, n_features=self.n_features_in_)
        y = check_labels(y, len(X))
        new_classes, codes = np.unique(y, return_inverse=True)
        clash = [c for c in new_classes.tolist() if c in set(self.classes_.tolist())]
        if clash:
            raise ValueError(f"class {clash[0]!r} is already imprinted; remove_classes([{clash[0]!r}]) first")
        support, groups = self._sorted_support(X, codes)
        proxies, counts = self._imprint(support, groups, fit=False)
        self._merge(np.concatenate([self.classes_, new_classes]),
                    np.concatenate([self.proxies_, proxies]), np.concatenate([self.proxy_counts_, counts]))
        return self

    def remove_classes(self, labels: Iterable[Hashable]) -> ImprintClassifier:
        """Drop the proxies of the given classes; the others are untouched."""
        check_is_fitted(self)
        labels = list(labels)
        known = self.classes_.tolist()
        missing = [label for label in labels if label not in known]
        if missing:
            raise ValueError(f"cannot remove unknown class {missing[0]!r}; known classes: {known}")
        keep = ~np.isin(self.classes_, np.asarray(labels, dtype=self.classes_.dtype))
        if keep.sum() < 2:
            raise ValueError(f"removing {len(labels)} of {len(known)} classes would leave fewer than 2; "
                             "fit a new classifier instead")
        owner = np.repeat(np.arange(len(self.classes_)), self.proxy_counts_)
        self._merge(self.classes_[keep], self.proxies_[keep[owner]], self.proxy_counts_[keep])
        return self

    def _merge(self, classes: np.ndarray, proxies: np.ndarray, counts: np.ndarray) -> None:
        """Install classes with their proxies, reordered so classes_ stays sorted."""
        order = np.argsort(classes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.concatenate([np.arange(starts[c], starts[c] + counts[c]) for c in order])
        self.classes_ = classes[order]
        self._set_proxies(proxies[rows], counts[order])

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores, shape (n_samples, n_classes), computed in memory-bounded chunks of queries."""
        X = self._checked_queries(X)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for rows, scores in self._score_chunks(X):
            out[rows] = scores.cpu().numpy()
        return out

    def _checked_queries(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = check_embeddings(X, n_features=self.n_features_in_)
        validate_data(self, X, reset=False, skip_check_array=True)
        return X

    def _score_blocks(self, X: np.ndarray) -> Iterator[tuple[slice, torch.Tensor]]:
        """Proxy scores of consecutive fixed-shape blocks of queries (see ``imprint.blocks``): at most
        256 MiB at a time, and each query's scores independent of the batch it came in."""
        rows = block_rows(len(self.proxies_), self.n_features_in_)
        with torch.inference_mode():
            for positions, block in query_blocks(X, rows, self.device_):
                yield positions, self.model_.proxy_scores(block)[:positions.stop - positions.start]

    def _score_chunks(self, X: np.ndarray) -> Iterator[tuple[slice, torch.Tensor]]:
        """Class scores of consecutive blocks of queries."""
        for positions, scores in self._score_blocks(X):
            yield positions, self.model_.aggregation(scores)

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest score for each query; class scores are never all held at once.
        With `max` that is the class of the best proxy (proxies are grouped by class in class order, so
        ties go to the first class, as with the class scores)."""
        X = self._checked_queries(X)
        best = np.empty(len(X), dtype=np.int64)
        if self.aggregation == "max":
            owner = torch.from_numpy(np.repeat(np.arange(len(self.classes_)), self.proxy_counts_)).to(self.device_)
            for positions, scores in self._score_blocks(X):
                best[positions] = owner[scores.argmax(dim=1)].cpu().numpy()
        else:
            for positions, scores in self._score_chunks(X):
                best[positions] = scores.argmax(dim=1).cpu().numpy()
        return self.classes_[best]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the class scores divided by `temperature`."""
        logits = self.decision_function(X).astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def to_torch(self) -> ImprintedModel:
        """An ``nn.Module`` (CPU, eval mode) giving the same class scores as ``decision_function``."""
        check_is_fitted(self)
        return copy.deepcopy(self.model_).to("cpu").eval()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted classifier to a safetensors file (arrays + JSON metadata), atomically."""
        from imprint.persistence import save_classifier

        check_is_fitted(self)
        save_classifier(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_dim: int | None = None,
             device: str = "auto") -> ImprintClassifier:
        """Read a classifier written by ``save``; `expected_dim` checks the embedding width."""
        from imprint.persistence import load_classifier

        return load_classifier(path, expected_dim=expected_dim, device=device)

    def _restore(self, classes: np.ndarray, proxies: np.ndarray, counts: np.ndarray, norms: dict[str, Norm],
                 encoder_id: str | None, proxy_ratio: float | None = None) -> ImprintClassifier:
        """Install a fitted state read from disk."""
        self._check_settings()
        if proxy_ratio is not None:
            self.proxy_ratio_ = proxy_ratio
        self.device_ = resolve_device(self.device)
        self.classes_ = classes
        self.n_features_in_ = proxies.shape[1]
        self.norm_pre_, self.norm_post_, self.norm_inf_ = norms["pre"], norms["post"], norms["inf"]
        self._set_proxies(proxies, counts)
        self.encoder_id_ = encoder_id
        return self
