"""Where an encoder's network runs: torch, or ONNX Runtime on the CPU from a graph exported once and cached.

Measured on 2 cores (EfficientNet-Lite0, 224 px, benchmarks/bench_folder.py): ONNX Runtime runs the encoder
2.3x faster than torch eager on an Intel Xeon and about 3x on an AMD EPYC (batchnorm folded into the
convolutions, fused activations), with embeddings within cosine 0.9999999 of torch's. ``auto`` picks ONNX
Runtime on the CPU when it is installed and torch otherwise (and always on a GPU). The graph is exported from the
encoder's own torch module the first time an (encoder, weights, input size, runtime version) is met, checked
against torch on a random batch, and kept in the graph cache with a SHA-256 over it: a file altered on disk is
rebuilt, never run. Every image runs as a batch of its own, so its embedding is bit for bit the same whatever
batch it came in.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from imprint.encoders.base import Encoder
from imprint.encoders.preprocess import NotDescribable, Preprocess
from imprint.errors import UserError

RUNTIMES = ("auto", "torch", "onnx")
OPSET = 17
MAGIC = b"IMPRINT-GRAPH2"
GRAPH_FORMAT = 1  # bump when the exported graph changes for the same encoder
GRAPH_NAME = re.compile(r"[0-9a-f]{32}\.graph")


class RuntimeChoiceError(UserError):
    """A runtime that does not exist, is not installed, or cannot run on the device asked for."""


def onnxruntime_version() -> str | None:
    """ONNX Runtime's version, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def resolve_runtime(requested: str, device_type: str) -> str:
    """``torch`` or ``onnx`` for `requested` (auto, torch, onnx) on a device of `device_type`, or a one-line
    error naming the fix."""
    if requested not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {requested!r}; valid: {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    if device_type != "cpu":
        if requested == "onnx":
            raise RuntimeChoiceError(f"runtime 'onnx' runs the encoder on the CPU, not on {device_type}; use "
                                     "--runtime torch (or auto) on a GPU, or --device cpu")
        return "torch"
    if onnxruntime_version() is None:
        if requested == "onnx":
            raise RuntimeChoiceError("runtime 'onnx' needs ONNX Runtime, which is not installed: pip install "
                                     "onnxruntime (or use --runtime torch)")
        return "torch"
    return "onnx"


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


class OnnxEncoderGraph:
    """An encoder's network (normalised pixels N x 3 x H x W -> embeddings) as an ONNX Runtime session.

    Images run one at a time, each on one thread, `threads` of them at once: an image's embedding is the same
    bits whatever batch it came in, and this is ONNX Runtime's fastest way on a small CPU (measured on 2 cores:
    194 images/s, against 143 with two threads per image and 81 in batches of sixteen)."""

    def __init__(self, model_bytes: bytes, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None

    def _one(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: image[None]})[0][0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Embeddings (float32) of a batch."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if self.threads > 1 and len(pixels) > 1:
            self._pool = self._pool or ThreadPoolExecutor(self.threads, thread_name_prefix="imprint-onnx")
            rows = list(self._pool.map(self._one, pixels))  # ONNX Runtime lets go of the GIL while it runs
        else:
            rows = [self._one(image) for image in pixels]
        return np.stack(rows).astype(np.float32, copy=False) if rows else \
            np.zeros((0, self.session.get_outputs()[0].shape[1]), dtype=np.float32)

    @classmethod
    def for_encoder(cls, encoder: Any, height: int, width: int, threads: int,
                    cache_dir: Path | None = None) -> OnnxEncoderGraph:
        """The encoder's graph for H x W inputs: read from the graph cache when there and intact, else exported,
        checked against torch and cached (a cache that cannot be written is skipped with a warning)."""
        path = (cache_dir or graph_cache_dir()) / f"{graph_key(encoder.id, encoder.weights_id)}.graph"
        stored = read_graph(path)
        if stored is not None and stored[0].get("height") == height and stored[0].get("width") == width:
            return cls(stored[1], threads)
        model_bytes = _export(encoder, height, width)
        graph = cls(model_bytes, threads)
        _check_against_torch(graph, encoder, height, width)
        _write_graph(path, _card(encoder, height, width), model_bytes)
        return graph


class GraphEncoder(Encoder):
    """An encoder run from its cached ONNX graph alone: its id, weights, width and preprocessing come from the
    graph's card, so neither the torch model nor timm and torchvision are loaded (a cold ``imprint fit`` 1.7 s
    sooner). Whatever needs the torch model itself (an export) builds it on first use with `build`."""

    runtime = "onnx"

    def __init__(self, card: dict[str, Any], model_bytes: bytes, build: Callable[[], Encoder]) -> None:
        import torch

        self.id, self._weights_id = str(card["encoder"]), str(card["weights"])
        self.embedding_dim = int(card["dim"])
        self.transform = Preprocess.from_description(card["preprocessing"])
        self._transform_id = str(card["transform"])
        self.device = torch.device("cpu")
        self._model_bytes, self._size, self._build, self._full = model_bytes, (card["height"], card["width"]), \
            build, None

    @classmethod
    def cached(cls, encoder_id: str, weights_id: str, build: Callable[[], Encoder],
               cache_dir: Path | None = None) -> GraphEncoder | None:
        """The encoder from the graph cache, or None when its graph is not there (or not usable alone)."""
        stored = read_graph((cache_dir or graph_cache_dir()) / f"{graph_key(encoder_id, weights_id)}.graph")
        if stored is None or stored[0].get("preprocessing") is None or stored[0].get("encoder") != encoder_id or \
                stored[0].get("weights") != weights_id:
            return None
        try:
            return cls(stored[0], stored[1], build)
        except (KeyError, TypeError, ValueError):  # a card this version does not read: build as usual
            return None

    @property
    def weights_id(self) -> str:
        return self._weights_id

    @property
    def preprocessing_id(self) -> str:
        return self._transform_id

    def use_runtime(self, runtime: str) -> Encoder:
        if resolve_runtime(runtime, "cpu") != "onnx":
            return self.full.use_runtime(runtime)
        return self

    def _graph(self, height: int, width: int) -> Any:
        import torch

        if (height, width) != tuple(self._size):
            return self.full._graph(height, width)
        if self._graphs is None:
            self._graphs = {(height, width): OnnxEncoderGraph(self._model_bytes, torch.get_num_threads())}
        return self._graphs[(height, width)]

    @property
    def full(self) -> Encoder:
        """The encoder with its torch model, built on first use."""
        if self._full is None:
            self._full = self._build()
            self._full.runtime = "onnx"
        return self._full

    @property
    def model(self) -> Any:  # type: ignore[override]
        return self.full.model

    def _forward(self, pixels: Any) -> Any:
        return self.full._forward(pixels)

    def _forward_module(self) -> Any:
        return self.full._forward_module()


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


def _check_against_torch(graph: OnnxEncoderGraph, encoder: Any, height: int, width: int) -> None:
    """The graph's embeddings of a random batch agree with torch's to cosine 0.9999, else it is not used."""
    import torch

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn((2, 3, height, width), generator=generator)
    with torch.no_grad():
        want = encoder.export_module()(pixels).float().numpy()
    got = graph(pixels.numpy())
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
    if got.shape != want.shape or not np.all(cosine >= 0.9999):
        raise RuntimeChoiceError(f"{encoder.id} gives other embeddings on ONNX Runtime than on torch (cosine "
                                 f"{float(np.min(cosine)) if got.shape == want.shape else 0:.5f}); use --runtime "
                                 "torch, and please report it")


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
    """The graph files in the graph cache: names of its pattern that start with its signature (nothing else
    there is counted or removed)."""
    folder = folder or graph_cache_dir()
    if not folder.is_dir():
        return []
    found = []
    for item in folder.iterdir():
        if GRAPH_NAME.fullmatch(item.name) and item.is_file() and not item.is_symlink():
            with open(item, "rb") as handle:
                if handle.read(len(MAGIC)) == MAGIC:
                    found.append(item)
    return found


def clear_graphs(folder: Path | None = None) -> int:
    """Delete the cached graphs (rebuilt on next use) and the folder when it is left empty; returns how many."""
    folder = folder or graph_cache_dir()
    graphs = cached_graphs(folder)
    for graph in graphs:
        graph.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
    return len(graphs)


def _write_graph(path: Path, card: dict[str, Any], model_bytes: bytes) -> None:
    from imprint.atomic import atomic_write_bytes

    text = json.dumps(card).encode()
    body = len(text).to_bytes(4, "big") + text + model_bytes
    try:
        atomic_write_bytes(path, MAGIC + hashlib.sha256(body).digest() + body)
    except OSError as exc:
        warnings.warn(f"the graph cache {path.parent} cannot be written ({exc.strerror or exc}); the encoder graph "
                      "will be exported again next time (set IMPRINT_CACHE_DIR to a writable folder)", stacklevel=3)
