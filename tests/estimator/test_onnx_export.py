"""Tests of ``imprint.estimator.onnx_export``: one ONNX graph from images to answers: the encoder's normalisation,
the encoder, the whole imprinted pipeline (norm_inf, the head, the aggregation, the zero-shot text term), the
calibrated probabilities and, where the classifier rejects, the unknown score with its threshold."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from imprint import ImprintClassifier
from imprint.cli import main
from imprint.core.presets import PRESETS

EXAMPLE = ROOT / "examples" / "onnx_predict.py"


def _load_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnx_predict", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real Fashion-MNIST images: 12 support and 10 test images per class as PNG files, with their classes."""
    from imprint.data.builtin import load_dataset, per_class_split

    folder = tmp_path_factory.mktemp("onnx_images")
    data = load_dataset("fashion_mnist")
    support, test = per_class_split(data.labels, 12, 10, seed=3)
    paths = []
    for i in np.concatenate([support, test]):
        path = folder / f"{i}.png"
        Image.fromarray(data.images[i]).save(path)
        paths.append(path)
    names = np.asarray(data.class_names, dtype=object)
    return {"paths": paths, "labels": names[data.labels[np.concatenate([support, test])]], "n_support": len(support)}


def embedded(images, encoder) -> dict:
    X = encoder.encode_images([Image.open(p) for p in images["paths"]])
    n = images["n_support"]
    return {"encoder": encoder, "X_support": X[:n], "y_support": images["labels"][:n], "X_test": X[n:],
            "y_test": images["labels"][n:], "test_paths": images["paths"][n:]}


@pytest.fixture(scope="module")
def task(images):
    """The images embedded by the packaged Lite0."""
    from imprint.encoders import create_encoder

    return embedded(images, create_encoder("lite0", device="cpu"))


@pytest.fixture(scope="module")
def small_task(images, tiny_model_name):
    """The images embedded by a small random-weight open_clip network: what a stage puts in the graph does not
    depend on the encoder before it, and this one exports in a fraction of Lite0's time."""
    from imprint.encoders import create_encoder

    return embedded(images, create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu"))


def _graph_answers(path: Path, images: list[Path]) -> dict[str, np.ndarray]:
    model = _load_example().Model(str(path))
    pixels = np.stack([model.pixels(p) for p in images])
    return dict(zip(model.outputs, model.session.run(None, {"images": pixels}))), model


def _same_answers(clf, path: Path, task) -> None:
    answers, model = _graph_answers(path, task["test_paths"])
    scores = clf._class_scores(task["X_test"])
    agree = (answers["label"] == scores.argmax(1)).mean()
    assert agree >= 0.999, agree
    scale = np.abs(scores).max()
    np.testing.assert_allclose(answers["scores"], scores, rtol=1e-4, atol=1e-4 * scale)
    # the graph's softmax of its own scores is imprint's calibration exactly; on Lite0's embeddings its
    # probabilities are imprint's too (a small network's sharp logits turn the scores' 1e-4 into more)
    np.testing.assert_allclose(answers["probabilities"], clf.calibration_.probabilities(answers["scores"]), atol=1e-5)
    if task["encoder"].id.startswith("timm:"):
        np.testing.assert_allclose(answers["probabilities"], clf.predict_proba(task["X_test"]), atol=2e-4)
    if clf.reject is not None:
        unknown = clf.score_unknown(task["X_test"])
        np.testing.assert_allclose(answers["unknown_score"], unknown, rtol=1e-3, atol=1e-3 * np.abs(unknown).max())
        far = np.abs(unknown - clf.threshold_) > 1e-3 * np.abs(unknown).max()  # not on the threshold itself
        assert (answers["accepted"][far] == (unknown[far] <= clf.threshold_)).all()
    assert model.classes == clf.classes_.tolist()


def test_the_default_classifier_of_real_images_exports_to_the_same_answers(task, tmp_path):
    clf = ImprintClassifier().fit(task["X_support"], task["y_support"])
    clf.export_onnx(tmp_path / "model.onnx")
    _same_answers(clf, tmp_path / "model.onnx", task)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_exports_to_the_same_answers(small_task, tmp_path, preset):
    clf = ImprintClassifier.from_preset(preset).fit(small_task["X_support"], small_task["y_support"])
    clf.export_onnx(tmp_path / "model.onnx", encoder=small_task["encoder"])
    _same_answers(clf, tmp_path / "model.onnx", small_task)


@pytest.mark.parametrize("settings", [
    dict(method="custom", norm_pre="center+l2", generation="kmeans", k=3, norm_post="quantile", norm_inf="center",
         metric="euclidean", aggregation="mean"),
    dict(method="custom", generation="fps", k=4, metric="dot", aggregation="mnn", m=3, mnn_weights="distance"),
    dict(method="custom", generation="random", k=5, metric="kernel", beta=8.0, aggregation="sum"),
    dict(method="custom", norm_pre="tukey", generation="kmeans", k=2, norm_post="none", norm_inf="tukey",
         metric="fecam", shrinkage=0.3),
    dict(method="custom", norm_pre="l2+random_relu", generation="mean", norm_post="none", norm_inf="l2+random_relu",
         metric="ridge", projection_dim=512, ridge_lambda=0.1),
    *(dict(method="gda", reject=score) for score in ("max_score", "energy", "knn", "mahalanobis", "neco")),
])
def test_every_stage_and_rejection_score_is_in_the_graph(small_task, tmp_path, settings):
    """Each stage changes the scores; a graph without it would not give imprint's."""
    clf = ImprintClassifier(**settings).fit(small_task["X_support"], small_task["y_support"])
    clf.export_onnx(tmp_path / "model.onnx", encoder=small_task["encoder"])
    _same_answers(clf, tmp_path / "model.onnx", small_task)


def test_the_zero_shot_blend_and_an_open_clip_tower_export(tmp_path, tiny_model_name):
    from imprint.encoders import create_encoder

    encoder = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (48 + i, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    X = encoder.encode_images([Image.open(p) for p in paths])
    y = np.array(["cat", "dog", "fox"] * 8, dtype=object)
    text = encoder.text_proxies(["cat", "dog", "fox"])
    clf = ImprintClassifier.from_preset("gda", text_alpha=0.7, reject="max_score").fit(
        X, y, text_embeddings=text, text_labels=np.array(["cat", "dog", "fox"], dtype=object))
    assert clf.pipeline_.text is not None
    clf.export_onnx(tmp_path / "clip.onnx")
    _same_answers(clf, tmp_path / "clip.onnx", {"X_test": X, "test_paths": paths, "encoder": encoder})


def test_the_command_exports_lite1_and_the_example_runs_without_torch_or_imprint(tmp_path, capsys, cache_flags):
    folder = ROOT / "examples" / "fashion"
    assert main(["fit", str(folder), "-o", str(tmp_path / "c.safetensors"), "--encoder", "lite1", "--preset",
                 "simpleshot", *cache_flags]) == 0
    assert main(["export", str(tmp_path / "c.safetensors"), "-o", str(tmp_path / "c.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "c.safetensors"), str(folder / "bag"), "--format", "csv", *cache_flags]) == 0
    expected = [line.split(",")[1] for line in capsys.readouterr().out.splitlines()[1:]]
    blocker = tmp_path / "blocker"  # `import torch` and `import imprint` fail in the example's process
    for name in ("torch", "imprint"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    images = tmp_path / "bag"  # the 20 bags, a thin image and a text file among them
    import shutil

    shutil.copytree(folder / "bag", images)
    Image.new("L", (60000, 1)).save(images / "000_thin.png")
    (images / "001_notes.png").write_text("not an image")
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "c.onnx"), str(images)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "path,label,probability"
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert [row[1] for row in rows] == expected and len(rows) == 20
    skipped = done.stderr.strip().splitlines()
    assert len(skipped) == 2 and "000_thin.png: 60000 x 1 pixels" in skipped[0] and "001_notes.png" in skipped[1]
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True,
                           env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"})
    assert probe.returncode != 0  # the blocker works


def test_bad_exports_and_foreign_models_are_one_line(tmp_path, capsys, mixture):
    X, y = mixture
    path = tmp_path / "c.safetensors"
    ImprintClassifier(method="qi").fit(X, y, encoder_id="open_clip:ViT-B-32/laion2b_s34b_b79k").save(path)
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not build from what a file says" in err and err.count("\n") == 1
    ImprintClassifier(method="qi").fit(X, y).save(path)
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "does not record its encoder" in capsys.readouterr().err
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "foreign.onnx"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "not one 'imprint export' wrote" in done.stderr
    assert done.stderr.count("\n") == 1
