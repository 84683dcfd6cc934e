"""Proxy-task throughput: ``sarseg``'s batched pipeline vs a per-cube numpy Models-Genesis generator,
on the same in-memory volumes, in the same run, on the same number of CPU threads.

    .venv/bin/python benchmarks/proxy_vs_numpy.py --seconds 20 --threads 1 [--device cuda]

Like with like: both make 64x64x32 (x, y, z) cubes at three scales from the same four 96x160x160
volumes, with every Models Genesis corruption at Genesis' rates (flips 0.4, local shuffle 0.5,
non-linear 0.9, painting 0.9 of which in-painting 0.2), and return inputs, targets and scale labels.
numpy runs one cube at a time on one thread (its BLAS held to one thread), as Models Genesis does;
torch gets ``--threads``. The two take turns in rounds of ``--round`` seconds, so on a shared machine
both see the same load; each side's rate is its cubes over its own time.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads: the numpy generator's BLAS on one thread

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sarseg.bench import proxy_sampler, synthetic_volumes  # noqa: E402
from sarseg.config import ProxyConfig  # noqa: E402
from sarseg.runtime import tune_malloc  # noqa: E402
from sarseg.train import resolve_device  # noqa: E402


def numpy_baseline():
    spec = importlib.util.spec_from_file_location("numpy_genesis", Path(__file__).with_name("numpy_genesis.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time for each side")
    parser.add_argument("--round", type=float, default=1.0, help="seconds per turn")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    numpy_genesis = numpy_baseline()
    cfg = ProxyConfig()
    rates = {name: getattr(cfg, name) for name in ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "inpaint_rate")}
    assert list(rates.values()) == [numpy_genesis.FLIP_RATE, numpy_genesis.LOCAL_SHUFFLE_RATE, numpy_genesis.NONLINEAR_RATE,
                                    numpy_genesis.PAINT_RATE, numpy_genesis.INPAINT_RATE], "the two use different rates"
    assert cfg.size_zyx == numpy_genesis.DEFAULT_SIZE, "the two make different cubes"
    volumes = synthetic_volumes()
    device = resolve_device(args.device)
    sar = proxy_sampler(args.batch_size, device, volumes)
    ours, theirs = [0, 0.0], [0, 0.0]
    turn = 0
    while min(ours[1], theirs[1]) < args.seconds:
        cubes, seconds = sar(args.round)
        ours = [ours[0] + cubes, ours[1] + seconds]
        done = numpy_genesis.pairs_per_second(volumes, args.round, seed=turn)
        theirs = [theirs[0] + done["cubes"], theirs[1] + done["seconds"]]
        turn += 1
    sar_rate, numpy_rate = ours[0] / ours[1], theirs[0] / theirs[1]
    print(json.dumps({
        "sar_cubes_per_s": round(sar_rate, 1), "numpy_cubes_per_s": round(numpy_rate, 1),
        "speedup": round(sar_rate / numpy_rate, 1), "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(), "numpy_threads": 1, "turns": turn, "batch_size": args.batch_size,
        "input_size_xyz": list(cfg.input_size), "rates": rates,
    }))


if __name__ == "__main__":
    main()
