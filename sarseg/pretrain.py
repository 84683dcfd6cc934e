"""``sarseg pretrain``: SAR self-supervised pretraining (restoration + scale discrimination + adversarial
modality invariance) on unlabeled volumes.

Encoder objective: restoration + lambda_scale * scale CE - w(t) * source CE, where the discriminator
itself minimises the source CE and the minus comes from a gradient reversal layer whose weight w(t)
ramps from 0 to lambda_adv over the first ``adv_warmup`` share of steps (Ganin & Lempitsky's schedule).
"""

from __future__ import annotations

import math
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import monai
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from . import __version__
from .config import PretrainConfig, from_dict, to_dict
from .core.card import Architecture, ModelCard
from .data import Source, VolumePool, check_volumes, items, volume_stream
from .core.errors import BadInput
from .model import save_model
from .nets import SARNet
from .train import CHECKPOINT, Distributed, Progress, check_output, load_checkpoint, make_optimizer, save_checkpoint, train_loop


def adversarial_weight(config: PretrainConfig, step: int, planned_steps: int) -> float:
    """Reversal weight at ``step``: 0 -> lambda_adv along 2/(1+exp(-10p))-1 over the warm-up, a share
    of the steps first planned (so extending a run on resume does not move the ramp)."""
    warm = max(1.0, config.adv_warmup * planned_steps)
    p = min(1.0, step / warm)
    return config.lambda_adv * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


def build_net(config: PretrainConfig, sources: int) -> SARNet:
    return SARNet(1, config.net, len(config.proxy.scales), sources)


@torch.no_grad()
def evaluate(net: SARNet, pool: VolumePool, cubes: int, batch_size: int, generator: torch.Generator) -> dict[str, float]:
    """Proxy-task metrics on fresh corrupted cubes (not the training batches): restoration loss, scale
    accuracy (chance 1/K) and discriminator accuracy."""
    net.eval()
    totals = {"restore_mse": 0.0, "scale_acc": 0.0, "disc_acc": 0.0}
    seen = 0
    while seen < cubes:
        batch = pool.sample(min(batch_size, cubes - seen), generator)
        out = net(batch.inputs)
        n = len(batch.scales)
        totals["restore_mse"] += F.mse_loss(out["restored"].float(), batch.targets, reduction="sum").item() / batch.targets[0].numel()
        totals["scale_acc"] += (out["scale_logits"].argmax(1) == batch.scales).sum().item()
        if "source_logits" in out:
            totals["disc_acc"] += (out["source_logits"].argmax(1) == batch.sources).sum().item()
        seen += n
    net.train()
    result = {k: v / seen for k, v in totals.items()}
    if net.discriminator is None:
        result.pop("disc_acc")
    return {**result, "cubes": seen, "scale_chance": 1.0 / net.scale_head.mlp[-1].out_features}


def model_meta(config: PretrainConfig, sources: Sequence[Source], step: int, started: str, evaluation: dict | None = None) -> ModelCard:
    """The card of a pretrained model."""
    net = config.net
    return ModelCard(
        kind="pretrained",
        architecture=Architecture("sar-resunet3d", 1, 1, tuple(net.features), net.res_units, net.norm, net.head_hidden,
                                  len(config.proxy.scales), len(sources)),
        preset=config.preset,
        normalisation=config.normalisation,
        sources=tuple(s.name for s in sources),
        input_size=tuple(config.proxy.input_size),
        scales={"sizes": list(config.proxy.scales), "unit": config.proxy.scale_unit},
        provenance={
            "data": {s.name: list(s.paths) for s in sources},
            "steps": step,
            "config": to_dict(config),
            "sar_version": __version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
            "started": started,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "proxy_evaluation": evaluation,
        },
    )


def pretrain(
    config: PretrainConfig,
    sources: Sequence[Source],
    out: Path,
    device: torch.device,
    dist_info: Distributed = Distributed(),
    resume: bool = False,
    progress_mode: str = "bar",
    steps: int | None = None,
) -> Path:
    """Run (or resume) pretraining into the model folder ``out``; returns it. Raises Cancelled on a signal.

    On resume the checkpoint's config is used; ``steps`` (when given) extends or shortens the run.
    """
    out = Path(out)
    check_output(out, resume)
    state = load_checkpoint(out / CHECKPOINT) if resume else None
    if state is not None:
        config = from_dict(state["config"])
        if [s.name for s in sources] != state["sources"]:
            raise BadInput("--data", f"source names {[s.name for s in sources]} differ from the checkpoint's {state['sources']}")
    if steps is not None:
        config.steps = steps
    entries = items(sources)
    created = not out.exists()
    check_volumes(entries, config)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _train(config, sources, entries, out, device, dist_info, state, progress_mode)
    except BadInput:
        if created and dist_info.main:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(config, sources, entries, out, device, dist_info, state, progress_mode) -> Path:
    torch.manual_seed(config.seed + dist_info.rank)
    net = build_net(config, len(sources)).to(device)
    optimizer = make_optimizer(net.parameters(), config)
    start, started = 0, datetime.now(timezone.utc).isoformat(timespec="seconds")
    planned_steps = config.steps
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, started = int(state["step"]), state["started"]
        planned_steps = int(state.get("planned_steps", planned_steps))
    # each rank its own stream, and a resumed run a fresh one (not a replay of the first steps)
    generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + dist_info.rank * 7919 + start)
    model = DistributedDataParallel(net) if dist_info.world > 1 else net
    stream = volume_stream(entries, config, config.seed + start, dist_info.rank, dist_info.world)
    pool = VolumePool.from_stream(stream, min(config.pool_size, len(entries)), config.proxy, device)
    progress = Progress(progress_mode, out, config.steps, start, enabled=dist_info.main)
    restore = F.mse_loss if config.restore_loss == "mse" else F.l1_loss
    amp = config.amp and device.type == "cuda"
    progress.event("start", step=start, steps=config.steps, device=str(device), world=dist_info.world,
                   volumes=len(entries), sources=[s.name for s in sources], preset=config.preset)

    def checkpoint(step: int) -> None:
        if not dist_info.main:
            return
        evaluation = None
        if step == config.steps:
            evaluation = evaluate(net, pool, config.eval_cubes, config.batch_size, generator)
            progress.event("evaluation", step=step, **evaluation)
        save_checkpoint(out / CHECKPOINT, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "config": to_dict(config), "sources": [s.name for s in sources], "started": started,
            "planned_steps": planned_steps,
        })
        save_model(out, net.state_dict(), model_meta(config, sources, step, started, evaluation))
        progress.event("checkpoint", step=step, path=str(out))

    def train_step(step: int) -> dict[str, float]:
        if step > start and step % config.pool_refresh == 0:
            pool.refresh()
        batch = pool.sample(config.batch_size, generator)
        weight = adversarial_weight(config, step, planned_steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(batch.inputs, weight)
        loss_restore = restore(outputs["restored"].float(), batch.targets)
        loss_scale = F.cross_entropy(outputs["scale_logits"].float(), batch.scales)
        loss = loss_restore + config.lambda_scale * loss_scale
        metrics = {"loss_restore": loss_restore.item(), "loss_scale": loss_scale.item(),
                   "scale_acc": (outputs["scale_logits"].argmax(1) == batch.scales).float().mean().item()}
        if "source_logits" in outputs:
            loss_adv = F.cross_entropy(outputs["source_logits"].float(), batch.sources)
            loss = loss + loss_adv
            metrics.update(loss_adv=loss_adv.item(), adv_weight=weight,
                           disc_acc=(outputs["source_logits"].argmax(1) == batch.sources).float().mean().item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # the encoder's objective: the discriminator term enters with minus the reversal weight
        metrics["loss"] = metrics["loss_restore"] + config.lambda_scale * metrics["loss_scale"] - weight * metrics.get("loss_adv", 0.0)
        return metrics

    step = train_loop(train_step, start, config, progress, checkpoint, config.batch_size * dist_info.world)
    progress.event("done", step=step, path=str(out))
    return out
