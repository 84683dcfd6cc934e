"""Training-step throughput per preset, and how long preparing the batch (crops + corruptions) takes
beside the network step, to show whether data preparation is the bottleneck.

    .venv/bin/python benchmarks/train_step.py [--presets tiny small genesis] [--steps 6] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from sarseg.bench import synthetic_volumes
from sarseg.config import pretrain_config
from sarseg.data import VolumePool, prepare
from sarseg.nets import SARNet
from sarseg.runtime import tune_malloc
from sarseg.train import resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(preset: str, steps: int, device: torch.device) -> dict:
    config = pretrain_config(preset)
    volumes = synthetic_volumes()
    loaded = [{"volume": torch.from_numpy(v)[None], "spacing": torch.ones(3, dtype=torch.float64), "source": i % 3}
              for i, v in enumerate(volumes)]
    pool = VolumePool([prepare(item, config.proxy, device) for item in loaded], config.proxy, device)
    net = SARNet(1, config.net, len(config.proxy.scales), 3).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr)
    generator = torch.Generator(device=device).manual_seed(0)
    amp = device.type == "cuda"
    data_s, step_s = [], []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        batch = pool.sample(config.batch_size, generator)
        sync(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(batch.inputs, 0.05)
        loss = (F.mse_loss(out["restored"].float(), batch.targets) + F.cross_entropy(out["scale_logits"].float(), batch.scales)
                + F.cross_entropy(out["source_logits"].float(), batch.sources))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        t2 = time.perf_counter()
        data_s.append(t1 - t0)
        step_s.append(t2 - t1)
    data, step = statistics.median(data_s[1:]), statistics.median(step_s[1:])
    return {"preset": preset, "batch_size": config.batch_size, "input_size_xyz": list(config.proxy.input_size),
            "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            "data_s": round(data, 4), "step_s": round(step, 4), "cubes_per_s": round(config.batch_size / (data + step), 1),
            "data_share": round(data / (data + step), 3), "device": str(device),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "genesis"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    tune_malloc()
    device = resolve_device(args.device)
    for preset in args.presets:
        print(json.dumps(measure(preset, args.steps, device)), flush=True)


if __name__ == "__main__":
    main()
