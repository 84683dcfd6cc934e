"""``sarseg bench ssl``: the paper's experiment in small. One network, one budget; initialisations
scratch / restoration only (Models Genesis) / SAR without the adversarial term / full SAR; fine-tuned
on labeled cases and scored on cases never used in training, per region, at several points of the
step budget, over several seeds. Differences smaller than the seed spread are called no difference.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .config import PretrainConfig, finetune_config, merge, pretrain_config, to_dict
from .core.card import read_card
from .core.errors import BadInput
from .core.labels import LabelScheme
from .data import Source, parse_sources
from .finetune import Case, auto_scheme, cases_from_dataset, finetune
from .infer import Segmenter
from .io import read_image, read_label
from .metrics import evaluate_maps
from .pretrain import pretrain

INITS = {  # name -> pretraining overrides (None: from scratch)
    "scratch": None,
    "restoration": {"lambda_scale": 0.0, "lambda_adv": 0.0},
    "sar_no_adv": {"lambda_adv": 0.0},
    "sar": {},
}


@dataclass(frozen=True)
class Task:
    """Fine-tune on the first k ``train`` cases, test on ``test`` cases (never used in training)."""

    name: str
    dataset: str  # rows and tables group by it (folds of one dataset pool their seeds)
    train: tuple[Case, ...]
    test: tuple[Case, ...]
    modalities: tuple[str, ...]
    labels: LabelScheme
    patch_size: tuple[int, int, int]  # x, y, z voxels: 64^3 at 1 mm (BraTS); thin for 6.5 mm slices (TCGA)


@dataclass(frozen=True)
class Profile:
    """One budget for every initialisation. ``pretrain`` and ``finetune`` override the preset."""

    pretrain_steps: int
    finetune_checkpoints: tuple[int, ...]
    seeds: tuple[int, ...]
    labeled_cases: tuple[int, ...] = (1,)  # fine-tune on the first k cases of each task's training pool
    preset: str = "tiny"
    pretrain: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)


PROFILES = {
    # 2 CPU cores, under 30 minutes: a 0.6M-parameter network, as the shared calibration run
    "quick": Profile(pretrain_steps=400, finetune_checkpoints=(100, 300), seeds=(0, 1, 2),
                     pretrain={"batch_size": 8, "proxy": {"input_size": (64, 64, 32)}}, finetune={"lr": 1e-3}),
    "full": Profile(pretrain_steps=5000, finetune_checkpoints=(100, 300, 1000), seeds=(0, 1, 2), preset="small",
                    pretrain={"batch_size": 8}, finetune={"lr": 1e-3}),
}


def dataset_tasks(path: Path, test_cases: int = 1, patch_size: tuple[int, int, int] = (64, 64, 64)) -> tuple[list[str], list[Task]]:
    """Pretraining sources and one fine-tuning task from your own labeled cases (a Decathlon or nnU-Net v2
    dataset.json, e.g. a SARPretrain training folder's): the last ``test_cases`` labeled cases are the test
    set, the others the training pool in order; the dataset.json itself is the pretraining source, so every
    channel of every case is an unlabeled volume named by its channel."""
    cases, names = cases_from_dataset(path)
    if len(cases) <= test_cases or test_cases < 1:
        raise BadInput(path, f"holds {len(cases)} labeled case(s); the benchmark needs at least one to train on "
                             f"and {test_cases} to test on")
    names = tuple(n.lower() for n in names)
    sources = [str(path)]
    train, test = tuple(cases[:-test_cases]), tuple(cases[-test_cases:])
    name = Path(path).resolve().parent.name or "dataset"
    return sources, [Task(name, name, train, test, names, auto_scheme(train), patch_size)]


def benchmark(sources: Sequence[str], tasks: Sequence[Task], out: Path, profile: str, labeled_cases: Sequence[int] | None,
              device: torch.device, log=print) -> str:
    """The protocol under profile ``profile`` for each number of ``labeled_cases`` (default: all the training
    cases): ``results.json``, ``summary.md`` and the plots in ``out``; returns the Markdown table."""
    pool = max(len(t.train) for t in tasks)
    counts = sorted(set(labeled_cases or [pool]))
    if not 1 <= counts[0] <= counts[-1] <= pool:
        raise BadInput("--labeled-cases", f"each K must lie in 1..{pool}, the training cases there are (got {counts})")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(run(sources, tasks, out, dataclasses.replace(PROFILES[profile], labeled_cases=tuple(counts)),
                            device, log))
    table = markdown(summary)
    (out / "summary.md").write_text(table, encoding="utf-8")
    plot(summary, out)
    return table


def run(sources: Sequence[str], tasks: Sequence[Task], out: Path, profile: Profile, device: torch.device, log=print,
        inits: Mapping[str, dict | None] = INITS) -> list[dict]:
    """All runs; returns one row per (init, task, labeled cases, seed, step, region) and writes results.json.

    ``inits`` maps a name to pretraining overrides (None: scratch), so variants of SAR (other lambdas,
    scales, schedules) run through the same protocol."""
    started = time.monotonic()
    parsed = parse_sources(sources)
    rows: list[dict] = []
    for init, overrides in inits.items():
        init_path = "scratch"
        if overrides is not None:
            init_path = str(out / "pretrained" / init)
            cfg = pretrain_config(profile.preset, merge(profile.pretrain, {"steps": profile.pretrain_steps, "workers": 0,
                                                                           "checkpoint_every": profile.pretrain_steps, **overrides}))
            if (Path(init_path) / "model.json").exists():
                check_reusable(Path(init_path), cfg, parsed)
            else:
                pretrain(cfg, parsed, Path(init_path), device, progress_mode="none")
            log(f"[{time.monotonic() - started:.0f}s] pretrained {init}")
        for task in tasks:
            for k in (k for k in profile.labeled_cases if k <= len(task.train)):
                for seed in profile.seeds:
                    rows += fine_tune_and_score(init, init_path, task, k, seed, profile, out, device)
                log(f"[{time.monotonic() - started:.0f}s] {init} {task.name} {k} labeled case(s) done")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return rows


def check_reusable(folder: Path, cfg: PretrainConfig, sources: Sequence[Source]) -> None:
    """A pretrained model left by an earlier run is reused only if it came from the same settings and data."""
    card = read_card(folder)
    provenance = card.provenance
    if provenance.get("config") != to_dict(cfg) or provenance.get("data") != {s.name: list(s.paths) for s in sources}:
        raise BadInput(card.path, "was pretrained with other settings or data than this run asks for; "
                                  "use another --out, or delete that folder to pretrain again")


def fine_tune_and_score(init: str, init_path: str, task: Task, labeled: int, seed: int, profile: Profile, out: Path,
                        device: torch.device) -> list[dict]:
    folder = out / "finetuned" / f"{init}-{task.name}-k{labeled}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # a rerun fine-tunes again (its pretrained models are reused)
    rows = []
    for i, steps in enumerate(profile.finetune_checkpoints):
        cfg = finetune_config(profile.preset, {**profile.finetune, "steps": steps, "seed": seed, "val_fraction": 0.0,
                                               "patch_size": task.patch_size, "modalities": list(task.modalities),
                                               "labels": task.labels.to_dict(), "checkpoint_every": steps, "workers": 0,
                                               "inference": {"overlap": 0.25, "sw_batch_size": 8}})
        finetune(cfg, list(task.train[:labeled]), init_path, folder, device, resume=i > 0, progress_mode="none", steps=steps)
        segmenter = Segmenter.load(folder, device)
        for case in task.test:
            image = read_image(case.images, task.modalities)
            label, _ = segmenter(image)
            reference = read_label(case.label, image.geometry)
            for metric in evaluate_maps(label, reference, image.geometry.spacing[::-1], task.labels):
                rows.append({"init": init, "task": task.name, "dataset": task.dataset, "seed": seed, "step": steps,
                             "region": metric["name"], "dice": metric["dice"], "labeled_cases": labeled})
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and standard deviation over seeds (and folds) per (dataset, region, labeled cases, step, init),
    with a verdict against scratch: better/worse only when the means differ by more than the larger spread."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["region"], r["labeled_cases"], r["step"], r["init"]), []).append(r["dice"])
    out = []
    for (dataset, region, labeled, step, init), values in sorted(groups.items()):
        mean, std = statistics.mean(values), statistics.pstdev(values)
        base = groups.get((dataset, region, labeled, step, "scratch"))
        verdict = "-" if init == "scratch" else "n/a (no scratch run)" if base is None else _verdict(mean, std, base)
        out.append({"dataset": dataset, "region": region, "labeled_cases": labeled, "step": step, "init": init,
                    "mean": mean, "std": std, "n": len(values), "vs_scratch": verdict})
    return out


def _verdict(mean: float, std: float, base: Sequence[float]) -> str:
    b_mean, b_std = statistics.mean(base), statistics.pstdev(base)
    margin = max(std, b_std)
    return "better" if mean - b_mean > margin else "worse" if b_mean - mean > margin else "no difference"


def markdown(summary: Sequence[dict]) -> str:
    lines = ["| dataset | region | labeled cases | fine-tune steps | init | Dice mean ± std (n) | vs scratch |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['dataset']} | {s['region']} | {s['labeled_cases']} | {s['step']} | {s['init']} | "
                     f"{s['mean']:.3f} ± {s['std']:.3f} ({s['n']}) | {s['vs_scratch']} |")
    return "\n".join(lines) + "\n"


def plot(summary: Sequence[dict], folder: Path) -> list[Path]:
    """``dice_vs_steps.png`` (one panel per dataset and region, at the most labeled cases) and, when more
    than one number of labeled cases ran, ``dice_vs_cases.png`` (at the last step); one line per init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s["dataset"], s["region"]) for s in summary})
    inits = list(dict.fromkeys(s["init"] for s in summary))
    most = {d: max(s["labeled_cases"] for s in summary if s["dataset"] == d) for d, _ in panels}
    last = {d: max(s["step"] for s in summary if s["dataset"] == d) for d, _ in panels}
    figures = [("dice_vs_steps.png", "step", "fine-tuning steps", lambda s: s["labeled_cases"] == most[s["dataset"]])]
    if len({s["labeled_cases"] for s in summary}) > 1:
        figures.append(("dice_vs_cases.png", "labeled_cases", "labeled cases", lambda s: s["step"] == last[s["dataset"]]))
    written = []
    for name, x, xlabel, keep in figures:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
        for ax, (dataset, region) in zip(axes[0], panels):
            for init in inits:
                points = [s for s in summary if (s["dataset"], s["region"], s["init"]) == (dataset, region, init) and keep(s)]
                if points:
                    ax.errorbar([p[x] for p in points], [p["mean"] for p in points], [p["std"] for p in points],
                                label=init, marker="o", capsize=3)
            ax.set_title(f"{dataset}: {region}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("Dice on unseen cases")
            ax.set_ylim(0, 1)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        written.append(folder / name)
    return written
