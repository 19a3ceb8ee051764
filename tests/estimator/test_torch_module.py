"""Tests of ``imprint.estimator.torch_module``: the inference half of an imprinted classifier as plain
``nn.Module``s: ``ImprintedModel`` (embeddings to class scores: what ``to_torch`` returns) and ``ImagesToAnswers``
(uint8 images to every answer: what an ONNX export traces)."""
from __future__ import annotations

import numpy as np
import torch

from imprint import ImprintClassifier


def test_to_torch_gives_the_same_scores(fitted):
    clf, X, _ = fitted
    module = clf.to_torch()
    assert isinstance(module, torch.nn.Module)
    with torch.inference_mode():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, clf.decision_function(X), rtol=1e-6, atol=1e-6)
    module.proxies.zero_()  # a copy: editing it does not change the classifier
    assert np.abs(clf.proxies_).sum() > 0


def test_to_torch_module_works_under_autograd(mixture):
    X, y = mixture
    clf = ImprintClassifier(generation="mean", norm_pre="quantile", norm_post="quantile").fit(X, y)
    module = clf.to_torch()
    queries = torch.from_numpy(X[:3]).requires_grad_()
    module(queries).max(dim=1).values.sum().backward()
    assert queries.grad is not None and torch.isfinite(queries.grad).all()
