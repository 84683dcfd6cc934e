"""``sarseg bench interactive``: a promptable model scored by simulated interaction on held-back cases,
next to a fixed (non-promptable) model on the same cases. Not shipped in the Slicer extension.

Per case, the target is the label's voxels of ``values`` (any label by default: the whole tumor). The
promptable model gets a click at the centre of the target's largest part, then a corrective click at
the centre of the largest error region of its prediction so far (:func:`sarseg.clicks.simulate`:
deterministic, as interactive benchmarks such as nnInteractive's and RITM's place clicks), up to
``clicks`` in all; the fixed model segments the whole case once. Scored: the Dice after 1, 3 and 5
clicks, and the clicks needed to reach Dice 0.85 and 0.90 (NoC: averaged with a case that never reaches
it counted as ``clicks``, as those benchmarks count it; how many reached it is reported too).
Written to ``out``: ``results.json`` (every case and the summary), ``results.md`` (the table) and
``dice_vs_clicks.png``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .clicks import dice, simulate
from .core import datasets
from .core.errors import BadInput
from .core.files import writing
from .infer import Segmenter
from .io import Image, read_image, read_label
from .prompted import PromptSession

REPORTED_CLICKS = (1, 3, 5)
THRESHOLDS = (0.85, 0.90)


@dataclass(frozen=True)
class Task:
    """What one run scores: the held-back cases of a dataset and which of its channels the promptable
    model sees."""

    name: str
    cases: tuple[datasets.Case, ...]
    channels: tuple[str, ...]
    channel: int
    values: tuple[int, ...]  # label values of the target; empty: any label


def dataset_task(path: Path, test_cases: int, channel: str | None, values: Sequence[int], name: str | None) -> Task:
    """The last ``test_cases`` labeled cases of a dataset.json; ``channel`` by name or index (default the first)."""
    dataset = datasets.read(path)
    labeled = dataset.labeled
    if test_cases < 1 or test_cases > len(labeled):
        raise BadInput("--test-cases", f"must lie in 1..{len(labeled)}, the labeled cases of {path} (got {test_cases})")
    names = dataset.channels
    if channel is None:
        index = 0
    elif channel in names:
        index = names.index(channel)
    elif channel.isdigit() and int(channel) < len(names):
        index = int(channel)
    else:
        raise BadInput("--channel", f"{channel!r} is not a channel of {path} ({', '.join(names)}, or 0..{len(names) - 1})")
    label = f"{dataset.name or Path(path).parent.name} {names[index]}"
    return Task(name or label, labeled[len(labeled) - test_cases:], names, index, tuple(values))


def _channels(image: Image, segmenter: Segmenter, task: Task, role: str) -> Image:
    """The channels a model takes: all of the case's, or (a one-channel model) the task's channel."""
    wanted = len(segmenter.config.modalities)
    if wanted == image.channels:
        return image
    if wanted == 1:
        return Image(image.array[task.channel:task.channel + 1], image.geometry, image.paths)
    raise BadInput(role, f"takes {wanted} channels; the cases have {image.channels} ({', '.join(task.channels)})")


def score_case(case: datasets.Case, task: Task, promptable: Segmenter, fixed: Segmenter | None, clicks: int) -> dict | None:
    """One case's row: the promptable model's Dice after each click, the clicks to each threshold, the
    time per click, and the fixed model's Dice; None when the case holds no target voxel."""
    image = read_image(case.files())
    label = read_label(case.label, image.geometry)
    target = np.isin(label, task.values) if task.values else label > 0
    if not target.any():
        return None
    session = PromptSession(promptable, _channels(image, promptable, task, "--model"))

    def segment(prompts) -> np.ndarray:
        mask = np.zeros(target.shape, dtype=bool)
        result = session(prompts)
        mask[result.region] = result.label > 0
        return mask

    started = time.perf_counter()
    result = simulate(segment, target, clicks, image.geometry.spacing[::-1])
    row = {"dataset": task.name, "case": case.name, "target_voxels": int(target.sum()), "dice_per_click": result.dice,
           "seconds_per_click": round((time.perf_counter() - started) / clicks, 3),
           **{f"clicks_to_{t:.2f}": result.clicks_to(t) for t in THRESHOLDS}, "fixed_dice": None}
    if fixed is not None:
        predicted, _ = fixed(_channels(image, fixed, task, "--fixed"))
        row["fixed_dice"] = dice(np.isin(predicted, task.values) if task.values else predicted > 0, target)
    return row


def summarise(rows: Sequence[dict], clicks: int) -> list[dict]:
    """Per dataset: mean Dice after the reported clicks, NoC per threshold (unreached counted as
    ``clicks``) and how many cases reached it, and the fixed model's mean Dice."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == name]
        summary = {"dataset": name, "cases": len(group),
                   **{f"dice_{k}": statistics.mean(r["dice_per_click"][k - 1] for r in group) for k in REPORTED_CLICKS if k <= clicks}}
        for t in THRESHOLDS:
            reached = [r[f"clicks_to_{t:.2f}"] for r in group]
            summary[f"noc_{t:.2f}"] = statistics.mean(clicks if n is None else n for n in reached)
            summary[f"reached_{t:.2f}"] = sum(n is not None for n in reached)
        fixed = [r["fixed_dice"] for r in group if r["fixed_dice"] is not None]
        summary["fixed_dice"] = statistics.mean(fixed) if fixed else None
        out.append(summary)
    return out


def markdown(summary: Sequence[dict], clicks: int) -> str:
    shown = [k for k in REPORTED_CLICKS if k <= clicks]
    head = ["dataset", "cases", *(f"Dice, {k} click{'s' * (k > 1)}" for k in shown),
            *(f"clicks to {t:.2f} (reached)" for t in THRESHOLDS), "fixed model Dice"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["dataset"], str(s["cases"]), *(f"{s[f'dice_{k}']:.3f}" for k in shown),
                 *(f"{s[f'noc_{t:.2f}']:.1f} ({s[f'reached_{t:.2f}']}/{s['cases']})" for t in THRESHOLDS),
                 "-" if s["fixed_dice"] is None else f"{s['fixed_dice']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nNoC: clicks to reach the Dice, a case that never does within {clicks} counted as {clicks}.\n"


def plot(rows: Sequence[dict], path: Path) -> Path:
    """Mean Dice against clicks per dataset, the fixed model's mean Dice as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == name]
        curve = np.mean([r["dice_per_click"] for r in group], axis=0)
        line, = ax.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{name} (promptable)")
        fixed = [r["fixed_dice"] for r in group if r["fixed_dice"] is not None]
        if fixed:
            ax.axhline(float(np.mean(fixed)), linestyle="--", color=line.get_color(), label=f"{name} (fixed)")
    ax.set_xlabel("clicks")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with writing(path):
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def benchmark(task: Task, model: Path, fixed: Path | None, clicks: int, out: Path, device: torch.device,
              log: Callable[[str], None] = lambda line: None) -> str:
    """Score every case of ``task``; write the results into ``out``; return the table."""
    if clicks < 1:
        raise BadInput("--clicks", f"must be at least 1 (got {clicks})")
    promptable = Segmenter.load(model, device)
    if not promptable.card.promptable:
        raise BadInput(model, "is not a promptable model (model.json has no 'prompts'); give it as --fixed")
    baseline = Segmenter.load(fixed, device) if fixed is not None else None
    rows = []
    for i, case in enumerate(task.cases):
        row = score_case(case, task, promptable, baseline, clicks)
        where = f"sarseg: {task.name} {i + 1}/{len(task.cases)} {case.name}"
        if row is None:
            log(f"{where}: skipped, no voxel of the target (label values {list(task.values) or 'any'})")
            continue
        rows.append(row)
        fixed_dice = "-" if row["fixed_dice"] is None else f"{row['fixed_dice']:.3f}"
        log(f"{where}: Dice by click {' '.join(f'{d:.3f}' for d in row['dice_per_click'])}; fixed model {fixed_dice}")
    if not rows:
        raise BadInput("--values", f"no held-back case holds a voxel of the target (label values {list(task.values) or 'any'})")
    summary = summarise(rows, clicks)
    table = markdown(summary, clicks)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"model": str(model), "fixed": None if fixed is None else str(fixed),
                                                      "clicks": clicks, "cases": rows, "summary": summary}, indent=2))
        (out / "results.md").write_text(table)
    plot(rows, out / "dice_vs_clicks.png")
    return table
