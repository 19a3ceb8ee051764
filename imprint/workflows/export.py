"""``imprint export`` as one library call: a saved classifier as one ONNX graph from images to answers
(``imprint.estimator.onnx_export`` builds and checks the graph)."""
from __future__ import annotations

import os

from imprint.estimator.onnx_export import Exported, export_onnx, is_exported_model


def export_file(classifier_path: str | os.PathLike, path: str | os.PathLike, encoder: str | None = None,
                force: bool = False) -> Exported:
    """`imprint export`: the saved classifier at `classifier_path` as an ONNX graph at `path`."""
    from imprint.io.outputs import check_output

    check_output(path, ours=is_exported_model, what="ONNX model", force=force, inputs=[classifier_path])
    from imprint.estimator.classifier import ImprintClassifier

    return export_onnx(ImprintClassifier.load(classifier_path, device="cpu"), path, encoder=encoder, force=True)
