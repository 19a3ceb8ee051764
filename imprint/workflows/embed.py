"""``imprint embed`` as one library call: embed an image folder into an embeddings file or a memory-mapped store,
resumable, locally or with Ray (``embed_folder``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imprint.core.errors import printable
from imprint.workflows import WorkflowError
from imprint.workflows.embedder import Embedder, EmbedOptions


@dataclass
class EmbedReport:
    """What ``embed_folder`` wrote: how many images of how many classes, with which encoder, and which could not
    be read."""

    output: Path
    embedded: int
    classes: int
    encoder: str
    store: bool
    unreadable: list[str]
    resumed_from: int = 0  # images already embedded in the store before this run


def embed_folder(folder: str | Path, output: str | Path, *, engine: str = "local", actors: int | None = None,
                 ray_address: str | None = None, force: bool = False, **embedding: Any) -> EmbedReport:
    """Embed the image folder `folder` (DIR/<class>/<image>) into `output`: a FILE.npz (in memory), or a folder
    holding a memory-mapped store written as it goes (rerun to resume after an interruption), locally or with
    Ray (`engine`). Keywords: embedding options (``imprint.workflows.embedder.EmbedOptions``)."""
    from imprint.data.folder import scan_folder

    options = EmbedOptions(**embedding)
    data = scan_folder(folder, min_classes=1, strict=options.strict)
    output = Path(output)
    if output.suffix == ".npz":
        from imprint.io.embeddings_file import is_embeddings_file, write_embeddings_file
        from imprint.io.outputs import check_output

        if engine != "local":
            raise WorkflowError("--engine ray writes a memory-mapped store: give a folder as --output, not a .npz "
                                "file")
        check_output(output, ours=is_embeddings_file, what="embeddings file", force=force, inputs=data.paths)
        embedder = Embedder(options)
        X, ok = embedder(data.paths)
        paths = [str(p) for p, good in zip(data.paths, ok) if good]
        write_embeddings_file(output, X, data.class_labels[ok], paths, embedder.encoder.id)
        failed = [str(p) for p, good in zip(data.paths, ok) if not good]
        return EmbedReport(output, len(X), len(data.class_names), embedder.encoder.id, False, failed)
    return _embed_store(data, output, options, engine, actors, ray_address)


def _embed_store(data: Any, output: Path, options: EmbedOptions, engine: str, actors: int | None,
                 ray_address: str | None) -> EmbedReport:
    """Embed into a memory-mapped store folder, resuming an interrupted run (locally or with Ray)."""
    from imprint.io.store import EmbeddingStore, check_store_place

    check_store_place(output)  # before the encoder is built
    from imprint.io.cache import encoder_namespace
    from imprint.workflows.loader import embed_into_store

    encoder = Embedder(options).encoder
    store = EmbeddingStore.create(output, encoder_id=encoder.id, encoder_key=encoder_namespace(encoder),
                                  runtime=encoder.runtime_id,
                                  dim=encoder.embedding_dim, paths=[str(p) for p in data.paths],
                                  labels=data.labels, class_names=data.class_names)
    before = len(data.paths) - len(store.pending())
    if engine == "ray":
        from imprint.workflows.ray import embed_with_ray

        embed_with_ray(encoder.id, store, batch_size=options.batch_size, actors=actors, address=ray_address,
                       device=options.device, runtime=encoder.engine, progress=options.progress)
    elif engine == "local":
        embed_into_store(encoder, store, batch_size=options.batch_size, workers=options.workers,
                         progress=options.progress)
    else:
        raise WorkflowError(f"unknown engine {printable(engine)}; valid: local, ray")
    failed = store.unreadable()
    return EmbedReport(output, len(data.paths) - len(failed), len(data.class_names), encoder.id, True, failed,
                       before)
