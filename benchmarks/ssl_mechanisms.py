"""What SAR's scale head and adversarial term actually learn, measured on volumes kept out of pretraining.

    nice -n 10 .venv/bin/python benchmarks/ssl_mechanisms.py [--steps 1000] [--finetune-steps 300] [--seeds 0 1]
        [--variants ...] [--data ../shared/data] [--out runs/ssl-mechanisms] [--threads 1]

Pretrains the ``tiny`` network (batch 8) on shared real volumes (MR, CT, PET) minus a held-out set, once
per variant: the scale head reading the corrupted input (as before), a lightly corrupted view (the Bezier
intensity map alone) or the clean cube through the shared encoder; the default scales (32, 64, 128 mm)
or three times apart (16, 48, 144 mm); with the adversarial term at 0, 0.05 (default) or 0.5;
restoration only. On fresh cubes from the held-out volumes it then measures:

- each head's scale accuracy (chance 1/3), and that of heads pretrained on the *resampling control*:
  every cube, whatever its scale, reduced to the same coarse grid (area average over 4x4x4 of its own
  voxels, trilinear back) with the same noise floor, so resolution and noise per voxel no longer tell the
  scale and only content (anatomy) can;
- the scale from six texture statistics (gradient and second-difference energy per axis) by a logistic
  regression fitted on the pretraining volumes: what a pure texture cue gives on clean, corrupted and
  controlled cubes;
- the discriminator's accuracy over training (``disc_acc`` in log.csv) and on held-out cubes;
- a linear probe of the source on the encoder's pooled bottleneck (per channel mean and spread; logistic
  regression fitted on the pretraining volumes' cubes, balanced accuracy on the held-out ones): lower =
  more modality-invariant;
- Dice of a short fine-tuning from each initialisation on one BraTS 2018 case, on three other ones.

Prints Markdown tables and writes them to ``--out``/mechanisms.md (results.json beside it). Pretrained
models and fine-tuning scores left in ``--out`` by an earlier run with the same settings are reused.
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
from sarseg import model
from sarseg.core.labels import SCHEMES
from sarseg.data import LoadVolume, Source, VolumePool, check_volumes, items, prepare
from sarseg.finetune import Case
from sarseg.nets import SARNet
from sarseg.pretrain import Pretraining, build_net, scale_input
from sarseg.proxy import ProxyBatch
from sarseg.runtime import configure_threads, tune_malloc
from sarseg.train import Distributed
from ssl_shared import SHARED_DATA, crop_to_foreground

BRATS_CHANNELS = ("flair", "t1", "t1ce", "t2")
WIDE = {"proxy": {"scales": (16.0, 48.0, 144.0)}}  # three times apart instead of two
VARIANTS = {  # name -> pretraining overrides (on the tiny preset); None: no pretraining (scratch)
    "scratch": None,
    "restoration": {"lambda_scale": 0.0, "lambda_adv": 0.0, "scale_view": "corrupted"},  # the view: no extra pass
    "corrupted": {"scale_view": "corrupted"},
    "light": {"scale_view": "light"},
    "clean": {"scale_view": "clean"},
    "corrupted_wide": {"scale_view": "corrupted", **WIDE},
    "light_wide": {"scale_view": "light", **WIDE},
    "clean_wide": {"scale_view": "clean", **WIDE},
    "clean_wide_no_adv": {"scale_view": "clean", "lambda_adv": 0.0, **WIDE},
    "clean_wide_adv0.5": {"scale_view": "clean", "lambda_adv": 0.5, **WIDE},
}
CONTROLS = {"clean_control": "clean", "clean_wide_control": "clean_wide"}  # as that variant, on controlled cubes
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
    trainer = ControlledPretraining if name in CONTROLS else Pretraining
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
    """Fresh cubes: corrupted inputs, clean targets, scale and source labels."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    sources: torch.Tensor


@dataclasses.dataclass
class CubeSets:
    """For one set of scales: ``per_volume`` cubes from every volume (scale accuracy, texture statistics)
    and ``per_source`` cubes from every source (the source probe, so no source outweighs the others)."""

    per_volume: Cubes
    per_source: Cubes


def fresh_cubes(sources: Sequence[Source], cfg: PretrainConfig, per_volume: int, per_source: int, seed: int) -> CubeSets:
    """Corrupted cubes (scales drawn among those that fit) from each volume of ``sources``, read once."""
    generator = torch.Generator().manual_seed(seed)
    load, cpu = LoadVolume(cfg.normalisation), torch.device("cpu")
    volumes_of = {i: len(s.paths) for i, s in enumerate(sources)}
    sets: tuple[list, list] = ([], [])
    for entry in items(sources):
        pool = VolumePool([prepare(load(entry), cfg.proxy, cpu)], cfg.proxy, cpu)
        for parts, n in zip(sets, (per_volume, -(-per_source // volumes_of[entry["source"]]))):
            batch = pool.sample(n, generator)
            parts.append((batch.inputs, batch.targets, batch.scales, batch.sources))
    return CubeSets(*(Cubes(*(torch.cat(p) for p in zip(*parts))) for parts in sets))


def controlled(cubes: Cubes, seed: int) -> Cubes:
    """The same cubes with clean targets through the resampling control (what a control variant's head reads)."""
    return dataclasses.replace(cubes, targets=control(cubes.targets, torch.Generator().manual_seed(seed)))


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


def majority_share(sources: Sequence[Source]) -> float:
    """Share of the pretraining volumes (so about of the cubes) in the largest source: what a discriminator
    that always names it scores on the training batches."""
    return max(len(s.paths) for s in sources) / sum(len(s.paths) for s in sources)


def measure(name: str, folder: Path | None, sets: tuple[CubeSets, CubeSets], base: PretrainConfig) -> dict:
    """One initialisation's numbers on fresh cubes (``sets``: from the pretraining and the held-out volumes)."""
    fit, held = sets
    row: dict = {}
    if folder is None:
        torch.manual_seed(base.seed)  # the network pretraining would start from
        net = build_net(base, 3)
    else:
        card, state = model.load_model(folder)
        net = model.build_net(card)
        net.load_state_dict(state)
        config = card.provenance["config"]
        row["scales"] = config["proxy"]["scales"]
        if config["lambda_scale"] > 0:
            cubes = controlled(held.per_volume, 5) if name in CONTROLS else held.per_volume
            row["scale_acc"] = scale_accuracy(net, cubes, config["scale_view"], torch.Generator().manual_seed(4))
        if net.discriminator is not None:
            row["disc_acc_held_out"] = disc_accuracy(net, held.per_source)
            row["disc_acc_training"] = disc_curve(folder)
    for what in ("targets", "inputs"):
        row[f"probe_{what}"] = logistic_probe(bottleneck_features(net, getattr(fit.per_source, what)), fit.per_source.sources,
                                              bottleneck_features(net, getattr(held.per_source, what)), held.per_source.sources,
                                              classes=3)
    return row


def texture(sets: tuple[CubeSets, CubeSets]) -> dict[str, float]:
    """Scale from six texture statistics (fitted on the pretraining volumes, scored on the held-out ones)."""
    fit, held = (s.per_volume for s in sets)
    views = {"clean": lambda c: c.targets, "corrupted": lambda c: c.inputs, "control": lambda c: controlled(c, 5).targets}
    return {what: logistic_probe(texture_statistics(view(fit)), fit.scales, texture_statistics(view(held)), held.scales, classes=3)
            for what, view in views.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps per variant (default 1000)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="0: no fine-tuning (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds (default 0 1)")
    parser.add_argument("--cubes", type=int, default=24, help="fresh cubes per volume (default 24; 4x that per source for the probe)")
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, *CONTROLS], default=[*VARIANTS, *CONTROLS])
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
    sets: dict[tuple, tuple[CubeSets, CubeSets]] = {}
    results: dict = {"majority_share": majority_share(train), "texture": {}, "variants": {}, "finetune": []}
    earlier = json.loads((args.out / "results.json").read_text())["finetune"] if (args.out / "results.json").is_file() else []
    profile = Profile(pretrain_steps=args.steps, finetune_checkpoints=(args.finetune_steps,), seeds=tuple(args.seeds),
                      preset="tiny", finetune={"lr": 1e-3})
    for name in args.variants:
        overrides = VARIANTS[CONTROLS.get(name, name)]
        scales = tuple(((overrides or {}).get("proxy") or {}).get("scales", base.proxy.scales))
        if scales not in sets:
            cfg = pretrain_config("tiny", {"proxy": {"scales": scales}})
            sets[scales] = (fresh_cubes(train, cfg, args.cubes, 4 * args.cubes, seed=2),
                            fresh_cubes(held, cfg, args.cubes, 4 * args.cubes, seed=1))
            results["texture"][str(scales)] = texture(sets[scales])
            log(f"scales {scales}: {len(sets[scales][1].per_volume.scales)} held-out cubes; texture statistics "
                f"{results['texture'][str(scales)]}")
        folder = None if overrides is None else pretrain_variant(name, overrides, train, args.steps, args.out)
        results["variants"][name] = measure(name, folder, sets[scales], base)
        log(f"{name}: {results['variants'][name]}")
        if args.finetune_steps and name not in CONTROLS:
            for seed in args.seeds:  # an earlier run's rows for the same fine-tuning are reused
                rows = [r for r in earlier if (r["init"], r["seed"], r["step"]) == (name, seed, args.finetune_steps)]
                results["finetune"] += rows or fine_tune_and_score(name, str(folder or "scratch"), task, 1, seed, profile,
                                                                   args.out, torch.device("cpu"))
            log(f"{name}: fine-tuned")
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results, args)
    (args.out / "mechanisms.md").write_text(table, encoding="utf-8")
    print(table)


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["Scale from six texture statistics (logistic regression fitted on the pretraining volumes; accuracy on "
             "the held-out ones, chance 0.33):", "", "| scales (mm) | clean cubes | corrupted inputs | resampling control |",
             "|---|---|---|---|"]
    for scales, t in results["texture"].items():
        lines.append(f"| {scales} | {t['clean']:.2f} | {t['corrupted']:.2f} | {t['control']:.2f} |")
    lines += ["", f"Held-out volumes, fresh cubes. Discriminator over training: accuracy on the training batches at "
                  f"four log points (the largest source is {results['majority_share']:.2f} of the volumes); on held-out "
                  f"cubes, and the source probe, balanced accuracy (chance 0.33; lower = more invariant).", "",
              "| variant | scale head | disc. over training | disc. held-out | source probe, clean | source probe, corrupted |",
              "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    for name, row in results["variants"].items():
        curve = " ".join(f"{s}: {a:.2f}" for s, a in row.get("disc_acc_training", [])) or "-"
        lines.append(f"| {name} | {fmt(row.get('scale_acc'))} | {curve} | {fmt(row.get('disc_acc_held_out'))} | "
                     f"{row['probe_targets']:.2f} | {row['probe_inputs']:.2f} |")
    if results["finetune"]:
        groups: dict[tuple, list[float]] = {}
        for r in results["finetune"]:
            groups.setdefault((r["init"], r["region"]), []).append(r["dice"])
        regions = list(dict.fromkeys(r for _, r in groups))
        lines += ["", f"Fine-tuning ({args.finetune_steps} steps on one BraTS 2018 case, seeds {args.seeds}): Dice on "
                      "three other cases, mean ± std over cases and seeds; and the paired difference from restoration-only "
                      "pretraining (same case, same seed), mean ± std", "",
                  "| init | " + " | ".join(regions) + " | " + " | ".join(f"{r} vs restoration" for r in regions) + " |",
                  "|---|" + "---|" * 2 * len(regions)]
        for init in dict.fromkeys(i for i, _ in groups):
            cells = [f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in (groups[(init, r)] for r in regions)]
            for r in regions:  # rows come in the same order (seed, then test case) for every init
                base = groups.get(("restoration", r))
                diff = [a - b for a, b in zip(groups[(init, r)], base)] if base and len(base) == len(groups[(init, r)]) else None
                cells.append("-" if diff is None or init == "restoration" else f"{statistics.mean(diff):+.3f} ± {statistics.pstdev(diff):.3f}")
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
