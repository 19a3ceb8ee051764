"""The encoder interface: an id, a preprocessing transform, an embedding width and batched encoding."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from imprint.core.embedded import Embeddings, tagged
from imprint.core.errors import UserError


class EncoderError(UserError):
    """An encoder that cannot be built: unknown name, missing weights package, unreadable checkpoint, no network."""


class Encoder(ABC):
    """A frozen image model that turns preprocessed images into float32 embeddings."""

    id: str
    embedding_dim: int
    transform: Callable[[Image.Image], Tensor]
    model: nn.Module
    device: torch.device

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """Identity of the weights (a content hash or a tag), so caches never mix models."""

    @abstractmethod
    def _forward(self, pixels: Tensor) -> Tensor:
        """Embeddings of a preprocessed batch on self.device."""

    def export_module(self) -> nn.Module:
        """The encoder as a module from normalised pixels (N x 3 x H x W) to embeddings, on the CPU, for a graph
        export."""
        return _Forward(self._forward_module()).cpu().eval()

    def _forward_module(self) -> nn.Module:
        return self.model

    # CPU convolutions run fastest on small channels-last batches (measured: ~4x at 16 vs 64 images)
    cpu_micro_batch = 16
    runtime = "torch"  # or a graph engine (onnx, openvino, fastest): set by create_encoder (imprint.encoders.runtime)
    _graphs: dict[tuple[int, int], Any] | None = None

    def use_runtime(self, runtime: str) -> Encoder:
        """Run the network on `runtime` (auto, torch, onnx, openvino, openvino-bf16; see
        imprint.encoders.runtime); returns self."""
        from imprint.encoders.runtime import resolve_runtime

        self.runtime, self._graphs = resolve_runtime(runtime, self.device.type), None
        return self

    @property
    def preprocessing_id(self) -> str:
        """What the preprocessing is, for cache keys (the transform's description)."""
        return repr(self.transform)

    @property
    def runtime_id(self) -> str:
        """The runtime and its version ("torch", "onnxruntime 1.20.1", "openvino 2026.4.1", "openvino 2026.4.1
        bf16"): embedding caches and stores are kept apart per runtime. With ``fastest``, the engine measured the
        faster on this machine (the graph is opened and the engines measured where no choice is kept)."""
        from imprint.encoders.runtime import runtime_label

        return runtime_label(self.engine)

    @property
    def engine(self) -> str:
        """What runs the network: torch, onnx or openvino. ``fastest`` is resolved once, from the engine choice
        kept for this machine, else by opening the graph; the encoder then runs every graph on that engine, so its
        embeddings are always of the runtime that its cache namespace names, whatever another process measures
        meanwhile."""
        if self.runtime == "torch":
            return "torch"
        from imprint.encoders.runtime import known_engine

        if self._graphs:
            engine = next(iter(self._graphs.values())).engine
        else:
            engine = known_engine(self, self.runtime) or self._graph(*self.input_size).engine
        self.runtime = engine
        return engine

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the pixels the network takes, as the transform makes them."""
        return tuple(self.transform(Image.new("RGB", (512, 512))).shape[1:])

    @torch.inference_mode()
    def encode_batch(self, pixels: Tensor) -> np.ndarray:
        """Embeddings (float32, n x embedding_dim) of a batch of preprocessed images. On the CPU every image goes
        through a micro-batch of exactly `cpu_micro_batch` images (the last one zero-padded; on a graph engine a
        batch of one), so its embedding is bit for bit the same whatever batch it came in (a lone image would
        otherwise take another kernel: measured up to 1.2e-6 apart) and a resumed store equals an uninterrupted
        one."""
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return self._forward(pixels.to(self.device, non_blocking=True)).float().cpu().numpy()
        if self.runtime != "torch":
            return self._graph(*pixels.shape[2:])(pixels.numpy())
        pieces = []
        for part in pixels.split(self.cpu_micro_batch):
            n = len(part)
            if n < self.cpu_micro_batch:
                part = torch.cat([part, part.new_zeros((self.cpu_micro_batch - n, *part.shape[1:]))])
            pieces.append(self._forward(part.to(self.device).contiguous(memory_format=torch.channels_last))[:n]
                          .float())
        return torch.cat(pieces).cpu().numpy()

    def _graph(self, height: int, width: int) -> Any:
        """The graph for H x W inputs on this encoder's engine, built (or read from the graph cache) on first use,
        with as many threads as torch is set to use."""
        from imprint.encoders.runtime import encoder_graph

        self._graphs = self._graphs or {}
        if (height, width) not in self._graphs:
            self._graphs[(height, width)] = encoder_graph(self, height, width, torch.get_num_threads(), self.runtime)
        return self._graphs[(height, width)]

    def encode_images(self, images: Sequence[Image.Image | np.ndarray], batch_size: int = 64) -> Embeddings:
        """Embeddings of PIL images or uint8 arrays (grey or RGB, converted to RGB), in batches, tagged with
        this encoder's id."""
        out = np.empty((len(images), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([self.transform(_as_rgb(image)) for image in chunk])
            out[start:start + len(chunk)] = self.encode_batch(pixels)
        return tagged(out, self.id)


def _as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    from imprint.data.folder import check_proportions

    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    check_proportions(*image.size)
    return image.convert("RGB")


@contextmanager
def reproducible_init(seed: int = 0) -> Iterator[None]:
    """Random weights the same in every process (an ``.../random`` encoder id names one network, so a saved
    classifier or an export rebuilds the one it was fitted with), without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _Forward(nn.Module):
    """A model's forward as a module of its own (an encoder whose embedding is not its plain forward wraps it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model(pixels)
