"""One ONNX graph from images to answers: the encoder's normalisation, the encoder, the whole imprinted pipeline
(norm_inf, the head, the aggregation, the zero-shot text term), the calibrated probabilities and, where the
classifier rejects, the unknown score with its threshold.

Input ``images``: uint8, N x H x W x 3 (RGB), already resized and centre-cropped to the encoder's input size
the way the encoder's own preprocessing does it (``preprocessing`` in the model's metadata says how:
``examples/onnx_predict.py`` does it with Pillow). Outputs: ``scores`` (N x K class scores, as
``decision_function``), ``probabilities`` (N x K, as ``predict_proba``), ``label`` (N, the index of the best
class, as ``predict`` without rejection) and, with a rejection score, ``unknown_score`` (N) and ``accepted`` (N,
bool: the score at or below the threshold). The model's metadata names the classes, the encoder, the settings,
the threshold and imprint's version. The batch size is free.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imprint.core.errors import UserError, printable

if TYPE_CHECKING:
    from torch import Tensor, nn

OPSET = 17
FORMAT = "imprint-onnx"


class ExportError(UserError):
    """A classifier or encoder that cannot be exported, with why."""


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the file, its classes, the encoder inside and the image size the graph takes."""

    path: Path
    n_classes: int
    encoder: str
    height: int
    width: int


def export_onnx(classifier: Any, path: str | os.PathLike, encoder: Any = None, force: bool = False) -> Exported:
    """Write `classifier` (with `encoder`, by default the one it records when imprint may build it) as one ONNX
    graph from images to answers. The graph is checked against imprint's own answers on random images before it
    is kept."""
    import torch

    from imprint import __version__
    from imprint.core.atomic import atomic_write_bytes
    from imprint.encoders import create_encoder
    from imprint.encoders.factory import self_contained
    from imprint.encoders.preprocess import NotDescribable, Preprocess
    from imprint.io.outputs import check_output

    check_output(path, ours=is_exported_model, what="ONNX model", force=force)
    if encoder is None:
        if classifier.encoder_id_ is None:
            raise ExportError("the classifier does not record its encoder; pass encoder= (--encoder ID)")
        if not self_contained(classifier.encoder_id_):
            raise ExportError(f"the classifier was fitted with {printable(classifier.encoder_id_)}, which imprint "
                              "does not build from what a file says; pass it yourself: --encoder ID")
        encoder = create_encoder(classifier.encoder_id_, device="cpu", runtime="torch")
    elif isinstance(encoder, str):
        encoder = create_encoder(encoder, device="cpu", runtime="torch")
    if classifier.encoder_id_ is not None and encoder.id != classifier.encoder_id_:
        raise ExportError(f"the classifier was fitted with {printable(classifier.encoder_id_)}, not {encoder.id}")
    if encoder.embedding_dim != classifier.n_features_in_:
        raise ExportError(f"{encoder.id} gives {encoder.embedding_dim}-dimensional embeddings but the classifier "
                          f"expects {classifier.n_features_in_}")
    try:
        preprocessing = Preprocess.of_transform(encoder.transform).describe()
    except NotDescribable as exc:
        raise ExportError(f"the preprocessing of {encoder.id} has {exc}, which an exported graph's users cannot "
                          "repeat; only shortest-side resizing, a centre crop and a normalisation are exported"
                          ) from None
    module = _module(classifier, encoder, preprocessing).eval()
    height, width = preprocessing["crop"]
    example = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
    outputs = ["scores", "probabilities", "label"] + (["unknown_score", "accepted"] if module.rejector else [])
    buffer = _export(module, example, outputs)
    model = _with_metadata(buffer, {
        "format": FORMAT, "imprint_version": __version__, "encoder": encoder.id,
        "classes": json.dumps([_plain(c) for c in classifier.classes_.tolist()]),
        "settings": json.dumps({k: _plain(v) for k, v in classifier.get_params().items() if k != "device"}),
        "tuned": json.dumps({k: _plain(v) for k, v in classifier.tuned_.items()}),
        "preprocessing": json.dumps(preprocessing), "outputs": json.dumps(outputs),
        "threshold": json.dumps(None if module.threshold is None else float(module.threshold)),
        "unknown_label": json.dumps(_plain(classifier.unknown_label_) if module.rejector else None)})
    _check(model, module, example, outputs)
    return Exported(atomic_write_bytes(path, model), len(classifier.classes_), encoder.id, height, width)


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _module(classifier: Any, encoder: Any, preprocessing: dict[str, Any]) -> nn.Module:
    """The torch module to trace: uint8 images -> the classifier's answers."""
    from imprint.estimator.torch_module import ImagesToAnswers

    classifier.pipeline_.solve()
    head = classifier.to_torch()
    rejector, threshold = None, None
    if classifier.open_set_ is not None and classifier.open_set_.rejector is not None:
        import copy

        rejector = copy.deepcopy(classifier.open_set_.rejector)
        for name, value in rejector.tensors().items():
            setattr(rejector, name, value.detach().cpu())
        threshold = float(classifier.threshold_)
    return ImagesToAnswers(encoder.export_module(), preprocessing, head, head.temperature, head.log_logits, rejector,
                           threshold)


def _export(module: nn.Module, example: Tensor, outputs: list[str]) -> bytes:
    """The module traced to ONNX (TorchScript tracing: every stage's forward is traced as it runs)."""
    import io

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), buffer, input_names=["images"], output_names=outputs,
                              dynamic_axes={"images": {0: "n"}, **{name: {0: "n"} for name in outputs}},
                              opset_version=OPSET, dynamo=False)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ExportError(f"this classifier cannot be exported to ONNX: {reason}") from None
    return buffer.getvalue()


def _with_metadata(model_bytes: bytes, metadata: dict[str, str]) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.doc_string = "imprint: images (uint8 N x H x W x 3, resized and cropped) to class scores and labels"
    return model.SerializeToString()


def _check(model_bytes: bytes, module: nn.Module, example: Tensor, outputs: list[str]) -> None:
    """The graph's answers on a batch of random images equal the module's (scores within 1e-4 relative)."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    images = torch.randint(0, 256, (3, *example.shape[1:]), dtype=torch.uint8)
    got = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        want = module(images)
    scale = float(want[0].abs().max()) + 1e-12
    if not np.allclose(got[0], want[0].numpy(), rtol=1e-4, atol=1e-4 * scale):
        raise ExportError("the exported graph's scores differ from imprint's own; this is a bug in imprint, please "
                          "report it")


def is_exported_model(path: Path) -> bool:
    """Whether `path` is an ONNX model imprint exported (its metadata names the format)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return any(p.key == "format" and p.value == FORMAT for p in model.metadata_props)
    except Exception:  # not ONNX, unreadable: not ours
        return False

