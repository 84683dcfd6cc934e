"""Benchmarks behind the README's numbers; the ``sarseg bench`` subcommands call these."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from .config import ProxyConfig
from .data import VolumePool, prepare


def synthetic_volumes(count: int = 4, shape: tuple[int, int, int] = (96, 160, 160), seed: int = 0) -> list[np.ndarray]:
    """Smooth random fields in [0, 1] (Z, Y, X), 1 mm voxels: stand-ins for normalised scans in memory."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3.0)
        out.append(((field - field.min()) / (field.max() - field.min())).astype(np.float32))
    return out


def proxy_throughput(seconds: float, batch_size: int, device: torch.device, volumes: list[np.ndarray] | None = None) -> dict:
    """Cubes per second of the whole proxy pipeline (multi-scale crops resized to 64x64x32, all
    corruptions at their default rates, targets and scale labels) from volumes already in memory."""
    sample = proxy_sampler(batch_size, device, volumes)
    cubes, elapsed = sample(seconds)
    return {"cubes": cubes, "seconds": round(elapsed, 3), "cubes_per_s": round(cubes / elapsed, 1),
            "batch_size": batch_size, "device": str(device), "threads": torch.get_num_threads(),
            "input_size_xyz": list(ProxyConfig().input_size)}


def proxy_sampler(batch_size: int, device: torch.device, volumes: list[np.ndarray] | None = None) -> Callable[[float], tuple[int, float]]:
    """A warmed-up proxy pipeline on ``volumes`` (default: ``synthetic_volumes()``) at the default
    ``ProxyConfig``; calling it with s makes batches for about s seconds and returns (cubes, seconds)."""
    cfg = ProxyConfig()
    volumes = volumes if volumes is not None else synthetic_volumes()
    loaded = [{"volume": torch.from_numpy(v)[None], "spacing": torch.ones(3, dtype=torch.float64), "source": i % 3}
              for i, v in enumerate(volumes)]
    pool = VolumePool([prepare(item, cfg, device) for item in loaded], cfg, device)
    generator = torch.Generator(device=device).manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(seconds: float) -> tuple[int, float]:
        sync()
        cubes, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pool.sample(batch_size, generator)
            cubes += batch_size
        sync()
        return cubes, time.perf_counter() - start

    pool.sample(batch_size, generator)  # warm-up
    return run
