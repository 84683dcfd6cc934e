"""Why scratch fine-tuning lagged, measured: the tiny preset fine-tuned from scratch on ONE labeled BraTS 2018
case (all four channels, whole uncropped 240x240x155 volumes, as ``sarseg finetune`` gets them from a user),
scored whole tumor / tumor core / enhancing tumor on unseen cases, one row per setting.

    python benchmarks/baseline_brats.py [--split val|test] [--variants NAME ...] [--seeds 0 ...] [--steps 300]

The twelve shared BraTS 2018 cases (../shared/data/brats2018, sorted by name) are split once: the first
(2013_11_1) trains, the next five are validation cases (settings were compared on them only), the last six
are test cases, scored only for the final rows (``--split test``). Rows: ``legacy`` is the tiny preset's
fine-tuning before this benchmark (32x32x16 patches, lr 3e-3, percentiles to [0, 1], 56% of patches
centred outside the brain as the old uniform background draw gave on BraTS, no intensity jitter; the
inference rule that voxels with every channel at its minimum are background applies to every row);
``legacy + X`` adds one change to it; ``defaults`` is the preset now and ``defaults - X`` takes one
change away. Prints a Markdown table (mean Dice and each case's whole-tumor Dice, mean over seeds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sarseg.io import DEFAULT_NORMALISATION
from sarseg.runtime import configure_threads, tune_malloc

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHANNELS = ("flair", "t1", "t1ce", "t2")
TRAIN, VAL, TEST = slice(0, 1), slice(1, 6), slice(6, 12)  # indices into the sorted case names
CHANGES = {  # each change as the legacy tiny preset's value of its setting(s); the preset's own value is the new one
    "patch 64^3": {"patch_size": [32, 32, 16]},
    "lr 1e-3": {"lr": 3e-3},
    "z-score": {"normalisation": DEFAULT_NORMALISATION},  # percentiles to [0, 1]
    "few outside": {"outside_fraction": 0.56},  # the old uniform draw of 2/3 background patches, on BraTS
    "intensity jitter": {"intensity_jitter": 0.0},
}


def variants() -> dict[str, dict]:
    """Setting name -> overrides on the tiny preset as it is now."""
    legacy = {k: v for old in CHANGES.values() for k, v in old.items()}
    rows = {"legacy": legacy}
    for name in CHANGES:
        rows[f"legacy + {name}"] = {k: v for k, v in legacy.items() if k not in CHANGES[name]}
    rows["defaults"] = {}
    for name, old in CHANGES.items():
        rows[f"defaults - {name}"] = old
    return rows


def brats_cases(data: Path, part: slice) -> list:
    from sarseg.finetune import Case

    names = sorted(p.name for p in (data / "brats2018").iterdir() if p.is_dir())
    if len(names) != 12:
        raise SystemExit(f"expected the 12 shared BraTS 2018 cases in {data / 'brats2018'}, found {len(names)}")
    return [Case(tuple(str(data / "brats2018" / n / f"{n}_{c}.nii.gz") for c in CHANNELS),
                 str(data / "brats2018" / n / f"{n}_seg.nii.gz")) for n in names[part]]


def score(overrides: dict, seed: int, steps: int, train: list, test: list, work: Path) -> list[dict]:
    """Fine-tune from scratch, segment each test case whole, one row of whole-tumor/core/enhancing Dice per case."""
    import torch

    from sarseg.config import finetune_config
    from sarseg.core.labels import SCHEMES
    from sarseg.finetune import finetune
    from sarseg.infer import Segmenter
    from sarseg.io import read_image, read_label
    from sarseg.metrics import evaluate_maps

    cpu = torch.device("cpu")
    config = finetune_config("tiny", {**overrides, "steps": steps, "seed": seed, "checkpoint_every": steps,
                                      "modalities": list(CHANNELS), "labels": SCHEMES["brats"].to_dict()})
    folder = Path(tempfile.mkdtemp(dir=work))
    finetune(config, train, "scratch", folder / "model", cpu, progress_mode="none")
    segmenter = Segmenter.load(folder / "model", cpu)
    rows = []
    for case in test:
        image = read_image(case.images)
        label, _ = segmenter(image)
        metrics = evaluate_maps(label, read_label(case.label, image.geometry), image.geometry.spacing[::-1],
                                config.labels)
        rows.append({"case": Path(case.label).parent.name, **{m["name"]: m["dice"] for m in metrics},
                     "pred_ml": metrics[0]["pred_ml"], "ref_ml": metrics[0]["ref_ml"]})
    return rows


def table(results: dict[str, list[list[dict]]]) -> str:
    """Markdown: per setting the mean over cases and seeds, and each case's whole-tumor Dice (mean over seeds)."""
    first = next(iter(results.values()))[0]
    cases = [r["case"].removeprefix("Brats18_") for r in first]
    lines = ["| setting | WT | TC | ET | WT per case (" + ", ".join(cases) + ") | predicted / true WT ml |",
             "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        rows = [r for run in runs for r in run]
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("whole tumor", "tumor core", "enhancing tumor",
                                                                 "pred_ml", "ref_ml")}
        per_case = [statistics.mean(run[i]["whole tumor"] for run in runs) for i in range(len(cases))]
        spread = f" ± {statistics.pstdev(statistics.mean(r['whole tumor'] for r in run) for run in runs):.3f}" if len(runs) > 1 else ""
        lines.append(f"| {name} | {mean['whole tumor']:.3f}{spread} | {mean['tumor core']:.3f} | "
                     f"{mean['enhancing tumor']:.3f} | {' '.join(f'{d:.2f}' for d in per_case)} | "
                     f"{mean['pred_ml']:.0f} / {mean['ref_ml']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("val", "test"), default="val", help="score on the validation or the test cases")
    parser.add_argument("--variants", nargs="+", default=None, help=f"settings to run (default: all): {', '.join(variants())}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the runtime's policy)")
    args = parser.parse_args()
    tune_malloc()
    configure_threads(args.threads)
    chosen = {name: overrides for name, overrides in variants().items() if args.variants is None or name in args.variants}
    if args.variants and len(chosen) != len(args.variants):
        raise SystemExit(f"unknown setting(s) among {args.variants}; known: {', '.join(variants())}")
    train, test = brats_cases(args.data, TRAIN), brats_cases(args.data, VAL if args.split == "val" else TEST)
    results: dict[str, list[list[dict]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        for name, overrides in chosen.items():
            results[name] = [score(overrides, seed, args.steps, train, test, Path(work)) for seed in args.seeds]
            print(f"[{time.monotonic() - started:.0f}s] {name}: WT "
                  f"{statistics.mean(r['whole tumor'] for run in results[name] for r in run):.3f}", flush=True)
    print(f"\ntrained on {Path(train[0].label).parent.name}, {args.steps} steps, seeds {args.seeds}, "
          f"scored on the {args.split} cases\n")
    print(table(results))


if __name__ == "__main__":
    main()
