"""Segmentation time and peak memory per preset on a BraTS-size volume: the engine's ``sarseg.infer.predict``
against plain MONAI ``sliding_window_inference`` with MONAI's defaults, on the same network.

    .venv/bin/python benchmarks/segment_time.py [--presets tiny small genesis] [--device cpu|cuda]
                                                [--repeats N] [--threads N] [--timeout S] [--json FILE]

Per preset the UNet3D gets the preset's widths, 2 input channels and the BraTS region scheme (3 sigmoid
outputs), with random weights (the time does not depend on training). The input is 2 channels of
240x240x155 voxels (array (2, 155, 240, 240)), smooth random fields like ``sarseg.bench.synthetic_volumes``.

Methods, each timed on the same network:

* ``sarseg.predict``: ``sarseg.infer.predict`` with the preset's inference config (overlap 0.5,
  sw_batch_size 4, Gaussian blending, no TTA; patches on the device, stitching on the CPU, bfloat16
  autocast on CUDA), probabilities out.
* ``monai.default``: ``sliding_window_inference(inputs, roi_size=patch, sw_batch_size=1, predictor=net)``
  with MONAI's defaults (overlap 0.25, constant blending, everything on the input's device, float32)
  under ``torch.inference_mode()``, logits out. On CUDA the input is moved to the GPU before the clock
  starts.

Each (preset, method) runs in its own freshly spawned process, so memory figures do not carry over.
In that process: build the network, load the input, warm up with one call on a single patch-sized
crop, then time ``--repeats`` full calls (median reported; default 1 on CPU, 3 on CUDA).

Memory: ``peak_rss_mb`` is the process's absolute high-water resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) at the end, i.e. Python + torch + network + input + the
inference itself; ``rss_baseline_mb`` is the same high-water mark just before the timed calls (after
network, input and warm-up), and ``peak_rss_growth_mb`` their difference: what the sliding-window
inference added on top. On CUDA ``peak_cuda_mb`` is ``torch.cuda.max_memory_allocated`` over the timed
calls (reset after the warm-up; the network and, for monai.default, the input on the GPU included).

One JSON line per (preset, method) is printed; ``--json FILE`` also writes them all as a list.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOLUME_ZYX = (155, 240, 240)  # BraTS: 240 x 240 x 155 voxels (x, y, z)
CHANNELS = 2
METHODS = ("sarseg.predict", "monai.default")
MONAI_DEFAULT_OVERLAP = 0.25


def rss_mb() -> float:
    """High-water resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """How many windows MONAI's sliding window visits (its scan interval rule)."""
    count = 1
    for size, r in zip(shape, roi):
        if size <= r:
            continue
        stride = max(int(r * (1 - overlap)), 1)
        count *= math.ceil((size - r) / stride) + 1
    return count


def measure(preset: str, method: str, device_name: str, repeats: int, threads: int | None, data_path: str) -> dict:
    """One (preset, method) measurement; meant to run in a fresh process."""
    import torch
    from monai.inferers import sliding_window_inference

    from sarseg.config import finetune_config
    from sarseg.core.labels import SCHEMES
    from sarseg.infer import predict
    from sarseg.nets import UNet3D
    from sarseg.runtime import tune_malloc
    from sarseg.train import resolve_device

    tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    cuda = device.type == "cuda"
    config = finetune_config(preset, {"labels": SCHEMES["brats"].to_dict()})
    labels, patch, inference = config.labels, config.patch_zyx, config.inference

    torch.manual_seed(0)
    net = UNet3D(CHANNELS, labels.outputs, config.net).to(device).eval()
    volume = torch.from_numpy(np.load(data_path))  # (C, Z, Y, X), float32, on the CPU
    crop = volume[:, : patch[0], : patch[1], : patch[2]].contiguous()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if method == "sarseg.predict":
        def call(x: torch.Tensor) -> torch.Tensor:
            return predict(net, x, patch, labels, inference, device)
        inputs, warm = volume, crop
        overlap, sw_batch, blending = inference.overlap, inference.sw_batch_size, "gaussian"
    elif method == "monai.default":
        def call(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return sliding_window_inference(x, roi_size=patch, sw_batch_size=1, predictor=net)
        inputs, warm = volume[None].to(device), crop[None].to(device)
        overlap, sw_batch, blending = MONAI_DEFAULT_OVERLAP, 1, "constant"
    else:
        raise ValueError(f"unknown method {method!r}")

    call(warm)  # warm-up: one window
    sync()
    del warm
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    baseline = rss_mb()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call(inputs)
        sync()
        seconds.append(time.perf_counter() - t0)
        assert out.shape[-3:] == VOLUME_ZYX, out.shape
        del out
    peak = rss_mb()
    result = {
        "preset": preset, "method": method, "seconds": round(statistics.median(seconds), 2),
        "seconds_all": [round(s, 2) for s in seconds],
        "peak_rss_mb": peak, "rss_baseline_mb": baseline, "peak_rss_growth_mb": round(peak - baseline, 1),
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "input_shape": list(volume.shape), "patch_zyx": list(patch), "overlap": overlap,
        "sw_batch_size": sw_batch, "blending": blending, "windows": windows(VOLUME_ZYX, patch, overlap),
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
        "torch": torch.__version__,
    }
    if cuda:
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def run_isolated(args: tuple, timeout: float | None) -> dict:
    """``measure`` in a freshly spawned process (its own ru_maxrss); a timeout ends that process."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        pending = pool.apply_async(measure, args)
        try:
            return pending.get(timeout)
        except mp.TimeoutError:
            pool.terminate()
            preset, method, device = args[:3]
            return {"preset": preset, "method": method, "device": device, "skipped": f"timeout after {timeout} s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "genesis"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 1 on CPU, 3 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per measurement before it is abandoned")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this file as a JSON list")
    args = parser.parse_args()

    from sarseg.bench import synthetic_volumes
    from sarseg.runtime import tune_malloc
    from sarseg.train import resolve_device

    tune_malloc()
    resolve_device(args.device)  # fail early when CUDA is asked for and missing
    repeats = args.repeats or (3 if args.device == "cuda" else 1)
    volume = np.stack(synthetic_volumes(CHANNELS, VOLUME_ZYX))  # (2, 155, 240, 240) float32 in [0, 1]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "volume.npy")
        np.save(data_path, volume)
        del volume
        for preset in args.presets:
            for method in args.methods:
                result = run_isolated((preset, method, args.device, repeats, args.threads, data_path), args.timeout)
                print(json.dumps(result), flush=True)
                results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
