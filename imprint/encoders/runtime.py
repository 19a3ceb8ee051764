"""Where an encoder's network runs: torch, or on the CPU ONNX Runtime or OpenVINO, from a graph exported once and
cached.

Measured on 2 cores (EfficientNet-Lite0, 224 px, benchmarks/bench_folder.py): ONNX Runtime runs the encoder
2.3x faster than torch eager on an Intel Xeon and about 3x on an AMD EPYC (batchnorm folded into the
convolutions, fused activations), with embeddings within cosine 0.9999999 of torch's; OpenVINO (fp32) is 1.4x
faster again on that Xeon, and slower than ONNX Runtime on the EPYC. So ``auto`` measures: on the CPU it runs the
faster of the two engines installed, timed once per machine on the encoder's own graph (and checked to agree with
the other), and torch where neither is installed (and always on a GPU). The graph is exported from the encoder's
own torch module the first time an (encoder, weights, input size, runtime version) is met, checked against torch
on a random batch, and kept in the graph cache with a SHA-256 over it: a file altered on disk is rebuilt, never
run. Every image runs as a batch of its own, so its embedding is bit for bit the same whatever batch it came in.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import queue
import re
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from imprint.core.errors import UserError
from imprint.encoders.preprocess import NotDescribable, Preprocess

RUNTIMES = ("auto", "torch", "onnx", "openvino", "openvino-bf16")
GRAPH_RUNTIMES = ("onnx", "openvino")  # engines that run the encoder's exported ONNX graph on the CPU at fp32
LOWER_PRECISION = ("openvino-bf16",)  # asked for by name only, never chosen by auto (embeddings change)
FASTEST = "fastest"  # auto on the CPU with both engines installed: the faster one, measured once per machine
PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}
AGREEMENT = 0.9999  # least cosine between the embeddings of an engine and of torch (or of the other engine)
OPSET = 17
MAGIC = b"IMPRINT-GRAPH2"
GRAPH_FORMAT = 1  # bump when the exported graph changes for the same encoder
GRAPH_NAME = re.compile(r"[0-9a-f]{32}\.graph")
CHOICE_NAME = re.compile(r"[0-9a-f]{32}\.choice\.json")
CHOICE_LOCK_NAME = re.compile(r"\.[0-9a-f]{32}\.choice\.json\.lock")  # held while one process measures


class RuntimeChoiceError(UserError):
    """A runtime that does not exist, is not installed, or cannot run on the device asked for."""


def installed(runtime: str) -> bool:
    """Whether the package of a graph engine is installed (found without importing it)."""
    name = PACKAGES[runtime]
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def engine_version(runtime: str) -> str | None:
    """A graph engine's version, or None when it is not installed (read from the package's metadata where it can
    be: importing OpenVINO takes 0.4 s)."""
    if not installed(runtime):
        return None
    try:
        return importlib.metadata.version(PACKAGES[runtime])
    except importlib.metadata.PackageNotFoundError:  # another distribution of the module (onnxruntime-gpu, ...)
        module = importlib.import_module(PACKAGES[runtime])
        return str(getattr(module, "__version__", None) or module.get_version())


def runtime_label(engine: str) -> str:
    """What ran an encoder, as embedding caches and stores record it: "torch", "onnxruntime 1.20.1",
    "openvino 2026.4.1", "openvino 2026.4.1 bf16"."""
    if engine == "torch":
        return "torch"
    return f"{PACKAGES[engine]} {engine_version(engine)}" + (" bf16" if engine in LOWER_PRECISION else "")


def runtime_flag(runtime_id: str) -> str:
    """The --runtime value that runs an encoder as `runtime_id` says ("openvino 2026.4.1" -> "openvino")."""
    words = runtime_id.split(" ")
    if words[-1] == "bf16":
        return "openvino-bf16"
    return next((runtime for runtime, name in PACKAGES.items() if name == words[0]), "torch")


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AVX512-BF16 or AMX); without it it would quietly run fp32."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of two embedding arrays."""
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def onnxruntime_version() -> str | None:
    """ONNX Runtime's version, or None when it is not installed."""
    return engine_version("onnx")


def resolve_runtime(requested: str, device_type: str) -> str:
    """``torch``, ``onnx``, ``openvino``, ``openvino-bf16`` or ``fastest`` (the faster fp32 engine, measured on
    first use) for `requested` (one of RUNTIMES) on a device of `device_type`, or a one-line error naming the
    fix."""
    if requested not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {requested!r}; valid: {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    if device_type != "cpu":
        if requested in GRAPH_RUNTIMES + LOWER_PRECISION:
            raise RuntimeChoiceError(f"runtime {requested!r} runs the encoder on the CPU, not on {device_type}; use "
                                     "--runtime torch (or auto) on a GPU, or --device cpu")
        return "torch"
    if requested in GRAPH_RUNTIMES + LOWER_PRECISION:
        if not installed(requested):
            raise RuntimeChoiceError(f"runtime {requested!r} needs {PACKAGES[requested]}, which is not installed: "
                                     f"pip install {PACKAGES[requested]} (or use --runtime auto)")
        if requested in LOWER_PRECISION and not cpu_has_bf16():
            raise RuntimeChoiceError(f"runtime {requested!r} needs a CPU with bf16 instructions (AVX512-BF16 or "
                                     "AMX) and this one has none; use --runtime openvino (fp32)")
        return requested
    engines = [runtime for runtime in GRAPH_RUNTIMES if installed(runtime)]
    return "torch" if not engines else engines[0] if len(engines) == 1 else FASTEST


def graph_cache_dir() -> Path:
    """$IMPRINT_CACHE_DIR/graphs, else the user cache folder's (e.g. ~/.cache/imprint/graphs)."""
    import platformdirs

    return Path(os.environ.get("IMPRINT_CACHE_DIR") or platformdirs.user_cache_dir("imprint")) / "graphs"


def graph_key(encoder_id: str, weights_id: str) -> str:
    """Everything that changes the exported graph: the encoder, its weights and the versions of ONNX Runtime,
    torch (the exporter) and this format."""
    import torch

    text = "\n".join([encoder_id, weights_id, f"onnxruntime {onnxruntime_version()}", f"torch {torch.__version__}",
                      f"opset {OPSET}", f"format {GRAPH_FORMAT}"])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class PerImageGraph:
    """An encoder's network (normalised pixels N x 3 x H x W -> embeddings) run by a graph engine, each image alone
    on one thread, `threads` of them at once: an image's embedding is the same bits whatever batch it came in, and
    this is the engines' fastest way on a small CPU (ONNX Runtime on 2 cores: 194 images/s, against 143 with two
    threads per image and 81 in batches of sixteen)."""

    engine = ""
    width = 0

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None
        # The first image runs alone in the caller's thread: OpenVINO's Python binding sets up numpy's C API on
        # first use behind a once-lock that deadlocks when two threads race for it (an embed hung so in a test).
        self._started = False

    def _one(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Embeddings (float32) of a batch."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        rows = []
        if not self._started and len(pixels):
            rows.append(self._one(pixels[0]))
            self._started = True
            pixels = pixels[1:]
        if self.threads > 1 and len(pixels) > 1:
            self._pool = self._pool or ThreadPoolExecutor(self.threads, thread_name_prefix=f"imprint-{self.engine}")
            rows.extend(self._pool.map(self._one, pixels))  # the engines let go of the GIL while they run
        else:
            rows.extend(self._one(image) for image in pixels)
        return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, self.width), np.float32)


class OnnxEncoderGraph(PerImageGraph):
    """The graph on an ONNX Runtime session (CPU, all graph optimisations, one thread per image)."""

    engine = "onnx"

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        import onnxruntime

        super().__init__(threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.width = int(self.session.get_outputs()[0].shape[1])

    def _one(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: image[None]})[0][0]


class OpenVinoEncoderGraph(PerImageGraph):
    """The graph compiled by OpenVINO for the CPU at fp32 (its default precision is lower on CPUs with bf16:
    measured cosine 0.996), one infer request per image, `threads` requests at once. Its threads are not pinned
    to cores: pinned, two processes of one thread each shared one core (25 images/s each on 2 cores, 49 unpinned)."""

    engine = "openvino"
    precision = "f32"

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        import openvino

        super().__init__(threads)
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(model_bytes), "CPU", {
            "INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.threads,
            "INFERENCE_NUM_THREADS": self.threads, "ENABLE_CPU_PINNING": False})
        self.width = int(compiled.output(0).get_partial_shape()[1].get_length())
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.threads):
            self._requests.put(compiled.create_infer_request())

    def _one(self, image: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            return request.infer({0: image[None]})[0][0].copy()
        finally:
            self._requests.put(request)


class OpenVinoBf16EncoderGraph(OpenVinoEncoderGraph):
    """The graph compiled by OpenVINO at bf16 (``--runtime openvino-bf16``, asked for by name only): about twice
    the images per second of fp32 on a CPU with AMX, embeddings within cosine 0.99 of fp32's (accuracy change on
    the Table 1 tasks: docs/benchmarks.md)."""

    engine = "openvino-bf16"
    precision = "bf16"


ENGINES: dict[str, type[PerImageGraph]] = {"onnx": OnnxEncoderGraph, "openvino": OpenVinoEncoderGraph,
                                           "openvino-bf16": OpenVinoBf16EncoderGraph}


def encoder_graph(encoder: Any, height: int, width: int, threads: int, runtime: str,
                  cache_dir: Path | None = None) -> PerImageGraph:
    """The encoder's graph for H x W inputs on `runtime` (an engine, or ``fastest``): read from the graph cache
    when there and intact, else exported, checked against torch and cached (a cache that cannot be written is
    skipped with a warning)."""
    folder = cache_dir or graph_cache_dir()
    key = graph_key(encoder.id, encoder.weights_id)
    stored = read_graph(folder / f"{key}.graph")
    if stored is not None and stored[0].get("height") == height and stored[0].get("width") == width:
        model_bytes = stored[1]
    else:
        model_bytes = _export(encoder, height, width)
        reference = "onnx" if installed("onnx") else "openvino"  # fastest needs both, so only openvino is left
        _check_against_torch(ENGINES[reference](model_bytes, 1), encoder, height, width)
        _write_graph(folder / f"{key}.graph", _card(encoder, height, width), model_bytes)
    return open_graph(model_bytes, runtime, threads, (height, width), folder / f"{key}.choice.json")


def open_graph(model_bytes: bytes, runtime: str, threads: int, size: tuple[int, int],
               choice_path: Path) -> PerImageGraph:
    """The graph on `runtime`: that engine, or the faster of the two (``fastest``), as measured on this machine
    (the measure is kept beside the graph, and taken again when the CPU, its cores or a version change).
    OpenVINO runs a graph only once it was seen to agree with ONNX Runtime on it."""
    if runtime == "onnx" or runtime in LOWER_PRECISION or (runtime == "openvino" and not installed("onnx")):
        return ENGINES[runtime](model_bytes, threads)
    choice = _measured(model_bytes, size, choice_path)
    if runtime == "openvino" and not choice["agreement"] >= AGREEMENT:  # NaN too
        raise RuntimeChoiceError(f"OpenVINO's embeddings disagree with ONNX Runtime's on this encoder (cosine "
                                 f"{choice['agreement']:.5f}); use --runtime onnx, and please report it")
    return ENGINES[runtime if runtime in GRAPH_RUNTIMES else choice["fastest"]](model_bytes, threads)


def _measured(model_bytes: bytes, size: tuple[int, int], choice_path: Path) -> dict[str, Any]:
    """Each engine's images per second on this machine (with every core it may use) and their agreement, from
    `choice_path` when it was measured here with these versions, else measured now (random images, four
    alternating rounds, the best of each: a second or two) and kept. Not per thread count of the command: the
    choice, and so the embedding cache's namespace, must not depend on how busy the machine was when a command
    started. One process measures at a time, under a lock beside the kept choice, and the others then read its
    choice: two processes measuring at once on a busy machine could keep different engines, and a command run
    after one of them would embed on another engine than it (a resumed ``imprint embed`` refused its own store)."""
    from imprint.core.atomic import atomic_write_bytes, locked

    machine = _machine()
    kept = _kept_choice(choice_path, machine)
    if kept is not None:
        return kept
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(choice_path))
        except OSError:  # no lock file can be made there (a read-only cache): measured, not kept
            return _measure(model_bytes, size, machine)
        kept = _kept_choice(choice_path, machine)  # measured by another process while this one waited
        if kept is not None:
            return kept
        choice = _measure(model_bytes, size, machine)
        try:
            atomic_write_bytes(choice_path, json.dumps(choice).encode(), durable=False)
        except OSError:
            pass  # measured again next time
        return choice


def _measure(model_bytes: bytes, size: tuple[int, int], machine: dict[str, Any]) -> dict[str, Any]:
    """The engine choice measured now: each engine's best rate over four alternating rounds, and their agreement."""
    threads = machine["cores"]
    pixels = np.random.default_rng(0).normal(size=(8 * threads, 3, *size)).astype(np.float32)
    graphs = {runtime: ENGINES[runtime](model_bytes, threads) for runtime in GRAPH_RUNTIMES}
    rates, outputs = dict.fromkeys(GRAPH_RUNTIMES, 0.0), {}
    for _ in range(4):  # alternating rounds, the best of each: other work on the machine hits both alike
        for runtime, graph in graphs.items():
            start = time.perf_counter()
            outputs[runtime] = graph(pixels)
            rates[runtime] = max(rates[runtime], len(pixels) / (time.perf_counter() - start))
    agreement = least_cosine(outputs["onnx"], outputs["openvino"])
    fastest = "openvino" if agreement >= AGREEMENT and rates["openvino"] > rates["onnx"] else "onnx"
    return {"machine": machine, "images_per_s": rates, "agreement": agreement, "fastest": fastest}


def _machine() -> dict[str, Any]:
    """What an engine choice was measured on: the CPU, the cores imprint may use, the engines' versions."""
    from imprint.core.machine import available_cores

    return {"cpu": _cpu_name(), "cores": available_cores(),
            "versions": {runtime: engine_version(runtime) for runtime in GRAPH_RUNTIMES}}


def _kept_choice(choice_path: Path, machine: dict[str, Any]) -> dict[str, Any] | None:
    """The engine choice kept at `choice_path` when it was measured on `machine` (this one: `_machine()`)."""
    try:
        kept = json.loads(choice_path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(kept, dict) and kept.get("machine") == machine and kept.get("fastest") in GRAPH_RUNTIMES \
            and isinstance(kept.get("agreement"), float):
        return kept
    return None


def known_engine(encoder: Any, runtime: str, cache_dir: Path | None = None) -> str | None:
    """The engine that runs `encoder` on `runtime`, where it is known without opening the graph: the runtime
    itself when it names an engine, else (``fastest``) the choice measured on this machine and kept beside the
    graph; None when the graph must be opened (and the engines measured) to know. A command whose every
    embedding is cached then never compiles the graph (0.7 s for Lite0 on OpenVINO)."""
    if runtime in ENGINES:
        return runtime
    kept = _kept_choice((cache_dir or graph_cache_dir()) / f"{graph_key(encoder.id, encoder.weights_id)}.choice.json",
                        _machine())
    return None if kept is None else kept["fastest"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _card(encoder: Any, height: int, width: int) -> dict[str, Any]:
    """What the graph cache says about an encoder beside its graph: enough to run it without building it."""
    try:
        preprocessing = Preprocess.of_transform(encoder.transform).describe()
    except NotDescribable:
        preprocessing = None  # the graph still runs; the encoder is built to preprocess
    return {"encoder": encoder.id, "weights": encoder.weights_id, "dim": int(encoder.embedding_dim),
            "transform": encoder.preprocessing_id, "preprocessing": preprocessing, "height": height, "width": width}


def _export(encoder: Any, height: int, width: int) -> bytes:
    import torch

    module = encoder.export_module()
    example = torch.zeros((1, 3, height, width), dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), buffer, input_names=["pixels"], output_names=["embeddings"],
                              dynamic_axes={"pixels": {0: "n"}, "embeddings": {0: "n"}}, opset_version=OPSET,
                              dynamo=False)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise RuntimeChoiceError(f"{encoder.id} cannot run on ONNX Runtime ({reason}); use --runtime torch"
                                     ) from None
    return buffer.getvalue()


def _check_against_torch(graph: PerImageGraph, encoder: Any, height: int, width: int) -> None:
    """The graph's embeddings of a random batch agree with torch's to cosine 0.9999, else it is not used."""
    import torch

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn((2, 3, height, width), generator=generator)
    with torch.no_grad():
        want = encoder.export_module()(pixels).float().numpy()
    got = graph(pixels.numpy())
    cosine = least_cosine(got, want) if got.shape == want.shape else 0.0
    if not cosine >= AGREEMENT:  # NaN too
        raise RuntimeChoiceError(f"{encoder.id} gives other embeddings on {PACKAGES[graph.engine]} than on torch "
                                 f"(cosine {cosine:.5f}); use --runtime torch, and please report it")


def read_graph(path: Path) -> tuple[dict[str, Any], bytes] | None:
    """(card, graph) stored at `path`, or None when it is missing, not one of ours or fails its checksum (then it
    is rebuilt, never run)."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + 32
    if len(blob) <= head + 4 or not blob.startswith(MAGIC) or \
            hashlib.sha256(blob[head:]).digest() != blob[len(MAGIC):head]:
        return None
    size = int.from_bytes(blob[head:head + 4], "big")
    try:
        card = json.loads(blob[head + 4:head + 4 + size])
    except ValueError:
        return None
    return (card, blob[head + 4 + size:]) if isinstance(card, dict) else None


def cached_graphs(folder: Path | None = None) -> list[Path]:
    """The graph cache's own files: graphs (names of their pattern that start with its signature), the measures
    of the engines kept beside them and their empty lock files (nothing else there is counted or removed)."""
    folder = folder or graph_cache_dir()
    if not folder.is_dir():
        return []
    found = []
    for item in folder.iterdir():
        if not item.is_file() or item.is_symlink():
            continue
        if GRAPH_NAME.fullmatch(item.name):
            with open(item, "rb") as handle:
                if handle.read(len(MAGIC)) == MAGIC:
                    found.append(item)
        elif CHOICE_NAME.fullmatch(item.name):
            try:
                if "machine" in json.loads(item.read_text()):
                    found.append(item)
            except (OSError, ValueError, TypeError):
                pass
        elif CHOICE_LOCK_NAME.fullmatch(item.name) and item.stat().st_size == 0:
            found.append(item)
    return found


def clear_graphs(folder: Path | None = None) -> int:
    """Delete the cached graphs (rebuilt on next use) and their measures, and the folder when it is left empty;
    returns how many graphs there were."""
    folder = folder or graph_cache_dir()
    files = cached_graphs(folder)
    for item in files:
        item.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
    return sum(GRAPH_NAME.fullmatch(item.name) is not None for item in files)


def _write_graph(path: Path, card: dict[str, Any], model_bytes: bytes) -> None:
    from imprint.core.atomic import atomic_write_bytes

    text = json.dumps(card).encode()
    body = len(text).to_bytes(4, "big") + text + model_bytes
    try:
        atomic_write_bytes(path, MAGIC + hashlib.sha256(body).digest() + body)
    except OSError as exc:
        warnings.warn(f"the graph cache {path.parent} cannot be written ({exc.strerror or exc}); the encoder graph "
                      "will be exported again next time (set IMPRINT_CACHE_DIR to a writable folder)", stacklevel=3)
