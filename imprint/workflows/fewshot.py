"""Few-shot episodic evaluation (SimpleShot / easyfsl protocol) of any imprinting configuration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imprint.core.errors import UserError
from imprint.core.validation import check_embeddings, check_labels, check_positive_int
from imprint.estimator.classifier import ImprintClassifier


@dataclass(frozen=True)
class EpisodeResult:
    """Accuracy per episode, with the mean and its 95% confidence half-width (1.96 std / sqrt(n))."""

    accuracies: np.ndarray
    n_way: int
    k_shot: int
    n_query: int

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def ci95(self) -> float:
        if len(self.accuracies) < 2:
            return 0.0
        return float(1.96 * self.accuracies.std(ddof=1) / np.sqrt(len(self.accuracies)))

    def __str__(self) -> str:
        return (f"{self.n_way}-way {self.k_shot}-shot, {len(self.accuracies)} episodes of {self.n_query} queries "
                f"per class: {100 * self.mean:.2f} +- {100 * self.ci95:.2f}%")


def episodes(X: Any, y: Any, n_way: int = 5, k_shot: int = 1, n_query: int = 15, n_episodes: int = 600,
             seed: int = 0, **settings: Any) -> EpisodeResult:
    """Sample n-way k-shot episodes from labelled embeddings and imprint each one with `settings`.

    Only classes with at least k_shot + n_query samples take part; support and query never overlap.
    """
    X = check_embeddings(X)
    y = check_labels(y, len(X))
    for name, value in (("--ways (n_way)", n_way), ("--shots (k_shot)", k_shot), ("--queries (n_query)", n_query),
                        ("--episodes (n_episodes)", n_episodes)):
        check_positive_int(value, name)
    classes, codes = np.unique(y, return_inverse=True)
    counts = np.bincount(codes)
    eligible = np.flatnonzero(counts >= k_shot + n_query)
    if len(eligible) < max(n_way, 2):
        raise UserError(f"{n_way}-way episodes with {k_shot} shots and {n_query} queries need {max(n_way, 2)} "
                         f"classes with >= {k_shot + n_query} samples; {len(eligible)} have that many")
    ImprintClassifier(**settings).check()
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(codes == c) for c in range(len(classes))]
    accuracies = np.empty(n_episodes)
    for e in range(n_episodes):
        chosen = rng.choice(eligible, n_way, replace=False)
        picks = [rng.choice(by_class[c], k_shot + n_query, replace=False) for c in chosen]
        support = np.concatenate([p[:k_shot] for p in picks])
        query = np.concatenate([p[k_shot:] for p in picks])
        clf = ImprintClassifier(**settings).fit(X[support], codes[support])
        accuracies[e] = clf.score(X[query], codes[query])
    return EpisodeResult(accuracies, n_way, k_shot, n_query)
