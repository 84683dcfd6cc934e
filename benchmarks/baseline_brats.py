"""Why scratch fine-tuning lagged, measured: the tiny preset fine-tuned from scratch on ONE labeled BraTS case
(whole uncropped 240x240x155 volumes, as ``sarseg finetune`` gets them from a user), scored whole tumor /
tumor core / enhancing tumor on unseen cases, one row per setting.

    python benchmarks/baseline_brats.py [--split val|test] [--variants NAME ...] [--seeds 0 ...] [--steps 300]
                                        [--train CASE ...] [--together] [--channels flair t1 t1ce t2] [--rotate]

The twelve shared BraTS 2018 cases (../shared/data/brats2018, sorted by name) are split once: the first six
are development cases (settings and the labeled case were chosen on them only), the last six are test cases,
scored only for the final rows (``--split test``). ``--train`` is the one labeled case (a BraTS 2018 name or
``brats2015/pat0001``, FLAIR and T1c only), or several labeled in turn; ``--split val`` scores the development
cases other than it. ``--together`` trains one network on all ``--train`` cases instead: the two BraTS 2015
cases (the issue's own check), or every development case (what six times the labels reach on the test cases).
``--rotate`` makes each development case (and each BraTS 2015 case when the channels allow) the labeled
case in turn, scored on the other development cases: which case is labeled matters more than any setting.

Rows: ``legacy`` is the tiny preset's fine-tuning before this benchmark (32x32x16 patches, lr 3e-3,
percentiles to [0, 1], 56% of patches centred outside the brain as the old uniform background draw gave on
BraTS; the inference rule that voxels with every channel at its minimum are background
applies to every row); ``legacy + X`` adds one change to it; ``defaults`` is the preset now and
``defaults - X`` takes one change away, ``defaults + X`` adds one that was tried and not adopted; ``reference`` is the calibration recipe of ../shared/README.md
written with plain MONAI and none of sarseg's training code (same network widths, 64^3 patches, Adam 1e-3,
batch 2, half the patches on tumor, binary whole tumor, z-score inside the brain), the check that the
preset is at the recipe's strength. Prints a Markdown table (mean Dice and each case's whole-tumor Dice,
mean over seeds).
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
BRATS2015_FILES = {"flair": "Flair_subtrMeanDivStd", "t1ce": "T1c_subtrMeanDivStd"}  # the two channels BraTS 2015 has
DEV, TEST = slice(0, 6), slice(6, 12)  # indices into the sorted BraTS 2018 case names
LABELED = "Brats18_2013_11_1"  # the labeled case before --rotate (the first by name)
REFERENCE = "reference"
CHANGES = {  # each change as the legacy tiny preset's value of its setting(s); the preset's own value is the new one
    "patch 64^3": {"patch_size": [32, 32, 16]},
    "lr 1e-3": {"lr": 3e-3},
    "z-score": {"normalisation": DEFAULT_NORMALISATION},  # percentiles to [0, 1]
    "few outside": {"outside_fraction": 0.56},  # the old uniform draw of 2/3 background patches, on BraTS
}
TRIED = {  # measured on the development cases and not adopted: each on top of the defaults
    "intensity jitter": {"intensity_jitter": 0.3},  # scale 1 +- 0.3, shift +- 0.3 std per channel
    "half on tumor, none outside": {"pos_fraction": 0.5, "outside_fraction": 0.0},  # the reference's sampling
    "softmax classes": {"labels": {"mode": "classes", "names": ["necrosis", "edema", "enhancing"],
                                   "values": [[1, 3], [2], [4]], "paint": [1, 2, 4],
                                   "colors": [[0.9, 0.8, 0.3], [0.35, 0.75, 0.35], [0.85, 0.25, 0.2]]}},
    "4 patches a step": {"batch_size": 4, "samples_per_case": 4},
    "affine 0.2": {"affine_prob": 0.2},  # a fifth of the patches rotated +-30 degrees and zoomed 0.7-1.3
    "affine 0.33": {"affine_prob": 0.33},
    "affine 0.2, lr 2e-3": {"affine_prob": 0.2, "lr": 2e-3},
    "affine 0.2, half on tumor": {"affine_prob": 0.2, "pos_fraction": 0.5},
    "largest component": {"inference": {"largest_component": True}},  # at inference: the largest connected tumor only
    "affine 0.2, largest component": {"affine_prob": 0.2, "inference": {"largest_component": True}},
}


def variants() -> dict[str, dict | None]:
    """Setting name -> overrides on the tiny preset as it is now (None: the plain MONAI reference)."""
    legacy = {k: v for old in CHANGES.values() for k, v in old.items()}
    rows: dict[str, dict | None] = {"legacy": legacy}
    for name in CHANGES:
        rows[f"legacy + {name}"] = {k: v for k, v in legacy.items() if k not in CHANGES[name]}
    rows["defaults"] = {}
    for name, old in CHANGES.items():
        rows[f"defaults - {name}"] = old
    for name, new in TRIED.items():
        rows[f"defaults + {name}"] = new
    rows[REFERENCE] = None
    return rows


def brats2018_names(data: Path) -> list[str]:
    names = sorted(p.name for p in (data / "brats2018").iterdir() if p.is_dir())
    if len(names) != 12:
        raise SystemExit(f"expected the 12 shared BraTS 2018 cases in {data / 'brats2018'}, found {len(names)}")
    return names


def brats_case(data: Path, name: str, channels: tuple[str, ...]):
    """A BraTS 2018 case by name, or a BraTS 2015 one as ``brats2015/patNNNN``."""
    from sarseg.finetune import Case

    if name.startswith("brats2015/"):
        folder = data / name
        missing = [c for c in channels if c not in BRATS2015_FILES]
        if missing:
            raise SystemExit(f"{folder}: BraTS 2015 has no {', '.join(missing)}; use --channels flair t1ce")
        return Case(tuple(str(folder / f"{BRATS2015_FILES[c]}.nii.gz") for c in channels), str(folder / "OTMultiClass.nii.gz"))
    folder = data / "brats2018" / name
    return Case(tuple(str(folder / f"{name}_{c}.nii.gz") for c in channels), str(folder / f"{name}_seg.nii.gz"))


def case_name(case) -> str:
    return Path(case.label).parent.name.removeprefix("Brats18_")


def reference(train: list, channels: tuple[str, ...], seed: int, steps: int):
    """The calibration recipe in plain MONAI and torch, trained on ``train``; returns image -> whole-tumor mask."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    from sarseg.io import read_image, read_label

    def body_zscored(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        body = (array > array.reshape(len(array), -1).min(1)[:, None, None, None]).any(0)
        out = np.zeros_like(array)
        for c, channel in enumerate(array):
            inside = channel[body]
            out[c][body] = (inside - inside.mean()) / (inside.std() + 1e-8)
        return out, body

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images = [read_image(case.images) for case in train]
    volumes = [body_zscored(image.array) for image in images]
    tumors = [read_label(case.label, image.geometry) > 0 for case, image in zip(train, images)]
    net = UNet(3, len(channels), 2, channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2), num_res_units=1)
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def patch(i: int) -> tuple[np.ndarray, np.ndarray]:
        (volume, body), tumor = volumes[i], tumors[i]
        centres = np.argwhere(tumor if rng.random() < 0.5 else body)
        centre = centres[rng.integers(len(centres))]
        box = tuple(slice(s, s + 64) for s in (int(np.clip(c - 32, 0, n - 64)) for c, n in zip(centre, tumor.shape)))
        return volume[(slice(None), *box)], tumor[box]

    net.train()
    for _ in range(steps):
        x, y = zip(*(patch(int(rng.integers(len(train)))) for _ in range(2)))
        value = loss(net(torch.from_numpy(np.stack(x))), torch.from_numpy(np.stack(y)[:, None].astype(np.int64)))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    net.eval()

    def segment(image) -> np.ndarray:
        volume, body = body_zscored(image.array)
        with torch.no_grad():
            logits = sliding_window_inference(torch.from_numpy(volume)[None], 64, 8, net, overlap=0.25)
        return (logits.argmax(1)[0].numpy() * body).astype(np.int16)

    return segment


def score(overrides: dict | None, seed: int, steps: int, train: list, test: list, channels: tuple[str, ...],
          work: Path) -> list[dict]:
    """Fine-tune from scratch (or train the reference when ``overrides`` is None), segment each test case
    whole, one row of whole-tumor/core/enhancing Dice per case (the reference has whole tumor only)."""
    import torch

    from sarseg.config import finetune_config
    from sarseg.core.labels import SCHEMES
    from sarseg.finetune import finetune
    from sarseg.infer import Segmenter
    from sarseg.io import read_image, read_label
    from sarseg.metrics import evaluate_maps

    if overrides is None:
        segment, labels = reference(train, channels, seed, steps), SCHEMES["binary"]
    else:
        cpu = torch.device("cpu")
        config = finetune_config("tiny", {"steps": steps, "seed": seed, "checkpoint_every": steps,
                                          "modalities": list(channels), "labels": SCHEMES["brats"].to_dict(),
                                          **overrides})
        folder = Path(tempfile.mkdtemp(dir=work))
        finetune(config, train, "scratch", folder / "model", cpu, progress_mode="none")
        segmenter, labels = Segmenter.load(folder / "model", cpu), SCHEMES["brats"]  # scored as BraTS regions whatever the model's scheme
        segment = lambda image: segmenter(image)[0]  # noqa: E731
    rows = []
    for case in test:
        image = read_image(case.images)
        reference_map = read_label(case.label, image.geometry)
        if overrides is None:
            reference_map = (reference_map > 0).astype(reference_map.dtype)
        metrics = evaluate_maps(segment(image), reference_map, image.geometry.spacing[::-1], labels, distances=False)
        dice = [m["dice"] for m in metrics] + [None] * (3 - len(metrics))
        rows.append({"case": case_name(case), **dict(zip(("whole tumor", "tumor core", "enhancing tumor"), dice)),
                     "pred_ml": metrics[0]["pred_ml"], "ref_ml": metrics[0]["ref_ml"]})
    return rows


def table(results: dict[str, list[list[dict]]]) -> str:
    """Markdown: per row the mean over cases and seeds, and each case's whole-tumor Dice (mean over seeds;
    "-" where the row did not score it, e.g. its own labeled case)."""
    cases = sorted({r["case"] for runs in results.values() for r in runs[0]})
    lines = ["| setting | WT | TC | ET | WT per case (" + ", ".join(cases) + ") | predicted / true WT ml |",
             "|---|---|---|---|---|---|"]

    def mean(rows: list[dict], key: str) -> str:
        values = [r[key] for r in rows if r[key] is not None]
        return f"{statistics.mean(values):.3f}" if values else "-"

    for name, runs in results.items():
        rows = [r for run in runs for r in run]
        per_case = {case: [r["whole tumor"] for r in rows if r["case"] == case] for case in cases}
        spread = f" ± {statistics.pstdev(statistics.mean(r['whole tumor'] for r in run) for run in runs):.3f}" if len(runs) > 1 else ""
        lines.append(f"| {name} | {mean(rows, 'whole tumor')}{spread} | {mean(rows, 'tumor core')} | "
                     f"{mean(rows, 'enhancing tumor')} | "
                     f"{' '.join(f'{statistics.mean(d):.2f}' if d else '-' for d in per_case.values())} | "
                     f"{float(mean(rows, 'pred_ml')):.0f} / {float(mean(rows, 'ref_ml')):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="score on the development cases (other than the labeled one) or the test cases")
    parser.add_argument("--variants", nargs="+", default=None, help=f"settings to run (default: all): {', '.join(variants())}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train", nargs="+", default=[LABELED],
                        help=f"the labeled case, or several labeled in turn (default {LABELED})")
    parser.add_argument("--channels", nargs="+", default=list(CHANNELS), choices=CHANNELS)
    parser.add_argument("--together", action="store_true", help="one network trained on all --train cases together")
    parser.add_argument("--rotate", action="store_true",
                        help="each development case (and BraTS 2015 case) labeled in turn, scored on the other development cases")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the runtime's policy)")
    args = parser.parse_args()
    tune_malloc()
    configure_threads(args.threads)
    chosen = {name: overrides for name, overrides in variants().items() if args.variants is None or name in args.variants}
    if args.variants and len(chosen) != len(args.variants):
        raise SystemExit(f"unknown setting(s) among {args.variants}; known: {', '.join(variants())}")
    channels, names = tuple(args.channels), brats2018_names(args.data)
    if args.rotate and args.split == "test":
        raise SystemExit("--rotate scores development cases only; the test cases are scored with one --train")
    if args.rotate and args.together:
        raise SystemExit("--rotate labels one case at a time; --together trains on all --train cases")
    labeled = list(names[DEV]) if args.rotate else args.train
    if args.rotate and set(channels) <= set(BRATS2015_FILES):
        labeled += [f"brats2015/{p.name}" for p in sorted((args.data / "brats2015").iterdir()) if p.is_dir()]
    groups = [labeled] if args.together else [[name] for name in labeled]
    results: dict[str, list[list[dict]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        for group in groups:
            train = [brats_case(args.data, train_name, channels) for train_name in group]
            scored = [n for n in names[DEV if args.split == "val" else TEST] if n not in group]
            if not scored:
                raise SystemExit(f"every {'development' if args.split == 'val' else 'test'} case is labeled; score on the other split")
            test = [brats_case(args.data, n, channels) for n in scored]
            for name, overrides in chosen.items():
                row = f"{case_name(train[0])}: {name}" if len(groups) > 1 else name
                results[row] = [score(overrides, seed, args.steps, train, test, channels, Path(work)) for seed in args.seeds]
                print(f"[{time.monotonic() - started:.0f}s] {row}: WT "
                      f"{statistics.mean(r['whole tumor'] for run in results[row] for r in run):.3f}", flush=True)
    print(f"\nlabeled{' together' if args.together else ''}: {', '.join(labeled)}; channels {' '.join(channels)}; {args.steps} steps, seeds {args.seeds}, "
          f"scored on the {'development' if args.split == 'val' else 'test'} cases\n")
    print(table(results))


if __name__ == "__main__":
    main()
