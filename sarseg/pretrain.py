"""``sarseg pretrain``: SAR self-supervised pretraining (restoration + scale discrimination + adversarial
modality invariance) on unlabeled volumes.

Encoder objective: restoration + lambda_scale * scale CE - w(t) * source CE, where the discriminator
itself minimises the source CE and the minus comes from a gradient reversal layer whose weight w(t)
ramps from 0 to lambda_adv over the first ``adv_warmup`` share of steps (Ganin & Lempitsky's schedule).
"""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import monai
import torch
import torch.nn.functional as F

from . import __version__
from .config import PretrainConfig, from_dict, to_dict
from .core.card import Architecture, ModelCard
from .data import Source, VolumePool, check_volumes, items, volume_stream
from .core.errors import BadInput
from .model import save_model
from .nets import SARNet
from .proxy import ProxyBatch, nonlinear_intensity
from .train import Distributed, Trainer, resume_state


def adversarial_weight(config: PretrainConfig, step: int, planned_steps: int) -> float:
    """Reversal weight at ``step``: 0 -> lambda_adv along 2/(1+exp(-10p))-1 over the warm-up, a share
    of the steps first planned (so extending a run on resume does not move the ramp)."""
    warm = max(1.0, config.adv_warmup * planned_steps)
    p = min(1.0, step / warm)
    return config.lambda_adv * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


def build_net(config: PretrainConfig, sources: int) -> SARNet:
    return SARNet(1, config.net, len(config.proxy.scales), sources)


def scale_input(view: str, batch: ProxyBatch, generator: torch.Generator) -> torch.Tensor | None:
    """What the scale head reads (``scale_view``): None for the corrupted input itself, else another view
    of the same cubes (a Bezier map draws from ``generator``)."""
    if view == "clean":
        return batch.targets
    if view == "light":
        return nonlinear_intensity(batch.targets, generator)
    return None


@torch.no_grad()
def evaluate(net: SARNet, pool: VolumePool, cubes: int, batch_size: int, generator: torch.Generator,
             view: str = "corrupted") -> dict[str, float]:
    """Proxy-task metrics on fresh corrupted cubes (not the training batches): restoration loss, scale
    accuracy (chance 1/K; the head reading ``view``) and discriminator accuracy."""
    net.eval()
    totals = {"restore_mse": 0.0, "scale_acc": 0.0, "disc_acc": 0.0}
    seen = 0
    while seen < cubes:
        batch = pool.sample(min(batch_size, cubes - seen), generator)
        out = net(batch.inputs, scale_input=scale_input(view, batch, generator))
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
    state = resume_state(out, resume)
    if state is not None:
        config = from_dict(state["config"])
        if [s.name for s in sources] != state["sources"]:
            raise BadInput("--data", f"source names {[s.name for s in sources]} differ from the checkpoint's {state['sources']}")
    if steps is not None:
        config.steps = steps
    entries = items(sources)
    check_volumes(entries, config)
    return Pretraining(config, sources, entries, out, device, dist_info, progress_mode).fit(state)


class Pretraining(Trainer):
    """What pretraining adds to the run: the proxy-task pool, SAR's losses, the adversarial ramp and a
    proxy evaluation at the end; the model folder is rewritten at every checkpoint."""

    def __init__(self, config: PretrainConfig, sources: Sequence[Source], entries: list[dict], out: Path,
                 device: torch.device, dist_info: Distributed, progress_mode: str) -> None:
        super().__init__(config, out, device, dist_info, progress_mode)
        self.sources, self.entries = sources, entries
        self.planned_steps = config.steps
        self.restore = F.mse_loss if config.restore_loss == "mse" else F.l1_loss

    def build(self) -> SARNet:
        return build_net(self.config, len(self.sources))

    def setup(self, state: dict | None) -> None:
        config, rank = self.config, self.dist.rank
        if state is not None:
            self.planned_steps = int(state.get("planned_steps", self.planned_steps))
        # each rank its own stream, and a resumed run a fresh one (not a replay of the first steps)
        seed = config.seed * 1_000_003 + rank * 7919 + self.start
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        stream = volume_stream(self.entries, config, config.seed + self.start, rank, self.dist.world)
        self.pool = VolumePool.from_stream(stream, min(config.pool_size, len(self.entries)), config.proxy, self.device)

    def start_fields(self) -> dict:
        return {"volumes": len(self.entries), "sources": [s.name for s in self.sources], "preset": self.config.preset}

    def batch(self, step: int) -> ProxyBatch:
        if step > self.start and step % self.config.pool_refresh == 0:
            self.pool.refresh()
        return self.pool.sample(self.config.batch_size, self.generator)

    def forward(self, model: torch.nn.Module, batch: ProxyBatch, step: int) -> dict[str, torch.Tensor]:
        return model(batch.inputs, adversarial_weight(self.config, step, self.planned_steps),
                     scale_input(self.config.scale_view, batch, self.generator))

    def loss(self, outputs: dict[str, torch.Tensor], batch: ProxyBatch,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        config, weight = self.config, adversarial_weight(self.config, step, self.planned_steps)
        loss_restore = self.restore(outputs["restored"].float(), batch.targets)
        loss_scale = F.cross_entropy(outputs["scale_logits"].float(), batch.scales)
        loss = loss_restore + config.lambda_scale * loss_scale
        metrics = {"loss_restore": loss_restore.item(), "loss_scale": loss_scale.item(),
                   "scale_acc": (outputs["scale_logits"].argmax(1) == batch.scales).float().mean().item()}
        if "source_logits" in outputs:
            loss_adv = F.cross_entropy(outputs["source_logits"].float(), batch.sources)
            loss = loss + loss_adv
            metrics.update(loss_adv=loss_adv.item(), adv_weight=weight,
                           disc_acc=(outputs["source_logits"].argmax(1) == batch.sources).float().mean().item())
        # the encoder's objective: the discriminator term enters with minus the reversal weight
        metrics["loss"] = metrics["loss_restore"] + config.lambda_scale * metrics["loss_scale"] - weight * metrics.get("loss_adv", 0.0)
        return loss, metrics

    def checkpoint_state(self) -> dict:
        return {"sources": [s.name for s in self.sources], "planned_steps": self.planned_steps}

    def save(self, step: int) -> None:
        evaluation = None
        if step == self.config.steps:
            evaluation = evaluate(self.net, self.pool, self.config.eval_cubes, self.config.batch_size, self.generator,
                                  self.config.scale_view)
            self.progress.event("evaluation", step=step, **evaluation)
        save_model(self.out, self.net.state_dict(), model_meta(self.config, self.sources, step, self.started, evaluation))
