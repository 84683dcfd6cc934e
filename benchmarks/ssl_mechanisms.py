"""What SAR's scale head and adversarial term actually learn, measured on volumes kept out of pretraining.

    nice -n 10 .venv/bin/python benchmarks/ssl_mechanisms.py [--steps 300] [--finetune-steps 300] [--seeds 0]
        [--data ../shared/data] [--out runs/ssl-mechanisms] [--threads 1]

Pretrains the ``tiny`` network on the shared real volumes (MR, CT, PET) minus a held-out set, once per
variant (the scale head reading the corrupted input, a lightly corrupted view or the clean cube; with and
without the adversarial term; restoration only), then on fresh cubes from the held-out volumes measures:

- scale accuracy of each variant's head (chance 1/3), and of one pretrained on the *resampling control*:
  every cube, whatever its scale, reduced to the same coarse grid (area average over 4x4x4 of its own
  voxels, trilinear back) with the same noise floor, so resolution and noise per voxel no longer tell the
  scale and only content (anatomy) can;
- the same from six texture statistics (gradient and second-difference energy per axis) with a logistic
  regression fitted on cubes of the pretraining volumes: how much a pure resampling cue gives, on clean,
  corrupted and controlled cubes;
- the discriminator's accuracy over training (its ``disc_acc`` in log.csv) and on fresh cubes;
- a linear probe of the source on the encoder's pooled bottleneck (mean and spread per channel; logistic
  regression fitted on pretraining volumes' cubes, balanced accuracy on the held-out ones): lower = more
  modality-invariant;
- Dice of a short fine-tuning from each initialisation on one BraTS 2018 case, on other BraTS 2018 cases.

Prints Markdown tables and writes them to ``--out``/mechanisms.md (results.json beside it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from sarseg.bench_ssl import Profile, Task, fine_tune_and_score
from sarseg.config import PretrainConfig, pretrain_config, to_dict
from sarseg.core.labels import SCHEMES
from sarseg.data import LoadVolume, PoolVolume, Source, VolumePool, check_volumes, items, prepare
from sarseg.finetune import Case
from sarseg import model
from sarseg.model import load_model
from sarseg.nets import SARNet
from sarseg.pretrain import Pretraining, build_net, scale_input
from sarseg.proxy import ProxyBatch
from sarseg.runtime import configure_threads, tune_malloc
from sarseg.train import Distributed
from ssl_shared import SHARED_DATA, crop_to_foreground

BRATS_CHANNELS = ("flair", "t1", "t1ce", "t2")
VARIANTS = {  # name -> pretraining overrides (on the tiny preset); None: no pretraining (scratch)
    "scratch": None,
    "restoration": {"lambda_scale": 0.0, "lambda_adv": 0.0},
    "corrupted": {"scale_view": "corrupted"},
    "light": {"scale_view": "light"},
    "clean": {"scale_view": "clean"},
    "clean_no_adv": {"scale_view": "clean", "lambda_adv": 0.0},
    "clean_adv0.5": {"scale_view": "clean", "lambda_adv": 0.5},
}
CONTROL = "clean_control"  # the clean view on resampling-controlled cubes (measured, not fine-tuned)
CONTROL_FACTOR, CONTROL_NOISE = 4, 0.02  # coarse grid: 1/4 of the cube's voxels per axis; noise: share of its range


def split(data: Path, work: Path) -> tuple[list[Source], list[Source], Task]:
    """Pretraining sources, held-out sources (never pretrained on) and the fine-tuning task.

    BraTS 2018: FLAIR and T1c of cases 0-3 are pretraining volumes; cases 8-11 held out (4 channels each).
    Fine-tuning: case 4 (all four channels), tested on cases 5-7 (cropped to the brain)."""
    b = sorted(p for p in (data / "brats2018").iterdir() if p.is_dir())
    brats = lambda cases, channels: tuple(str(c / f"{c.name}_{ch}.nii.gz") for c in cases for ch in channels)
    s = lambda name: str(data / "sarcoma" / name)
    train = [Source("mr", brats(b[:4], ("flair", "t1ce")) + (s("STS_001_MR_T1_image.nii.gz"), str(data / "tcga_gbm/brain1_image.nrrd"))),
             Source("ct", (s("STS_001_CT_image.nii.gz"), str(data / "lung_ct/image.nii.gz"))),
             Source("pet", (s("STS_001_PET_image.nii.gz"),))]
    held = [Source("mr", brats(b[8:], BRATS_CHANNELS) + (s("STS_002_MR_T1_image.nii.gz"), str(data / "tcga_gbm/brain2_image.nrrd"))),
            Source("ct", (s("STS_002_CT_image.nii.gz"),)),
            Source("pet", (s("STS_002_PET_image.nii.gz"),))]
    case = lambda c: crop_to_foreground(Case(brats([c], BRATS_CHANNELS), str(c / f"{c.name}_seg.nii.gz")), work / "cases")
    task = Task("brats2018", "brats2018", (case(b[4]),), tuple(case(c) for c in b[5:8]), ("mr",) * 4, SCHEMES["brats"], (64, 64, 64))
    return train, held, task


# ---------------------------------------------------------------- the resampling control


def control(cubes: torch.Tensor, generator: torch.Generator, factor: int = CONTROL_FACTOR, noise: float = CONTROL_NOISE) -> torch.Tensor:
    """Every cube through the same resampling, whatever its scale: area average over ``factor`` of its own
    voxels per axis, trilinear back to its size, plus white noise at ``noise`` of its range. Per voxel,
    resolution and noise are then alike at every scale; what still tells the scale is content."""
    size = cubes.shape[2:]
    coarse = F.interpolate(F.avg_pool3d(cubes, factor), size=size, mode="trilinear", align_corners=False)
    flat = cubes.flatten(2)
    spread = (flat.amax(2) - flat.amin(2))[..., None, None, None]
    return coarse + noise * spread * torch.randn(cubes.shape, generator=generator, device=cubes.device)


class ControlledPretraining(Pretraining):
    """Pretraining whose cubes all pass through :func:`control` (inputs and targets alike)."""

    def batch(self, step: int) -> ProxyBatch:
        b = super().batch(step)
        return ProxyBatch(control(b.inputs, self.generator), control(b.targets, self.generator), b.scales, b.sources)


# ---------------------------------------------------------------- pretraining


def pretrain_variant(name: str, overrides: dict, sources: Sequence[Source], steps: int, out: Path) -> Path:
    """The variant's model folder (reused when an earlier run left it with the same settings)."""
    folder = out / "pretrained" / name
    cfg = pretrain_config("tiny", {"steps": steps, "batch_size": 8, "checkpoint_every": steps, "eval_cubes": 64, **overrides})
    if (folder / "model.json").is_file():
        if json.loads((folder / "model.json").read_text())["provenance"]["config"] == to_dict(cfg):
            return folder
        raise SystemExit(f"{folder} holds another configuration; delete it or use another --out")
    entries = items(sources)
    check_volumes(entries, cfg, threads=1)
    trainer = ControlledPretraining if name == CONTROL else Pretraining
    trainer(cfg, sources, entries, folder, torch.device("cpu"), Distributed(), "none").fit(None)
    return folder


def disc_curve(folder: Path, points: int = 4) -> list[tuple[int, float]]:
    """(step, discriminator accuracy on the training batches) at ``points`` evenly spaced log rows."""
    with open(folder / "log.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("disc_acc")]
    pick = [rows[round(i * (len(rows) - 1) / (points - 1))] for i in range(points)] if rows else []
    return [(int(r["step"]), float(r["disc_acc"])) for r in pick]


# ---------------------------------------------------------------- fresh cubes from the held-out volumes


@dataclasses.dataclass
class Cubes:
    """Fresh cubes, each volume's in a row: corrupted inputs, clean targets, scales, sources, volume index."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    sources: torch.Tensor
    volumes: torch.Tensor


def fresh_cubes(sources: Sequence[Source], cfg: PretrainConfig, per_volume: int, seed: int) -> Cubes:
    """``per_volume`` corrupted cubes (scales drawn among those that fit) from each volume of ``sources``."""
    generator = torch.Generator().manual_seed(seed)
    load = LoadVolume(cfg.normalisation)
    parts = []
    for i, entry in enumerate(items(sources)):
        volume: PoolVolume = prepare(load(entry), cfg.proxy, torch.device("cpu"))
        batch = VolumePool([volume], cfg.proxy, torch.device("cpu")).sample(per_volume, generator)
        parts.append((batch.inputs, batch.targets, batch.scales, batch.sources, torch.full_like(batch.scales, i)))
    return Cubes(*(torch.cat(p) for p in zip(*parts)))


@torch.no_grad()
def scale_accuracy(net: SARNet, cubes: Cubes, view: str, generator: torch.Generator, batch: int = 32) -> float:
    net.eval()
    hits = 0
    for i in range(0, len(cubes.scales), batch):
        part = ProxyBatch(*(t[i:i + batch] for t in (cubes.inputs, cubes.targets, cubes.scales, cubes.sources)))
        logits = net(part.inputs, scale_input=scale_input(view, part, generator))["scale_logits"]
        hits += int((logits.argmax(1) == part.scales).sum())
    return hits / len(cubes.scales)


@torch.no_grad()
def disc_accuracy(net: SARNet, cubes: Cubes, batch: int = 32) -> float:
    net.eval()
    logits = torch.cat([net(cubes.inputs[i:i + batch])["source_logits"] for i in range(0, len(cubes.sources), batch)])
    return balanced_accuracy(logits.argmax(1), cubes.sources)


@torch.no_grad()
def bottleneck_features(net: SARNet, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The encoder's deepest level pooled per channel: mean and standard deviation over the cube."""
    net.eval()
    out = []
    for i in range(0, len(x), batch):
        deepest = net.backbone.encode(x[i:i + batch])[-1].flatten(2)
        out.append(torch.cat([deepest.mean(2), deepest.std(2)], dim=1))
    return torch.cat(out)


def texture_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per cube, log energy of the first and second differences along z, y and x, relative to its range."""
    flat = x.flatten(1)
    spread = (flat.amax(1) - flat.amin(1)).clamp_min(1e-6)[:, None]
    stats = []
    for axis in (2, 3, 4):
        d1 = torch.diff(x, dim=axis)
        d2 = torch.diff(d1, dim=axis)
        stats += [d1.flatten(1).square().mean(1), d2.flatten(1).square().mean(1)]
    return torch.log(torch.stack(stats, 1) / spread.square() + 1e-12)


# ---------------------------------------------------------------- linear classifiers


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over classes present of the share predicted right (chance 1/classes whatever the class sizes)."""
    return statistics.mean(float((predicted[truth == c] == c).float().mean()) for c in truth.unique())


def logistic_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   l2: float = 1e-2, classes: int | None = None) -> float:
    """Multinomial logistic regression (standardised features, L2, classes weighted equally, L-BFGS):
    balanced accuracy on the test set."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    k = classes or int(max(train_y.max(), test_y.max())) + 1
    counts = torch.bincount(train_y, minlength=k).clamp_min(1).float()
    weight = (len(train_y) / (k * counts))
    linear = torch.nn.Linear(a.shape[1], k).double()
    a, b = a.double(), b.double()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(a), train_y, weight=weight.double()) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return balanced_accuracy(linear(b).argmax(1), test_y)


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per variant (default 300)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="0: no fine-tuning (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (default 0)")
    parser.add_argument("--cubes", type=int, default=24, help="fresh cubes per held-out volume (default 24)")
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, CONTROL], default=[*VARIANTS, CONTROL])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/ssl-mechanisms"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    tune_malloc()
    configure_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log = lambda text: print(f"[{time.monotonic() - started:.0f}s] {text}", file=sys.stderr, flush=True)
    train, held, task = split(args.data, args.out)
    base = pretrain_config("tiny")
    held_cubes = fresh_cubes(held, base, args.cubes, seed=1)
    train_cubes = fresh_cubes(train, base, args.cubes, seed=2)
    gen = torch.Generator().manual_seed(3)
    controlled = {name: control(getattr(c, "targets"), gen) for name, c in (("held", held_cubes), ("train", train_cubes))}
    log(f"{len(held_cubes.scales)} held-out cubes, {len(train_cubes.scales)} probe-fitting cubes")

    results: dict = {"texture": {}, "variants": {}, "finetune": []}
    for what, pick in (("clean", lambda c: c.targets), ("corrupted", lambda c: c.inputs)):
        results["texture"][what] = logistic_probe(texture_statistics(pick(train_cubes)), train_cubes.scales,
                                                  texture_statistics(pick(held_cubes)), held_cubes.scales, classes=3)
    results["texture"]["control"] = logistic_probe(texture_statistics(controlled["train"]), train_cubes.scales,
                                                   texture_statistics(controlled["held"]), held_cubes.scales, classes=3)
    log(f"texture statistics: {results['texture']}")

    profile = Profile(pretrain_steps=args.steps, finetune_checkpoints=(args.finetune_steps,), seeds=tuple(args.seeds),
                      preset="tiny", finetune={"lr": 1e-3})
    for name in args.variants:
        overrides = {"scale_view": "clean"} if name == CONTROL else VARIANTS[name]
        row: dict = {}
        init = "scratch"
        if overrides is not None:
            folder = pretrain_variant(name, overrides, train, args.steps, args.out)
            init = str(folder)
            card, state = load_model(folder)
            net = model.build_net(card)
            net.load_state_dict(state)
            view = card.provenance["config"]["scale_view"]
            g = torch.Generator().manual_seed(4)
            if name == CONTROL:
                row["scale_acc"] = scale_accuracy(net, dataclasses.replace(held_cubes, targets=controlled["held"]), view, g)
            elif overrides.get("lambda_scale", 1.0) > 0:
                row["scale_acc"] = scale_accuracy(net, held_cubes, view, g)
            if net.discriminator is not None:
                row["disc_acc_fresh"] = disc_accuracy(net, held_cubes)
                row["disc_acc_training"] = disc_curve(folder)
        else:
            net = build_net(base, 3)
        row["probe_clean"] = logistic_probe(bottleneck_features(net, train_cubes.targets), train_cubes.sources,
                                            bottleneck_features(net, held_cubes.targets), held_cubes.sources, classes=3)
        row["probe_corrupted"] = logistic_probe(bottleneck_features(net, train_cubes.inputs), train_cubes.sources,
                                                bottleneck_features(net, held_cubes.inputs), held_cubes.sources, classes=3)
        results["variants"][name] = row
        log(f"{name}: {row}")
        if args.finetune_steps and name != CONTROL:
            for seed in args.seeds:
                results["finetune"] += fine_tune_and_score(name, init, task, 1, seed, profile, args.out, torch.device("cpu"))
            log(f"{name}: fine-tuned")
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results, args)
    (args.out / "mechanisms.md").write_text(table, encoding="utf-8")
    print(table)


def markdown(results: dict, args: argparse.Namespace) -> str:
    t = results["texture"]
    lines = [f"Texture statistics -> scale (logistic regression, balanced accuracy on held-out volumes, chance 0.33): "
             f"clean cubes {t['clean']:.2f}, corrupted inputs {t['corrupted']:.2f}, resampling control {t['control']:.2f}", "",
             "| variant | scale head (held-out) | disc. acc. over training | disc. (held-out, balanced) | "
             "source probe, clean cubes | source probe, corrupted |", "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    for name, row in results["variants"].items():
        curve = " ".join(f"{s}:{a:.2f}" for s, a in row.get("disc_acc_training", [])) or "-"
        lines.append(f"| {name} | {fmt(row.get('scale_acc'))} | {curve} | {fmt(row.get('disc_acc_fresh'))} | "
                     f"{row['probe_clean']:.2f} | {row['probe_corrupted']:.2f} |")
    if results["finetune"]:
        groups: dict[tuple, list[float]] = {}
        for r in results["finetune"]:
            groups.setdefault((r["init"], r["region"]), []).append(r["dice"])
        regions = list(dict.fromkeys(r for _, r in groups))
        lines += ["", f"Fine-tuning ({args.finetune_steps} steps, one BraTS 2018 case, seeds {args.seeds}): "
                      "mean Dice over the test cases (and seeds)", "",
                  "| init | " + " | ".join(regions) + " |", "|---|" + "---|" * len(regions)]
        for init in dict.fromkeys(i for i, _ in groups):
            lines.append(f"| {init} | " + " | ".join(f"{statistics.mean(groups[(init, r)]):.3f}" for r in regions) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
