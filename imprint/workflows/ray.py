"""Embedding on a Ray cluster (Ray Data ``map_batches`` with encoder actors), into the same on-disk store.

Workers decode and encode; the driver alone writes to the memory-mapped store, batch by batch, so an
interrupted run resumes exactly like a local one. Without an address, Ray starts a local cluster of
this one machine. Install with ``pip install "imprint[distributed]"``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from imprint.core.errors import UserError
from imprint.io.store import EmbeddingStore


class EncodeBatch:
    """Ray Data actor: holds one encoder, turns a batch of image paths into embeddings."""

    def __init__(self, encoder_id: str, device: str, runtime: str = "auto") -> None:
        from imprint.encoders import create_encoder

        self.encoder = create_encoder(encoder_id, device=device, runtime=runtime)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from imprint.workflows.loader import ImageFiles, collate_decoded

        files = ImageFiles([Path(path) for path in batch["path"]], self.encoder.transform)
        pixels, good, _, _ = collate_decoded([files[i] for i in range(len(files))])
        ok = np.zeros(len(files), dtype=bool)
        ok[good] = True
        vectors = np.zeros((len(files), self.encoder.embedding_dim), dtype=np.float32)
        if pixels is not None:
            vectors[ok] = self.encoder.encode_batch(pixels)
        return {"row": batch["row"], "ok": ok, "embedding": vectors}


def embed_with_ray(encoder_id: str, store: EmbeddingStore, *, batch_size: int = 64, actors: int | None = None,
                   address: str | None = None, device: str = "auto", runtime: str = "auto",
                   progress: bool = True) -> int:
    """Embed the store's pending rows with Ray Data; returns rows embedded now."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'imprint[distributed]' (or 'ray[data]')") from None
    pending = store.pending()
    if not len(pending):
        return 0
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if not progress:  # Ray Data's own progress bars and execution log
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        actors = actors or max(1, gpus)
        # a CPU actor gets its share of the cores, so torch in it runs that many threads (Ray sets them)
        placement = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // actors)}
        dataset = ray.data.from_items([{"row": int(r), "path": store.paths[r]} for r in pending])
        encoded = dataset.map_batches(EncodeBatch, fn_constructor_kwargs={"encoder_id": encoder_id, "device": device,
                                                                          "runtime": runtime},
                                      batch_size=batch_size, batch_format="numpy", concurrency=actors, **placement)
        done = 0
        with tqdm(total=len(pending), desc="embedding (ray)", unit="img", disable=not progress) as bar:
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                rows, ok = batch["row"].astype(np.int64), batch["ok"].astype(bool)
                if ok.any():
                    store.write(rows[ok], batch["embedding"][ok])
                if (~ok).any():
                    store.mark_unreadable(rows[~ok])
                done += int(ok.sum())
                bar.update(len(rows))
        return done
    finally:
        if started:
            ray.shutdown()
