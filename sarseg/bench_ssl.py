"""``sarseg bench ssl``: the paper's experiment in small. One network, one budget; initialisations
scratch / restoration only (Models Genesis) / SAR at its defaults / the best SAR variant; fine-tuned
on labeled cases and scored on cases never used in training, per region, at several points of the
step budget and for several numbers of labeled cases, over several seeds. Each initialisation is
compared with scratch and with restoration only by paired differences (same seed, same test case):
better or worse only when the 95% interval of the mean difference, seeds and test cases counted as crossed
random factors, excludes 0.
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

import numpy as np
import torch
from scipy import stats

from .config import PretrainConfig, finetune_config, merge, pretrain_config, to_dict
from .core.card import read_card
from .core.errors import BadInput
from .core.labels import SCHEMES, LabelScheme
from .data import Source, parse_sources
from .finetune import Case, auto_scheme, cases_from_dataset, finetune
from .infer import Segmenter
from .io import Image, body_mask, read_image, read_label
from .metrics import evaluate_maps
from .pretrain import pretrain

INITS = {  # name -> pretraining overrides (None: from scratch)
    "scratch": None,
    "restoration": {"lambda_scale": 0.0, "lambda_adv": 0.0},
    "sar": {},
    # the best SAR variant, chosen on cases the shared-data bench never tests on (docs/bench-ssl/README.md): every
    # measurement found the adversarial term costing Dice; without it and with the scale term ten times stronger
    # SAR beat scratch on BRATS 2015 pat0002 (whole tumor, tumor core), level with restoration only
    "sar_scale1_no_adv": {"lambda_scale": 1.0, "lambda_adv": 0.0},
}
BASELINES = ("scratch", "restoration")  # every initialisation is compared with these, pair by pair


@dataclass(frozen=True)
class Task:
    """Fine-tune on the first k ``train`` cases for each k in ``labeled_cases``, test on ``test`` cases (never
    used in training; the same for every k)."""

    name: str
    dataset: str  # rows and tables group by it (folds of one dataset pool their seeds)
    train: tuple[Case, ...]
    test: tuple[Case, ...]
    modalities: tuple[str, ...]
    labels: LabelScheme
    patch_size: tuple[int, int, int]  # x, y, z voxels: 64^3 at 1 mm (BraTS); thin for 6.5 mm slices (TCGA)
    labeled_cases: tuple[int, ...] = ()  # the k values (default: every training case at once)

    def counts(self, override: Sequence[int] | None = None) -> list[int]:
        """The k values to run: ``override`` (a profile's) where given, else the task's own; those beyond the pool are skipped."""
        return [k for k in (override or self.labeled_cases or (len(self.train),)) if k <= len(self.train)]


@dataclass(frozen=True)
class Profile:
    """One budget for every initialisation. ``pretrain`` and ``finetune`` override the preset; ``shared`` holds
    the k values per dataset of the shared-data tasks (:func:`shared_tasks`)."""

    pretrain_steps: int
    finetune_checkpoints: tuple[int, ...]
    seeds: tuple[int, ...]
    labeled_cases: tuple[int, ...] | None = None  # every task's k values instead of its own (--labeled-cases)
    preset: str = "tiny"
    pretrain: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    shared: dict = field(default_factory=lambda: dict(EVERY_K))


EVERY_K = {"brats2018": (1, 2, 4, 8), "lidc": (8, 32, 128)}  # labeled cases per shared dataset
QUICK_PRETRAIN = {"batch_size": 8, "proxy": {"input_size": (64, 64, 32)}}
# 2 CPU cores, under 30 minutes: a 0.6M-parameter network, as the shared calibration run; on the shared data
# it leaves out BraTS with 2, 4 and 8 labeled cases (each BraTS k about 7 minutes), LIDC with 128, the
# steps after 200 and full's larger network
QUICK = Profile(pretrain_steps=400, finetune_checkpoints=(100, 200), seeds=(0, 1, 2), pretrain=QUICK_PRETRAIN,
                finetune={"lr": 1e-3}, shared={"brats2018": (1,), "lidc": (8, 32)})
PROFILES = {
    "quick": QUICK,
    "cases": dataclasses.replace(QUICK, shared=dict(EVERY_K)),  # quick's budget at every k: 34 minutes on 2 cores
    "full": Profile(pretrain_steps=5000, finetune_checkpoints=(100, 300, 1000), seeds=(0, 1, 2), preset="small",
                    pretrain={"batch_size": 8}, finetune={"lr": 1e-3}),
    # one H100/H200, about 10 minutes (estimated, not yet run on a GPU: docs/bench-ssl/README.md): quick's tasks and
    # points with full's larger network and 4x quick's pretraining cubes; a new volume every 16 steps, as reading
    # one (about 0.5 s) would otherwise outlast a GPU step
    "gpu": Profile(pretrain_steps=800, finetune_checkpoints=(100, 200), seeds=(0, 1, 2), preset="small",
                   pretrain={**QUICK_PRETRAIN, "batch_size": 16, "pool_refresh": 16}, finetune={"lr": 1e-3},
                   shared={"brats2018": (1,), "lidc": (8, 32)}),
}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside a source checkout
BRATS_CHANNELS = (("flair", "flair"), ("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"))  # model channel, BraTS 2018 file suffix
BRATS_POOL = 8  # the first 8 BraTS 2018 cases (by name) are the training pool, the others the test cases
# the pool's first case, so k = 1 trains on it: the labeled case chosen on development cases only
# (benchmarks/baseline_brats.py --rotate: 0.68 whole tumor on the other five, 2013_11_1 0.51)
BRATS_FIRST = "Brats18_CBICA_AME_1"
LIDC_POOL, LIDC_TEST = 128, 50  # VOIs (by name): the last 50 test, the first 128 of other patients the pool
# 48x48 covers a whole VOI in-plane (43-44 voxels for 9 in 10 of them, 0.5-1 mm), 16 is the thinnest side the
# U-Net takes (4 poolings); a VOI is 2-20 slices (median 6): padded to 16, so most are one window
LIDC_PATCH = (48, 48, 16)


def pretraining_sources(data: Path) -> list[str]:
    """Every unlabeled volume of the shared data that a cube fits in, as ``sarseg pretrain --data`` specs: each
    BraTS channel as an MR volume, CT, PET (the LIDC VOIs are left out: 2-20 slices, thinner than a cube)."""
    sources = [f"mr={data}/brats2018/*/*_{suffix}.nii.gz" for _, suffix in BRATS_CHANNELS]
    sources += [f"mr={data}/brats2015/*/Flair_subtrMeanDivStd.nii.gz", f"mr={data}/brats2015/*/T1c_subtrMeanDivStd.nii.gz",
                f"mr={data}/tcga_gbm/brain?_image.nrrd", f"mr={data}/sarcoma/*MR_T1_image.nii.gz",
                f"ct={data}/sarcoma/*CT_image.nii.gz", f"ct={data}/lung_ct/image.nii.gz",
                f"pet={data}/sarcoma/*PET_image.nii.gz"]
    return sources


def shared_tasks(data: Path, shared: Mapping[str, Sequence[int]]) -> tuple[list[str], list[Task]]:
    """Pretraining sources and the two tasks of the shared data folder, with the k values ``shared`` gives:
    BraTS 2018 (FLAIR, T1, T1c, T2; whole tumor / tumor core / enhancing tumor; pool and test cases by
    name) and LIDC nodules (CT; nodule; test VOIs from patients the pool never holds)."""
    brats_dir, lidc_dir = Path(data) / "brats2018", Path(data) / "lidc_nodules"
    if not brats_dir.is_dir() or not (lidc_dir / "image").is_dir():
        raise BadInput(data, "does not hold the shared data (brats2018/ and lidc_nodules/image, mask)")
    names = sorted(p.name for p in brats_dir.iterdir() if p.is_dir())
    if len(names) <= BRATS_POOL:
        raise BadInput(brats_dir, f"holds {len(names)} cases; the benchmark trains on up to {BRATS_POOL} and tests on the others")
    pool = sorted(names[:BRATS_POOL], key=lambda n: n != BRATS_FIRST)  # stable: the others stay in name order
    brats = [Case(tuple(str(brats_dir / n / f"{n}_{s}.nii.gz") for _, s in BRATS_CHANNELS), str(brats_dir / n / f"{n}_seg.nii.gz"))
             for n in [*pool, *names[BRATS_POOL:]]]
    vois = sorted(p.name for p in (lidc_dir / "image").glob("*.nii.gz"))
    test = vois[-LIDC_TEST:]
    held_patients = {v.split("_")[0] for v in test}
    pool = [v for v in vois[:-LIDC_TEST] if v.split("_")[0] not in held_patients][:LIDC_POOL]
    if len(pool) < LIDC_POOL:
        raise BadInput(lidc_dir, f"holds {len(vois)} VOIs; the benchmark needs {LIDC_POOL} to train on and {LIDC_TEST} to test on")
    lidc = [Case((str(lidc_dir / "image" / v),), str(lidc_dir / "mask" / v)) for v in [*pool, *test]]
    return pretraining_sources(Path(data)), [
        Task("brats2018", "brats2018", tuple(brats[:BRATS_POOL]), tuple(brats[BRATS_POOL:]), tuple(c for c, _ in BRATS_CHANNELS),
             SCHEMES["brats"], (64, 64, 64), tuple(shared["brats2018"])),
        Task("lidc", "lidc", tuple(lidc[:LIDC_POOL]), tuple(lidc[LIDC_POOL:]), ("ct",), SCHEMES["binary"], LIDC_PATCH,
             tuple(shared["lidc"]))]


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
              device: torch.device, log=print, seeds: Sequence[int] | None = None) -> str:
    """The protocol under profile ``profile`` for each number of ``labeled_cases`` (default: each task's own)
    and each of ``seeds`` (default: the profile's): ``results.json``, ``summary.md`` and the plots in ``out``;
    returns the Markdown table."""
    counts = sorted(set(labeled_cases)) if labeled_cases else None
    pool = max(len(t.train) for t in tasks)
    if counts and not 1 <= counts[0] <= counts[-1] <= pool:
        raise BadInput("--labeled-cases", f"each K must lie in 1..{pool}, the training cases there are (got {counts})")
    out.mkdir(parents=True, exist_ok=True)
    chosen = dataclasses.replace(PROFILES[profile], labeled_cases=tuple(counts) if counts else None,
                                 seeds=tuple(dict.fromkeys(seeds)) if seeds else PROFILES[profile].seeds)
    summary = summarise(run(sources, tasks, out, chosen, device, log))
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
            for k in task.counts(profile.labeled_cases):
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
            label, _ = segmenter(image, roi=body_box(image))
            reference = read_label(case.label, image.geometry)
            for metric in evaluate_maps(label, reference, image.geometry.spacing[::-1], task.labels, distances=False):
                rows.append({"init": init, "task": task.name, "dataset": task.dataset, "seed": seed, "step": steps,
                             "region": metric["name"], "dice": metric["dice"], "labeled_cases": labeled,
                             "case": Path(case.label).name})
    return rows


def body_box(image: Image, margin: int = 8) -> tuple[float, ...]:
    """The physical box (x0 y0 z0 x1 y1 z1, as ``--roi``) around the voxels where some channel is above its
    minimum, ``margin`` voxels wider. Outside it the inference rule calls every voxel background anyway; a
    BraTS brain fills about a third of its grid, so scoring inside takes a third of the time. The windows then
    tile the box, not the grid (a 300-step network's Dice moves by about 0.01-0.04 with the tiling; every
    initialisation is scored with the same one)."""
    import SimpleITK as sitk

    body = body_mask(image.array)
    inside = np.argwhere(body) if body.any() else np.argwhere(np.ones_like(body))
    low = np.maximum(inside.min(0) - margin, 0)[::-1]  # x, y, z
    high = np.minimum(inside.max(0) + margin, np.array(body.shape) - 1)[::-1]
    reference = image.geometry.apply_to(sitk.Image([int(n) for n in image.geometry.size], sitk.sitkUInt8))
    corners = np.array([reference.TransformIndexToPhysicalPoint([int(c) for c in corner])
                        for corner in np.array(np.meshgrid(*zip(low, high))).reshape(3, -1).T])
    return (*corners.min(0), *corners.max(0))


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and standard deviation over seeds and test cases (and folds) per (dataset, region, labeled cases,
    step, init), and the paired differences from each of :data:`BASELINES` with their verdicts."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["region"], r["labeled_cases"], r["step"], r["init"]), []).append(r)
    out = []
    for (dataset, region, labeled, step, init), members in sorted(groups.items()):
        values = [r["dice"] for r in members]
        entry = {"dataset": dataset, "region": region, "labeled_cases": labeled, "step": step, "init": init,
                 "mean": statistics.mean(values), "std": statistics.pstdev(values), "n": len(values)}
        for base in BASELINES:
            other = groups.get((dataset, region, labeled, step, base))
            diff = None if init == base or other is None else paired(members, other)
            entry[f"vs_{base}"] = "-" if init == base else f"n/a (no {base} run)" if other is None else diff["verdict"]
            entry[f"diff_{base}"] = diff
        out.append(entry)
    return out


def paired(rows: Sequence[dict], base: Sequence[dict]) -> dict:
    """Differences ``rows`` minus ``base`` between runs of the same task, seed and test case: their mean and
    standard deviation, a 95% interval for the mean with seeds and test cases as crossed random factors
    (:func:`crossed_interval`: pairs that share a seed or a case are not independent), and its verdict.
    The pairs form a full seeds x cases grid: where some are missing, the seeds or the cases that lack
    them are left out, whichever keeps more pairs."""
    def key(r: dict) -> tuple:
        return r["seed"], (r.get("task"), r.get("case"))

    reference = {key(r): r["dice"] for r in base}
    diffs = {key(r): r["dice"] - reference[key(r)] for r in rows if key(r) in reference}
    seeds = sorted({seed for seed, _ in diffs})
    cases = sorted({case for _, case in diffs}, key=str)
    full_seeds = [seed for seed in seeds if all((seed, case) in diffs for case in cases)]
    full_cases = [case for case in cases if all((seed, case) in diffs for seed in seeds)]
    if len(full_seeds) * len(cases) > len(seeds) * len(full_cases):
        seeds = full_seeds
    else:
        cases = full_cases
    grid = np.array([[diffs[seed, case] for case in cases] for seed in seeds]).reshape(len(seeds), len(cases))
    n = grid.size
    mean = float(grid.mean()) if n else float("nan")
    std = float(grid.std(ddof=1)) if n > 1 else float("nan")
    low, high = crossed_interval(grid) if n > 1 else (float("nan"), float("nan"))
    verdict = ("n/a (fewer than 2 pairs)" if n < 2 else "better" if low > 0 else "worse" if high < 0
               else "no difference")
    return {"mean": mean, "std": std, "low": low, "high": high, "n": n, "verdict": verdict}


def crossed_interval(grid: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t interval for the mean of a seeds x cases grid of differences under the two-way random-effects
    model (seed effect + case effect + residual). Variance components come from the ANOVA mean squares,
    truncated at 0; the variance of the mean is seed/S + case/C + residual/(S*C), and its degrees of
    freedom Satterthwaite's. With one seed (or one case) it is the one-sample t interval over the other."""
    seeds, cases = grid.shape
    mean = float(grid.mean())
    if seeds == 1 or cases == 1:
        values = grid.ravel()
        terms = [(values.var(ddof=1) / values.size, values.size - 1)]
    else:
        seed_means, case_means = grid.mean(1), grid.mean(0)
        ms_seed = cases * float(((seed_means - mean) ** 2).sum()) / (seeds - 1)
        ms_case = seeds * float(((case_means - mean) ** 2).sum()) / (cases - 1)
        residual = grid - seed_means[:, None] - case_means[None, :] + mean
        ms_res = float((residual ** 2).sum()) / ((seeds - 1) * (cases - 1))
        # var(mean) * S * C = (MS_seed - MS_res) + (MS_case - MS_res) + MS_res, each component dropped where
        # it is estimated below 0 (its mean square under the residual's)
        keep_seed, keep_case = int(ms_seed > ms_res), int(ms_case > ms_res)
        weights = (keep_seed, keep_case, 1 - keep_seed - keep_case)
        terms = [(w * ms / (seeds * cases), df) for w, ms, df in
                 zip(weights, (ms_seed, ms_case, ms_res), (seeds - 1, cases - 1, (seeds - 1) * (cases - 1))) if w]
    variance = sum(term for term, _ in terms)
    if variance <= 0:
        return mean, mean
    df = variance ** 2 / sum(term ** 2 / df for term, df in terms)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * variance ** 0.5
    return mean - half, mean + half


def _difference(diff: dict | None) -> str:
    if diff is None or diff["n"] < 2:
        return "-"
    return f"{diff['mean']:+.3f} ± {diff['std']:.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] ({diff['n']})"


def markdown(summary: Sequence[dict]) -> str:
    """One row per group: Dice, then per baseline the verdict and the paired difference behind it."""
    lines = ["| dataset | region | labeled cases | fine-tune steps | init | Dice mean ± std (n) | vs scratch "
             "| paired Δ vs scratch: mean ± std [95% CI] (pairs) | vs restoration | paired Δ vs restoration |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['dataset']} | {s['region']} | {s['labeled_cases']} | {s['step']} | {s['init']} | "
                     f"{s['mean']:.3f} ± {s['std']:.3f} ({s['n']}) | {s['vs_scratch']} | {_difference(s['diff_scratch'])} | "
                     f"{s['vs_restoration']} | {_difference(s['diff_restoration'])} |")
    return "\n".join(lines) + "\n"


def _dice(s: dict) -> tuple[float, float]:
    return s["mean"], s["std"]


def _gain(s: dict) -> tuple[float, float] | None:
    diff = s["diff_scratch"]
    return None if diff is None or diff["n"] < 2 else (diff["mean"], diff["high"] - diff["mean"])


def plot(summary: Sequence[dict], folder: Path) -> list[Path]:
    """``dice_vs_steps.png`` (one panel per dataset and region, at the most labeled cases) and, when more
    than one number of labeled cases ran, ``dice_vs_cases.png`` and ``gain_vs_cases.png`` (the paired
    difference from scratch with its 95% interval) at the last step; one line per init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = sorted({(s["dataset"], s["region"]) for s in summary})
    inits = list(dict.fromkeys(s["init"] for s in summary))
    most = {d: max(s["labeled_cases"] for s in summary if s["dataset"] == d) for d, _ in panels}
    last = {d: max(s["step"] for s in summary if s["dataset"] == d) for d, _ in panels}

    def at_last(s: dict) -> bool:
        return s["step"] == last[s["dataset"]]

    figures = [("dice_vs_steps.png", "step", "fine-tuning steps", "Dice on unseen cases", _dice,
                lambda s: s["labeled_cases"] == most[s["dataset"]])]
    if len({s["labeled_cases"] for s in summary}) > 1:
        figures += [("dice_vs_cases.png", "labeled_cases", "labeled cases", "Dice on unseen cases", _dice, at_last),
                    ("gain_vs_cases.png", "labeled_cases", "labeled cases", "Dice minus scratch's (paired, 95% CI)", _gain, at_last)]
    written = []
    for name, x, xlabel, ylabel, value, keep in figures:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
        for ax, (dataset, region) in zip(axes[0], panels):
            for init in inits:
                points = [(p[x], *value(p)) for p in summary
                          if (p["dataset"], p["region"], p["init"]) == (dataset, region, init) and keep(p) and value(p)]
                if points:
                    xs, ys, errors = zip(*points)
                    ax.errorbar(xs, ys, errors, label=init, marker="o", capsize=3)
            ax.set_title(f"{dataset}: {region}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if x == "labeled_cases":
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            if value is _dice:
                ax.set_ylim(0, 1)
            else:
                ax.axhline(0, color="grey", linewidth=0.8)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        written.append(folder / name)
    return written
