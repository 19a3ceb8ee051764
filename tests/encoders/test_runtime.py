"""Tests of ``imprint.encoders.runtime``: where an encoder's network runs: torch, or on the CPU ONNX Runtime or
OpenVINO, from a graph exported once and cached."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, copy_examples, run
from PIL import Image

from imprint.encoders import create_encoder
from imprint.encoders.runtime import RuntimeChoiceError, encoder_graph, graph_key, resolve_runtime, runtime_flag

pytest.importorskip("onnxruntime")


TEXTILES = Path(__import__("conformal_clip_data").__file__).parent / "data" / "textile_images" / "simulated"


@pytest.fixture(scope="module")
def encoders():
    return create_encoder("lite0", device="cpu", runtime="torch"), create_encoder("lite0", device="cpu",
                                                                                 runtime="onnx")


def _images() -> list[Image.Image]:
    """Real images: grey Fashion-MNIST PNGs and RGB textile JPEGs of another size."""
    fashion = sorted(EXAMPLES.glob("*/*.png"))[::10][:12]
    textiles = sorted(TEXTILES.glob("*/*.jpg"))[::50][:12]
    return [Image.open(p).convert("RGB") for p in fashion + textiles]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _embed_on(runtimes: tuple[str, ...], tmp_path: Path, capsys, per_class: int) -> list[np.ndarray]:
    """`imprint embed` of the same example images on each runtime, into one cache (tmp_path/cache)."""
    folder = copy_examples(tmp_path / "images", per_class=per_class)
    for runtime in runtimes:
        code, _, err = run(capsys, "embed", folder, "-o", tmp_path / f"{runtime}.npz", "--runtime", runtime,
                           "--cache-dir", tmp_path / "cache", "--quiet")
        assert code == 0, err
    embeddings = []
    for runtime in runtimes:
        with np.load(tmp_path / f"{runtime}.npz") as data:
            embeddings.append(data["embeddings"])
    return embeddings


def test_auto_runs_the_encoder_on_the_faster_engine_on_the_cpu_and_torch_elsewhere(monkeypatch):
    assert resolve_runtime("auto", "cpu") == "fastest" and resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("torch", "cpu") == "torch" and resolve_runtime("openvino", "cpu") == "openvino"
    assert [runtime_flag(r) for r in ("torch", "onnxruntime 1.32.0", "openvino 2026.4.1")] == \
        ["torch", "onnx", "openvino"]  # what a store started on another runtime tells the user to pass
    assert create_encoder("lite0", device="cpu").runtime == "fastest"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert resolve_runtime("auto", "cpu") == "onnx"


def test_openvino_gives_the_same_embeddings_bit_for_bit_in_any_batch(encoders):
    on_torch, _ = encoders
    on_openvino = create_encoder("lite0", device="cpu", runtime="openvino")
    images = _images()
    assert _cosines(on_torch.encode_images(images), on_openvino.encode_images(images)).min() >= 0.9999
    assert on_openvino.runtime_id.startswith("openvino ")
    pixels = torch.stack([on_openvino.transform(image) for image in images[:11]])
    together = on_openvino.encode_batch(pixels)
    for size in (1, 4):
        assert np.array_equal(np.concatenate([on_openvino.encode_batch(p) for p in pixels.split(size)]), together)


def test_the_engines_are_measured_once_per_machine_and_a_disagreeing_one_is_not_run(tmp_path, encoders,
                                                                                       monkeypatch):
    import json

    import imprint.encoders.runtime as runtime

    on_torch, _ = encoders
    graph = encoder_graph(on_torch, 224, 224, 2, "fastest", cache_dir=tmp_path)
    choice_file = tmp_path / f"{graph_key(on_torch.id, on_torch.weights_id)}.choice.json"
    choice = json.loads(choice_file.read_text())
    assert graph.engine == choice["fastest"] and choice["agreement"] >= 0.9999
    assert set(choice["images_per_s"]) == {"onnx", "openvino"}
    assert set(choice["machine"]) == {"cpu", "cores", "versions"}
    assert encoder_graph(on_torch, 224, 224, 1, "fastest", cache_dir=tmp_path).engine == graph.engine  # any threads
    monkeypatch.setattr(runtime, "ENGINES", {**runtime.ENGINES})
    assert encoder_graph(on_torch, 224, 224, 2, "fastest", cache_dir=tmp_path).engine == choice["fastest"]
    assert json.loads(choice_file.read_text()) == choice  # read back, not measured again

    class Disagreeing(runtime.OpenVinoEncoderGraph):  # an engine whose graph would give other embeddings
        def _one(self, image):
            return -super()._one(image)
    runtime.ENGINES["openvino"] = Disagreeing
    choice_file.write_text(json.dumps({**choice, "machine": {**choice["machine"], "cpu": "another"}}))
    assert encoder_graph(on_torch, 224, 224, 2, "fastest", cache_dir=tmp_path).engine == "onnx"
    assert json.loads(choice_file.read_text())["agreement"] < 0
    with pytest.raises(RuntimeChoiceError, match="disagree with ONNX Runtime"):
        encoder_graph(on_torch, 224, 224, 2, "openvino", cache_dir=tmp_path)


def test_both_runtimes_give_the_same_embeddings_of_real_images(encoders):
    on_torch, on_onnx = encoders
    images = _images()
    a, b = on_torch.encode_images(images), on_onnx.encode_images(images)
    assert a.encoder_id == b.encoder_id == "timm:tf_efficientnet_lite0"
    assert _cosines(a, b).min() >= 0.9999
    # and so the same predictions: a classifier fitted on one runtime's embeddings serves the other's
    from imprint import ImprintClassifier

    labels = [0] * 12 + [1] * 12
    clf = ImprintClassifier(method="simpleshot").fit(a, labels)
    assert (clf.predict(a) == clf.predict(b)).all()


def test_an_image_gets_the_same_bits_alone_or_in_any_batch(encoders):
    _, on_onnx = encoders
    images = _images()[:19]
    pixels = torch.stack([on_onnx.transform(image) for image in images])
    together = on_onnx.encode_batch(pixels)
    for size in (1, 5, 16):
        pieces = np.concatenate([on_onnx.encode_batch(part) for part in pixels.split(size)])
        assert np.array_equal(pieces, together), size


def test_the_graph_is_built_once_and_a_damaged_one_is_rebuilt(tmp_path, encoders, monkeypatch):
    on_torch, _ = encoders
    pixels = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    first = encoder_graph(on_torch, 224, 224, 1, "onnx", cache_dir=tmp_path)(pixels)
    stored = tmp_path / f"{graph_key(on_torch.id, on_torch.weights_id)}.graph"
    assert stored.is_file() and oct(stored.stat().st_mode & 0o777) != "0o600"

    import imprint.encoders.runtime as runtime

    real_export = runtime._export
    monkeypatch.setattr(runtime, "_export", lambda *a: pytest.fail("exported again although it is cached"))
    assert np.array_equal(encoder_graph(on_torch, 224, 224, 1, "onnx", cache_dir=tmp_path)(pixels), first)
    blob = bytearray(stored.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the weights
    stored.write_bytes(bytes(blob))
    calls = []
    monkeypatch.setattr(runtime, "_export", lambda *a: calls.append(1) or real_export(*a))
    again = encoder_graph(on_torch, 224, 224, 1, "onnx", cache_dir=tmp_path)(pixels)
    assert calls == [1] and np.array_equal(again, first) and stored.read_bytes() != bytes(blob)


def test_a_graph_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, encoders):
    on_torch, _ = encoders
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = encoder_graph(on_torch, 224, 224, 1, "onnx", cache_dir=blocker / "graphs")
    assert graph(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1280)
    assert any("graph cache" in str(w.message) for w in caught)


def test_the_embedding_cache_never_serves_one_runtimes_embeddings_to_the_other(tmp_path, capsys):
    from imprint.io.cache import encoder_namespace

    cache = tmp_path / "cache"
    a, b = _embed_on(("torch", "onnx"), tmp_path, capsys, per_class=4)
    namespaces = [p.name for p in cache.iterdir()]
    assert len(namespaces) == 2
    torch_encoder = create_encoder("lite0", device="cpu", runtime="torch")
    assert encoder_namespace(torch_encoder) in namespaces
    assert not np.array_equal(a, b) and _cosines(a, b).min() >= 0.9999


def test_a_store_is_resumed_only_on_the_runtime_it_was_started_on(tmp_path, capsys):
    folder = copy_examples(tmp_path / "images", per_class=2)
    store = tmp_path / "store"
    assert run(capsys, "embed", folder, "-o", store, "--runtime", "torch", "--quiet")[0] == 0
    code, _, err = run(capsys, "embed", folder, "-o", store, "--runtime", "onnx", "--quiet")
    assert code == 2 and "--runtime torch" in err and err.count("\n") == 1


def test_a_runtime_that_cannot_run_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(RuntimeChoiceError, match="not on cuda; use --runtime torch"):
        resolve_runtime("onnx", "cuda")
    with pytest.raises(RuntimeChoiceError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", "cpu")
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--runtime", "tensorrt")
    assert code == 2 and "invalid choice: 'tensorrt'" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if neither engine were installed
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert resolve_runtime("auto", "cpu") == "torch"
    for engine, package in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--runtime", engine)
        assert code == 2 and f"pip install {package}" in err and err.count("\n") == 1
    assert not (tmp_path / "c.safetensors").exists()


def test_bf16_is_asked_for_by_name_and_refused_in_one_line_where_the_cpu_lacks_it(tmp_path, capsys, monkeypatch):
    from imprint.encoders import runtime

    assert resolve_runtime("auto", "cpu") != "openvino-bf16"  # lower precision is never chosen for the user
    assert runtime_flag("openvino 2026.4.1 bf16") == "openvino-bf16" and runtime_flag("openvino 2026.4.1") == \
        "openvino"
    with pytest.raises(RuntimeChoiceError, match="not on cuda"):
        resolve_runtime("openvino-bf16", "cuda")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "c.safetensors", "--runtime", "openvino-bf16")
    assert code == 2 and "bf16 instructions" in err and "--runtime openvino" in err and err.count("\n") == 1
    assert not (tmp_path / "c.safetensors").exists()


def test_bf16_embeddings_are_kept_apart_close_to_fp32_and_batch_invariant(tmp_path, capsys):
    pytest.importorskip("openvino")
    from imprint.encoders.runtime import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX): OpenVINO cannot run bf16 here")
    fp32, bf16 = _embed_on(("openvino", "openvino-bf16"), tmp_path, capsys, per_class=3)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one namespace each: never served to the other
    assert not np.array_equal(fp32, bf16) and _cosines(fp32, bf16).min() >= 0.98  # measured: 0.992 at least
    encoder = create_encoder("lite0", device="cpu", runtime="openvino-bf16")
    images = _images()[:6]
    together = encoder.encode_images(images)
    alone = np.concatenate([encoder.encode_images([image]) for image in images])
    assert np.array_equal(np.asarray(together), np.asarray(alone))


def test_the_grid_config_names_the_runtime():
    from imprint.grid.config import parse_config

    assert parse_config({"datasets": ["digits"], "runtime": "torch"}).runtime == "torch"
    assert parse_config({"datasets": ["digits"]}).runtime == "auto"
    with pytest.raises(ValueError, match="unknown runtime 'ort'; valid: auto, torch, onnx"):
        parse_config({"datasets": ["digits"], "runtime": "ort"})


def test_an_open_clip_tower_runs_on_onnx_runtime(tiny_model_name):
    on_torch = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu", runtime="torch")
    on_onnx = create_encoder(f"open_clip:{tiny_model_name}/random", device="cpu", runtime="onnx")
    images = _images()[:6]
    assert _cosines(on_torch.encode_images(images), on_onnx.encode_images(images)).min() >= 0.9999


def test_the_preprocessing_without_torchvision_gives_the_same_pixels():
    """The graph-only encoder's Preprocess and timm's torchvision transform agree bit for bit on real images of
    every shape: grey and RGB, small and large, portrait, landscape and square, PNG and JPEG."""
    from imprint.encoders.preprocess import Preprocess

    rng = np.random.default_rng(0)
    images = _images() + [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                          for h, w in ((7, 300), (300, 7), (224, 224), (256, 256), (1000, 333), (31, 32))]
    for architecture in ("lite0", "lite2"):
        transform = create_encoder(architecture, device="cpu", runtime="torch").transform
        ours = Preprocess.of_transform(transform)
        for image in images:
            assert torch.equal(ours(image), transform(image)), (architecture, image.size)


def test_a_cached_graph_runs_without_building_the_model_or_importing_timm(tmp_path):
    """In a fresh process whose graph cache holds Lite0's graph (and the engine choice kept beside it), embedding
    imports neither timm nor torchvision and gives the embeddings of the encoder built in full, under the same
    embedding cache namespace."""
    import shutil
    import subprocess

    from imprint.encoders.factory import BACKENDS
    from imprint.encoders.runtime import graph_cache_dir, graph_key
    from imprint.io.cache import encoder_namespace

    paths = [str(p) for p in sorted(EXAMPLES.glob("*/*.png"))[:3]]
    in_full = BACKENDS.get("timm")("tf_efficientnet_lite0", torch.device("cpu")).use_runtime("auto")
    built = in_full.encode_images([Image.open(p) for p in paths])  # exports the graph into the suite's cache
    (tmp_path / "graphs").mkdir()
    key = graph_key(in_full.id, in_full.weights_id)
    for name in (f"{key}.graph", f"{key}.choice.json"):  # Lite0's alone: the other worker may be writing others
        if (graph_cache_dir() / name).is_file():  # a choice is kept only where two engines are installed
            shutil.copy(graph_cache_dir() / name, tmp_path / "graphs" / name)
    script = ("import sys, numpy as np; from PIL import Image; from imprint.encoders import create_encoder;"
              "from imprint.io.cache import encoder_namespace;"
              "e = create_encoder('lite0', device='cpu'); x = e.encode_images([Image.open(p) for p in sys.argv[1:]]);"
              "print(type(e).__name__, 'timm' in sys.modules, 'torchvision' in sys.modules, encoder_namespace(e));"
              f"np.save('{tmp_path}/x.npy', x)")
    env = {**__import__("os").environ, "IMPRINT_CACHE_DIR": str(tmp_path)}
    again = subprocess.run([sys.executable, "-c", script, *paths], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["GraphEncoder", "False", "False", encoder_namespace(in_full)]
    assert np.array_equal(np.load(tmp_path / "x.npy"), built)


def test_cache_clear_removes_the_graphs_and_nothing_else(tmp_path, encoders, monkeypatch, capsys):
    on_torch, _ = encoders
    monkeypatch.setenv("IMPRINT_CACHE_DIR", str(tmp_path))
    encoder_graph(on_torch, 224, 224, 1, "onnx")
    mine = tmp_path / "graphs" / "notes.graph"
    mine.write_text("a user's file in the cache folder")
    code, out, _ = run(capsys, "cache", "info")
    assert code == 0 and "encoder graphs: 1 in" in out
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and "removed 1 encoder graphs" in out
    assert [p.name for p in (tmp_path / "graphs").iterdir()] == ["notes.graph"]


def test_a_graph_runs_its_first_image_alone_in_the_callers_thread():
    """OpenVINO's binding sets up numpy's C API once, behind a lock two racing threads deadlock on (an embed hung
    so): the first image must run before the pool starts."""
    import threading

    from imprint.encoders.runtime import PerImageGraph

    class Recorder(PerImageGraph):
        width = 2

        def __init__(self) -> None:
            super().__init__(threads=2)
            self.calls: list[tuple[str, int]] = []

        def _one(self, image: np.ndarray) -> np.ndarray:
            self.calls.append((threading.current_thread().name, len(self.calls)))
            return image.reshape(-1)[:2]

    graph = Recorder()
    out = graph(np.arange(8, dtype=np.float32).reshape(4, 2))
    assert graph.calls[0][0] == threading.current_thread().name
    assert all(name.startswith("imprint-") for name, _ in graph.calls[1:])  # the rest in the pool
    np.testing.assert_array_equal(out, np.arange(8, dtype=np.float32).reshape(4, 2))  # order kept
    graph.calls.clear()
    graph(np.zeros((3, 2), dtype=np.float32))
    assert all(name.startswith("imprint-") for name, _ in graph.calls)  # later batches: all in the pool


def test_a_kept_engine_choice_names_the_runtime_without_opening_the_graph(monkeypatch):
    """Where the engine choice of this machine is kept beside the graph, the runtime (and so the embedding cache's
    namespace) is known without compiling the graph: a command whose embeddings are all cached never compiles it."""
    from imprint.encoders import runtime

    measured = create_encoder("lite0", device="cpu")
    label = measured.runtime_id  # opens the graph and measures the engines, unless a choice is kept already
    monkeypatch.setattr(runtime.PerImageGraph, "__init__", None)  # opening a graph on any engine now fails
    again = create_encoder("lite0", device="cpu")
    assert again.runtime_id == label and again.engine == measured.engine != "torch"


def test_an_encoder_keeps_the_engine_it_named_when_another_process_measures_anew(tmp_path, monkeypatch):
    """`fastest` is resolved once per encoder: after another process keeps a different choice, the encoder still
    runs (and names, for its cache namespace) the engine it named first."""
    import json

    from imprint.encoders import runtime

    monkeypatch.setenv("IMPRINT_CACHE_DIR", str(tmp_path))
    encoder = create_encoder("lite0", device="cpu", runtime="onnx")
    encoder_graph(encoder, *encoder.input_size, 1, "onnx")  # the graph, cached: no measure needed for onnx
    choice = tmp_path / "graphs" / f"{graph_key(encoder.id, encoder.weights_id)}.choice.json"
    kept = {"machine": runtime._machine(), "images_per_s": {"onnx": 2.0, "openvino": 1.0}, "agreement": 1.0,
            "fastest": "onnx"}
    choice.write_text(json.dumps(kept))
    fastest = create_encoder("lite0", device="cpu", runtime="auto")  # fastest, where both engines are installed
    named = fastest.engine
    assert named == "onnx"
    choice.write_text(json.dumps({**kept, "fastest": "openvino"}))  # another process measured anew
    image = [Image.open(sorted(EXAMPLES.glob("*/*.png"))[0])]
    fastest.encode_images(image)
    assert fastest.engine == named and next(iter(fastest._graphs.values())).engine == named


def test_processes_measuring_the_engines_at_once_keep_one_choice(tmp_path, monkeypatch):
    """The engines are measured by one process at a time: another that asks meanwhile waits, then reads the
    choice kept (two measuring at once on a busy machine kept different engines, and a resumed `imprint embed`
    then refused its own store as another runtime's). Threads here: the lock holds across holders in a process."""
    import threading

    from imprint.encoders import runtime

    measured, second_asked = [], threading.Event()
    kept_choice = runtime._kept_choice

    def asked(path, machine):
        if threading.current_thread().name == "second":
            second_asked.set()
        return kept_choice(path, machine)

    def measure(model_bytes, size, machine):
        measured.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            assert second_asked.wait(60)  # the second asks while the first measures
        fastest = "onnx" if len(measured) == 1 else "openvino"  # a second measure would choose otherwise
        return {"machine": machine, "images_per_s": {"onnx": 1.0, "openvino": 1.0}, "agreement": 1.0,
                "fastest": fastest}

    monkeypatch.setattr(runtime, "_kept_choice", asked)
    monkeypatch.setattr(runtime, "_measure", measure)
    choices = {}
    folder = tmp_path / "graphs"
    folder.mkdir()
    path = folder / f"{'0' * 32}.choice.json"
    threads = [threading.Thread(name=name, target=lambda name=name: choices.update(
        {name: runtime._measured(b"", (224, 224), path)["fastest"]})) for name in ("first", "second")]
    threads[0].start()
    while not measured:  # the first is measuring
        threading.Event().wait(0.01)
    threads[1].start()
    for thread in threads:
        thread.join(60)
    assert measured == ["first"] and choices == {"first": "onnx", "second": "onnx"}
    assert len(runtime.cached_graphs(folder)) == 2 and runtime.clear_graphs(folder) == 0
    assert not folder.exists()  # the choice and its lock file went, and so the folder
