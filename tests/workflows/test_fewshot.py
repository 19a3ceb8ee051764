"""Tests of ``imprint.workflows.fewshot``: few-shot episodic evaluation (SimpleShot / easyfsl protocol) of any
imprinting configuration."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import mixture_embeddings

from imprint.cli import main
from imprint.workflows.fewshot import episodes


def test_episode_protocol_and_interval():
    X, y = mixture_embeddings(n_classes=8, per_class=40)
    result = episodes(X, y, n_way=5, k_shot=2, n_query=5, n_episodes=40, generation="mean")
    assert result.accuracies.shape == (40,) and 0 <= result.accuracies.min() <= result.accuracies.max() <= 1
    assert result.ci95 == pytest.approx(1.96 * result.accuracies.std(ddof=1) / np.sqrt(40))
    again = episodes(X, y, n_way=5, k_shot=2, n_query=5, n_episodes=40, generation="mean")
    np.testing.assert_array_equal(result.accuracies, again.accuracies)
    assert "5-way 2-shot, 40 episodes" in str(result)


def test_episode_errors():
    X, y = mixture_embeddings(n_classes=3, per_class=10)
    with pytest.raises(ValueError, match="need 5 classes with >= 16 samples; 0 have that many"):
        episodes(X, y, n_way=5, k_shot=1, n_query=15)
    with pytest.raises(ValueError, match=r"--shots \(k_shot\) must be an integer >= 1; got 0"):
        episodes(X, y, k_shot=0)
    with pytest.raises(ValueError, match="unknown generation"):
        episodes(X, y, n_way=3, n_query=2, generation="nope")


@pytest.mark.slow
def test_more_shots_help_on_real_embeddings(real_embeddings):
    Xs, ys, _, _ = real_embeddings("fashion_mnist")
    one = episodes(Xs, ys, n_way=5, k_shot=1, n_query=15, n_episodes=100, generation="mean")
    five = episodes(Xs, ys, n_way=5, k_shot=5, n_query=15, n_episodes=100, generation="mean")
    assert five.mean > one.mean + 0.05 and one.mean > 0.4, (one.mean, five.mean)


def test_fewshot_command(tmp_path, capsys):
    X, y = mixture_embeddings(n_classes=6, per_class=30)
    np.savez(tmp_path / "emb.npz", embeddings=X, labels=y.astype(str))
    assert main(["fewshot", str(tmp_path / "emb.npz"), "--ways", "3", "--shots", "2", "--queries", "4",
                 "--episodes", "20", "--generation", "mean"]) == 0
    assert "3-way 2-shot, 20 episodes of 4 queries per class:" in capsys.readouterr().out
