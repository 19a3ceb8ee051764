"""An encoder run from its cached ONNX graph alone (``imprint.encoders.runtime``): what ``create_encoder`` gives
when the graph of the encoder asked for is in the graph cache, so a cold command need not load the torch model."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imprint.encoders.base import Encoder
from imprint.encoders.preprocess import Preprocess
from imprint.encoders.runtime import graph_cache_dir, graph_key, open_graph, read_graph, resolve_runtime


class GraphEncoder(Encoder):
    """An encoder run from its cached ONNX graph alone: its id, weights, width and preprocessing come from the
    graph's card, so neither the torch model nor timm and torchvision are loaded (a cold ``imprint fit`` 1.7 s
    sooner). Whatever needs the torch model itself (an export) builds it on first use with `build`."""

    def __init__(self, card: dict[str, Any], model_bytes: bytes, build: Callable[[], Encoder], runtime: str,
                 choice_path: Path) -> None:
        import torch

        self.runtime, self._choice_path = runtime, choice_path
        self.id, self._weights_id = str(card["encoder"]), str(card["weights"])
        self.embedding_dim = int(card["dim"])
        self.transform = Preprocess.from_description(card["preprocessing"])
        self._transform_id = str(card["transform"])
        self.device = torch.device("cpu")
        self._model_bytes, self._size, self._build, self._full = model_bytes, (card["height"], card["width"]), \
            build, None

    @classmethod
    def cached(cls, encoder_id: str, weights_id: str, build: Callable[[], Encoder], runtime: str,
               cache_dir: Path | None = None) -> GraphEncoder | None:
        """The encoder on `runtime` (a graph engine, or ``fastest``) from the graph cache, or None when its graph
        is not there (or not usable alone)."""
        key, folder = graph_key(encoder_id, weights_id), cache_dir or graph_cache_dir()
        stored = read_graph(folder / f"{key}.graph")
        if stored is None or stored[0].get("preprocessing") is None or stored[0].get("encoder") != encoder_id or \
                stored[0].get("weights") != weights_id:
            return None
        try:
            return cls(stored[0], stored[1], build, runtime, folder / f"{key}.choice.json")
        except (KeyError, TypeError, ValueError):  # a card this version does not read: build as usual
            return None

    @property
    def weights_id(self) -> str:
        return self._weights_id

    @property
    def preprocessing_id(self) -> str:
        return self._transform_id

    def use_runtime(self, runtime: str) -> Encoder:
        resolved = resolve_runtime(runtime, "cpu")
        if resolved == "torch":
            return self.full.use_runtime(runtime)
        self.runtime, self._graphs = resolved, None
        return self

    def _graph(self, height: int, width: int) -> Any:
        import torch

        if (height, width) != tuple(self._size):
            self.full.runtime = self.runtime
            return self.full._graph(height, width)
        if self._graphs is None:
            self._graphs = {(height, width): open_graph(self._model_bytes, self.runtime, torch.get_num_threads(),
                                                        (height, width), self._choice_path)}
        return self._graphs[(height, width)]

    @property
    def full(self) -> Encoder:
        """The encoder with its torch model, built on first use."""
        if self._full is None:
            self._full = self._build()
            self._full.runtime = self.runtime
        return self._full

    @property
    def model(self) -> Any:  # type: ignore[override]
        return self.full.model

    def _forward(self, pixels: Any) -> Any:
        return self.full._forward(pixels)

    def _forward_module(self) -> Any:
        return self.full._forward_module()
