"""Folder-to-classifier throughput: decode + encode + imprint, against the encoder alone, for the numbers of
encoder threads tried, with the machine idle and with other work keeping cores busy.

The baseline encodes the same images, already decoded and preprocessed into tensors, in the same run. Thread
settings: 1, every core (torch's default), and imprint's choice (``imprint.core.machine``: the cores not busy with
other work). The busy cores run a spinning process each, started before imprint chooses.
Run: python benchmarks/bench_threads.py [--images N] [--workers W] [--busy 0 1]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, timed

from imprint import ImprintClassifier
from imprint.core.machine import available_cores, idle_cores
from imprint.data.builtin import fashion_mnist, per_class_split
from imprint.data.folder import load_rgb, scan_folder
from imprint.encoders import create_encoder
from imprint.workflows.loader import default_workers, embed_paths


def write_folder(root: Path, per_class: int) -> None:
    data = fashion_mnist("test")
    rows, _ = per_class_split(data.labels, per_class, 0, seed=0)
    for i in rows:
        folder = root / f"class_{data.labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i]).save(folder / f"{i:05d}.png")


def measure(encoder, data, pixels, batch_size: int, workers: int, rounds: int) -> tuple[float, float, list[float]]:
    """Median seconds of the encoder alone and of the whole pipeline, alternating, and the per-round ratios."""
    def encoder_alone():
        return np.concatenate([encoder.encode_batch(b) for b in pixels.split(batch_size)])

    def end_to_end():
        result = embed_paths(encoder, data.paths, batch_size=batch_size, workers=workers, progress=False)
        return ImprintClassifier().fit(result.embeddings, data.class_labels[result.ok])

    encoder_times, full_times = [], []
    for _ in range(rounds):  # alternate, so drift of this shared machine hits both alike
        encoder_times.append(timed(encoder_alone)[0])
        full_times.append(timed(end_to_end)[0])
    return float(np.median(encoder_times)), float(np.median(full_times)), \
        [e / f for e, f in zip(encoder_times, full_times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="cores kept busy by other work")
    args = parser.parse_args()
    encoder = create_encoder(device="auto", runtime="torch")  # torch's own threads are what this measures
    workers = default_workers(encoder.device) if args.workers is None else args.workers
    print("## Folder to classifier: end-to-end throughput and threads\n\n" + environment() + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images // 10)
        data = scan_folder(root)
        pixels = torch.stack([encoder.transform(load_rgb(p)) for p in data.paths])
        encoder.encode_batch(pixels[:16])  # warm-up
        n = len(data.paths)
        print(f"{n} Fashion-MNIST PNGs in 10 class folders, {encoder.id} on {encoder.device}, batch "
              f"{args.batch_size}, {workers} decoding worker(s); {available_cores()} cores\n")
        print("| busy cores (other work) | encoder threads | encoder alone, images/s | end to end, images/s | "
              "end to end vs encoder alone |\n|---|---|---|---|---|")
        for busy in args.busy:
            spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                time.sleep(0.5)
                chosen = idle_cores()
                for label, threads in (("1", 1), (f"{available_cores()} (torch's default: every core)",
                                                  available_cores()), (f"{chosen} (imprint's choice)", chosen)):
                    torch.set_num_threads(threads)
                    t_encoder, t_full, ratios = measure(encoder, data, pixels, args.batch_size, workers, args.rounds)
                    print(f"| {busy} | {label} | {n / t_encoder:.1f} | {n / t_full:.1f} | "
                          f"{np.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}) |", flush=True)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    print(f"\nMedians of {args.rounds} alternating rounds; the last column is the median per-round ratio.")


if __name__ == "__main__":
    main()
