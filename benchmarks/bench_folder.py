"""Folder-to-classifier throughput (issue 3): decode + encode + imprint, against the encoder alone.

The baseline encodes the same images, already decoded and preprocessed into tensors, in the same run.
Run: python benchmarks/bench_folder.py [--images N] [--workers W]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, timed

from imprint import ImprintClassifier
from imprint.data.builtin import fashion_mnist, per_class_split
from imprint.data.folder import load_rgb, scan_folder
from imprint.embed import default_workers, embed_paths
from imprint.encoders import create_encoder


def write_folder(root: Path, per_class: int) -> None:
    data = fashion_mnist("test")
    rows, _ = per_class_split(data.labels, per_class, 0, seed=0)
    for i in rows:
        folder = root / f"class_{data.labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i]).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    encoder = create_encoder(device="auto")
    workers = default_workers(encoder.device) if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images // 10)
        data = scan_folder(root)
        pixels = torch.stack([encoder.transform(load_rgb(p)) for p in data.paths])
        encoder.encode_batch(pixels[:16])  # warm-up

        def encoder_alone():
            return np.concatenate([encoder.encode_batch(b) for b in pixels.split(args.batch_size)])

        def end_to_end():
            result = embed_paths(encoder, data.paths, batch_size=args.batch_size, workers=workers, progress=False)
            return ImprintClassifier().fit(result.embeddings, data.class_labels[result.ok])

        encoder_times, full_times = [], []
        for _ in range(args.rounds):  # alternate, so drift of this shared machine hits both alike
            encoder_times.append(timed(encoder_alone)[0])
            full_times.append(timed(end_to_end)[0])
    ratios = [e / f for e, f in zip(encoder_times, full_times)]
    t_encoder, t_full = float(np.median(encoder_times)), float(np.median(full_times))
    n = len(data.paths)
    print("## Folder to classifier: end-to-end throughput\n\n" + environment() + "\n")
    print(f"{n} Fashion-MNIST PNGs in 10 class folders, {encoder.id} on {encoder.device}, batch {args.batch_size}, "
          f"{workers} decoding worker(s)\n")
    print("| pipeline | seconds | images/s | vs encoder alone |\n|---|---|---|---|")
    print(f"| encoder alone on preprocessed tensors (baseline) | {t_encoder:.2f} | {n / t_encoder:.1f} | 1.00 |")
    print(f"| decode + preprocess + encode + imprint (`embed_paths` + `fit`) | {t_full:.2f} | {n / t_full:.1f} | "
          f"{np.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}) |")
    print(f"\nMedians of {args.rounds} alternating rounds; the last column is the median per-round ratio.")


if __name__ == "__main__":
    main()
