"""Proxy-task throughput: ``sarseg``'s batched pipeline vs a per-cube numpy Models-Genesis generator,
on the same in-memory volumes in the same run.

    .venv/bin/python benchmarks/proxy_vs_numpy.py --seconds 20 [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch

from sarseg.bench import proxy_throughput, synthetic_volumes
from sarseg.runtime import tune_malloc
from sarseg.train import resolve_device


def numpy_baseline():
    spec = importlib.util.spec_from_file_location("numpy_genesis", Path(__file__).with_name("numpy_genesis.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    tune_malloc()
    volumes = synthetic_volumes()
    ours = proxy_throughput(args.seconds, args.batch_size, resolve_device(args.device), volumes)
    baseline = numpy_baseline().pairs_per_second(volumes, args.seconds)
    print(json.dumps({
        "sar_cubes_per_s": ours["cubes_per_s"], "numpy_cubes_per_s": round(baseline["cubes_per_s"], 1),
        "speedup": round(ours["cubes_per_s"] / baseline["cubes_per_s"], 1), "device": ours["device"],
        "gpu": torch.cuda.get_device_name() if ours["device"].startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "input_size_xyz": ours["input_size_xyz"],
    }))


if __name__ == "__main__":
    main()
