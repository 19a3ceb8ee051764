"""`imprint fit` on a folder of 2,000 RGB JPEGs, process start to exit, against the imprint of an earlier commit
in the same run; the encoder alone on every runtime installed; and the cold start on 10 images.

Baseline: the package at git ref ``--baseline`` (default: the commit before the ONNX Runtime encoder), checked
out in a temporary worktree and run by the same interpreter with the same dependencies, so the ratio is the code's
alone. Each run gets an empty embedding cache (every image decoded and encoded); the new code's encoder graph is
built once beforehand (its build time is reported apart). Runs alternate, baseline first, so drift of a shared
machine hits both alike; ratios are of medians.

The images are the 2,000 simulated textile photographs (250 x 250 JPEG, 3 classes) shipped by PyPI's
``conformal-clip-data``. The encoder alone: see ``encoder_alone``.
Run: python benchmarks/bench_folder.py [--baseline REF] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "b67e6dd"  # "imprint export" landed, the encoder still on torch eager, cache entries fsynced one by one
# The encoder alone: the same 256 preprocessed images through torch eager, imprint's ONNX Runtime and OpenVINO
# engines and its auto choice, and OpenVINO's own async API (fp32, and its default precision, lower on CPUs with
# bf16), each with as many threads as imprint would use.
TEXTILES = Path(__import__("conformal_clip_data").__file__).parent / "data" / "textile_images" / "simulated"


def fit_seconds(code: Path | None, folder: Path, work: Path, extra: list[str] = ()) -> float:
    """Wall seconds of one `imprint fit` process (start to exit) from the package at `code` (None: this one),
    with an empty embedding cache."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "IMPRINT_CACHE_DIR": str(work / "home")}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imprint.cli", "fit", str(folder), "-o", str(work / "c.safetensors"),
                    "--quiet", "--force", "--cache-dir", str(cache), *extra], env=env, check=True,
                   cwd=code or ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def encoder_alone(images: int) -> list[tuple[str, float, float]]:
    """(runtime, images/s, least cosine to torch's embeddings) for the same preprocessed images: torch eager,
    imprint's two graph engines and its `auto` choice, and OpenVINO's own fastest way (async infer requests) at
    fp32 and at its default precision."""
    from imprint.core.machine import idle_cores
    from imprint.data.folder import load_rgb
    from imprint.encoders import create_encoder

    threads = idle_cores()
    torch.set_num_threads(threads)
    on_torch = create_encoder("lite0", device="cpu", runtime="torch")
    paths = sorted(TEXTILES.glob("*/*.jpg"))[::len(list(TEXTILES.glob("*/*.jpg"))) // images][:images]
    pixels = torch.stack([on_torch.transform(load_rgb(p)) for p in paths])
    runs = {"torch eager (imprint before)": lambda p: np.concatenate([on_torch.encode_batch(b) for b in p.split(64)])}
    from imprint.encoders.runtime import cpu_has_bf16

    engines = [("onnx", "imprint on ONNX Runtime"), ("openvino", "imprint on OpenVINO fp32"), ("auto", "imprint, auto")]
    if cpu_has_bf16():
        engines.append(("openvino-bf16", "imprint on OpenVINO bf16 (`--runtime openvino-bf16`, lower precision)"))
    for runtime, label in engines:
        encoder = create_encoder("lite0", device="cpu", runtime=runtime)
        if runtime == "auto":
            label += f" (chose {encoder.runtime_id.split('-')[0]})"
        runs[label] = encoder.encode_batch
    runs.update(_openvino(on_torch, threads))
    reference = None
    out = []
    for name, run in runs.items():
        run(pixels[:16])  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            embeddings = run(pixels)
            best = min(best, time.perf_counter() - start)
        reference = embeddings if reference is None else reference
        cosine = (embeddings * reference).sum(1) / (np.linalg.norm(embeddings, axis=1) *
                                                    np.linalg.norm(reference, axis=1))
        out.append((name, len(pixels) / best, float(cosine.min())))
    return out


def _openvino(encoder, threads: int) -> dict:
    """OpenVINO runs of the encoder's graph (fp32, and OpenVINO's default precision), where it is installed;
    each image alone, `threads` infer requests at once (its fastest way measured here)."""
    try:
        import openvino
    except ImportError:
        return {}
    import io

    from openvino import AsyncInferQueue

    buffer = io.BytesIO()
    torch.onnx.export(encoder.export_module(), (torch.zeros(1, 3, 224, 224),), buffer, input_names=["pixels"],
                      output_names=["embeddings"], opset_version=17, dynamo=False)
    core = openvino.Core()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "encoder.onnx").write_bytes(buffer.getvalue())
        model = core.read_model(str(Path(tmp) / "encoder.onnx"))
    runs = {}
    for label, config in (("OpenVINO's own async API, fp32", {"INFERENCE_PRECISION_HINT": "f32"}),
                          ("OpenVINO's own async API, default precision", {})):
        compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_NUM_THREADS": threads,
                                                     "NUM_STREAMS": threads, "PERFORMANCE_HINT": "THROUGHPUT"})

        def run(pixels, compiled=compiled):
            out = np.zeros((len(pixels), encoder.embedding_dim), dtype=np.float32)
            queue = AsyncInferQueue(compiled, threads)
            queue.set_callback(lambda request, i: out.__setitem__(i, request.get_output_tensor(0).data[0]))
            for i, image in enumerate(pixels.numpy()):
                queue.start_async({0: image[None]}, userdata=i)
            queue.wait_all()
            return out
        runs[label] = run
    return runs


def cold_start(code: Path | None, work: Path) -> float:
    """Seconds of `imprint fit` on 10 images (2 classes of 5), process start to exit."""
    small = work / "small"
    if not small.exists():
        for name in ("bag", "sneaker"):
            (small / name).mkdir(parents=True)
            for image in sorted((ROOT / "examples" / "fashion" / name).iterdir())[:5]:
                shutil.copy(image, small / name / image.name)
    return fit_seconds(code, small, work)


def print_encoder_table(images: int) -> None:
    """The encoder-alone table: every runtime's rate against torch eager and against the fastest fp32 one."""
    print("| runtime | images/s | vs torch eager | vs the fastest fp32 | least cosine to torch |\n"
          "|---|---|---|---|---|")
    results = encoder_alone(images)
    fastest = max(rate for name, rate, _ in results if "precision" not in name)
    for name, rate, cosine in results:
        print(f"| {name} | {rate:.1f} | {rate / results[0][1]:.2f}x | {rate / fastest:.2f} | {cosine:.6f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encoder-images", type=int, default=256)
    parser.add_argument("--encoder-only", action="store_true", help="only the table of the encoder alone")
    args = parser.parse_args()
    if args.encoder_only:
        print(environment() + "\n")
        print_encoder_table(args.encoder_images)
        return
    print("## `imprint fit` on a folder: end to end, encoder alone, cold start\n\n" + environment() + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            folder = work / "textiles"
            shutil.copytree(TEXTILES, folder)
            n = len(list(folder.glob("*/*.jpg")))
            start = time.perf_counter()
            cold_start(None, work)  # builds this code's encoder graph into the benchmark's graph cache
            print(f"First run of this code: {time.perf_counter() - start:.1f} s for 10 images, the encoder graph "
                  "exported, checked and cached in it (once per encoder, weights and runtime version).\n")
            rows = []
            for label, extra in (("default (method chosen on the support set)", []), ("--preset gda", ["--preset",
                                                                                                        "gda"])):
                before, after = [], []
                for _ in range(args.rounds):
                    before.append(fit_seconds(base, folder, work, extra))
                    after.append(fit_seconds(None, folder, work, extra))
                rows.append((label, statistics.median(before), statistics.median(after), before, after))
            print(f"### `imprint fit` on {n} JPEGs (250 x 250, 3 classes), process start to exit, empty embedding "
                  f"cache; baseline {args.baseline}\n")
            print("| method | baseline, images/s | now, images/s | speed-up | rounds (s, baseline / now) |\n"
                  "|---|---|---|---|---|")
            for label, before, after, all_before, all_after in rows:
                print(f"| {label} | {n / before:.1f} | {n / after:.1f} | **{before / after:.2f}x** | "
                      f"{', '.join(f'{b:.1f}/{a:.1f}' for b, a in zip(all_before, all_after))} |")
            starts = [(cold_start(base, work), cold_start(None, work)) for _ in range(args.rounds)]
            before, after = (statistics.median(s[i] for s in starts) for i in (0, 1))
            print(f"\n### Cold start: `imprint fit` on 10 images, process start to exit\n\n| baseline | now | "
                  f"speed-up |\n|---|---|---|\n| {before:.2f} s | {after:.2f} s | {before / after:.2f}x |")
            print(f"\n### The encoder alone: {args.encoder_images} preprocessed images, best of 3\n")
            print_encoder_table(args.encoder_images)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
