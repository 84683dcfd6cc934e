"""Latency of the interactive worker (``sarseg serve``) on a BraTS-size volume: the time from sending a
prompt request to holding its decoded answer, as the Slicer module will see it.

    .venv/bin/python benchmarks/interactive_latency.py [--models lesion-click ...] [--presets tiny small]
                                                       [--patch X Y Z] [--requests 20] [--threads 2] [--json FILE]

Per ``--models`` entry: that promptable model (a name such as the built-in ``lesion-click``, or a folder).
Per preset: a promptable model (the preset's widths, one image channel and the three guidance channels,
the binary label) with random weights (the time does not depend on training) and the preset's patch
(``--patch`` overrides it), written to a temporary folder; one 240x240x155 volume (a smooth random field,
1 mm voxels) written as NIfTI. A worker is started through ``sarseg.core.worker.WorkerClient`` (the real
process and protocol) with ``--threads``, loads the volume once, and answers ``--requests`` segment
requests that replay an interaction: request i holds the first (i mod 5) + 1 clicks of a session around
one lesion (the first at the centre, the others up to 15 mm from it, every third one negative), so the
crop grows with the clicks as it does in use. Printed: median and 95th percentile (nearest rank) of the
round trip, the worker's own time (its ``seconds``), the crop sizes, the load time, the worker's peak
memory, and the machine's 1-minute load average before and after (other programs share these cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarseg.config import FINETUNE_PRESETS, PromptableConfig  # noqa: E402
from sarseg.core.card import Architecture, InferenceConfig, ModelCard, PromptSpec  # noqa: E402
from sarseg.core.labels import SCHEMES  # noqa: E402
from sarseg.core.prompts import Prompts  # noqa: E402
from sarseg.core.registry import Registry  # noqa: E402
from sarseg.core.worker import WorkerClient, decode_mask, serve_command  # noqa: E402
from sarseg.io import DEFAULT_NORMALISATION, Geometry, write_image  # noqa: E402

VOLUME_ZYX = (155, 240, 240)
OFFSETS_MM = [(0, 0, 0), (12, 0, 0), (-10, 6, 0), (0, -14, 4), (6, 8, -6)]  # the session's clicks around the centre


def write_model(folder: Path, preset: str, patch: tuple[int, int, int] | None) -> Path:
    import torch

    from sarseg.model import build_net, save_model

    settings = FINETUNE_PRESETS[preset]
    net = dataclasses.replace(PromptableConfig().net, **{k: tuple(v) if k == "features" else v
                                                          for k, v in settings["net"].items() if k in ("features", "res_units")})
    card = ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 4, 1, net.features, net.res_units, net.norm),
                     preset=preset, normalisation=DEFAULT_NORMALISATION, modalities=("mr",),
                     patch_size=tuple(patch or settings.get("patch_size", PromptableConfig().patch_size)),
                     labels=SCHEMES["binary"], inference=InferenceConfig(), prompts=PromptSpec())
    torch.manual_seed(0)
    save_model(folder, build_net(card).state_dict(), card)
    return folder


def write_volume(path: Path) -> Path:
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(VOLUME_ZYX).astype(np.float32), 4.0)
    geometry = Geometry(VOLUME_ZYX[::-1], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return write_image(path, 1000.0 * field, geometry)


def session(count: int) -> Prompts:
    """The first ``count`` clicks of the replayed session (LPS mm on the volume written above)."""
    centre = np.array([120.0, 120.0, 77.0])
    clicks = [tuple(float(v) for v in centre + offset) for offset in OFFSETS_MM[:count]]
    return Prompts(positive=tuple(c for i, c in enumerate(clicks) if i % 3 != 2),
                   negative=tuple(c for i, c in enumerate(clicks) if i % 3 == 2))


def peak_rss_gb(pid: int) -> float | None:
    """The worker's peak resident memory (Linux ``VmHWM``; None elsewhere)."""
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return round(int(line.split()[1]) / 1e6, 2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def measure(name: str, model: Path, requests: int, threads: int, folder: Path) -> dict:
    volume = folder / "volume.nii.gz"
    if not volume.exists():
        write_volume(volume)
    load_before = os.getloadavg()[0]
    with WorkerClient(serve_command(sys.executable, str(model), "cpu", threads), env={**os.environ, "PYTHONPATH": str(ROOT)},
                      timeout=120) as worker:
        started = time.perf_counter()
        loaded = worker.load([str(volume)])
        assert loaded["ok"], loaded
        load_s = time.perf_counter() - started
        round_trips, own, crops = [], [], []
        for i in range(requests):
            started = time.perf_counter()
            reply = worker.segment(session(i % len(OFFSETS_MM) + 1))
            assert reply["ok"], reply
            decode_mask(reply["mask"], reply["size"])
            round_trips.append(time.perf_counter() - started)
            own.append(reply["seconds"])
            crops.append("x".join(map(str, reply["size"])))
        peak_gb = peak_rss_gb(worker.process.pid)
    card = json.loads((model / "model.json").read_text())
    return {"model": name, "preset": card["preset"], "patch_xyz": card["patch_size"], "features": card["architecture"]["features"],
            "threads": threads, "requests": requests, "volume_xyz": list(VOLUME_ZYX[::-1]),
            "median_s": round(statistics.median(round_trips), 3), "p95_s": round(percentile(round_trips, 95), 3),
            "worker_median_s": round(statistics.median(own), 3), "worker_p95_s": round(percentile(own, 95), 3),
            "max_s": round(max(round_trips), 3), "load_s": round(load_s, 2), "crops_xyz": sorted(set(crops)),
            "worker_peak_rss_gb": peak_gb,
            "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[], help="promptable models by name or folder")
    parser.add_argument("--presets", nargs="+", default=[], choices=sorted(FINETUNE_PRESETS),
                        help="random-weight models of these presets")
    parser.add_argument("--patch", nargs=3, type=int, metavar=("X", "Y", "Z"), default=None,
                        help="the model's patch (default: the preset's)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sarseg-latency-") as folder:
        models = [(name, Registry().resolve(name)) for name in args.models]
        models += [(f"{preset} (random weights)", write_model(Path(folder) / f"model-{preset}", preset,
                                                              tuple(args.patch) if args.patch else None))
                   for preset in args.presets]
        if not models:
            parser.error("give --models and/or --presets")
        for name, model in models:
            row = measure(name, model, args.requests, args.threads, Path(folder))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
