"""Train the built-in models from ../shared/data and write them to Resources/Models (``make models``).

    python scripts/make_models.py [--data ../shared/data] [--only sar-base glioma-mr4] [--quick]

* ``sar-base``: SAR pretraining on every unlabeled volume the data holds that a cube fits in (each BraTS
  channel as an MR volume, CT, PET); the LIDC volumes of interest are left out (6 mm deep, less than the
  smallest cube).
* ``glioma-mr4``: fine-tuned from ``sar-base`` on BraTS 2018 (FLAIR, T1, T1c, T2; BraTS regions) with the
  last three cases (sorted by name) kept back; their Dice per region goes into the model card.

Seeds are fixed; the weights are stored as fp16 safetensors (loaded as float32). Each model is built in
a work folder and moved into place only when complete, so a stopped run leaves the old model in place.
Not shipped with the extension.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarseg.core.errors import BadInput  # noqa: E402
from sarseg.core.labels import SCHEMES  # noqa: E402

INTENDED_USE = "research only, not for clinical use"
BRATS_LICENSE = "BraTS 2018 training data: research use under the BraTS terms; cite Menze et al. TMI 2015, Bakas et al. Sci Data 2017"
LICENSES = {
    "brats2018": BRATS_LICENSE,
    "brats2015": "BRATS 2015 (CC BY-NC-SA 3.0 CH); cite Menze et al. TMI 2015",
    "tcga_gbm": "TCGA-GBM via pyradiomics test data (TCIA)",
    "sarcoma": "TCIA Soft-tissue-Sarcoma (CC BY 3.0); cite Vallieres et al. 2015",
    "lung_ct": "IBSI lung CT phantom patient (CC BY-NC 3.0); Lambin, CancerData 2016",
}
CHANNELS = (("flair", "flair"), ("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"))  # model channel, BraTS file suffix
RECIPES = {  # preset and steps per model; --quick: a smoke run of the whole script
    "sar-base": {"preset": "small", "steps": 1200, "quick_steps": 4},
    "glioma-mr4": {"preset": "small", "steps": 1500, "quick_steps": 4},
}
VALIDATION_CASES = 3


def sarseg(*args: object, log: Path) -> None:
    """Run one sarseg command, its output in ``log``; a failure stops the script with the log's end."""
    command = [sys.executable, "-m", "sarseg", *map(str, args)]
    print("+", " ".join(command), flush=True)
    with open(log, "a") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        sys.exit(f"failed ({done.returncode}); the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-20:]))


def pretraining_sources(data: Path) -> list[str]:
    sources = [f"mr={data}/brats2018/*/*_{suffix}.nii.gz" for _, suffix in CHANNELS]
    sources += [f"mr={data}/brats2015/*/Flair_subtrMeanDivStd.nii.gz", f"mr={data}/brats2015/*/T1c_subtrMeanDivStd.nii.gz",
                f"mr={data}/tcga_gbm/brain?_image.nrrd", f"mr={data}/sarcoma/*MR_T1_image.nii.gz",
                f"ct={data}/sarcoma/*CT_image.nii.gz", f"ct={data}/lung_ct/image.nii.gz",
                f"pet={data}/sarcoma/*PET_image.nii.gz"]
    return sources


def brats_cases(data: Path) -> list[Path]:
    cases = sorted(p for p in (data / "brats2018").iterdir() if p.is_dir())
    if len(cases) <= VALIDATION_CASES:
        raise BadInput(data / "brats2018", f"holds {len(cases)} cases; glioma-mr4 needs more than {VALIDATION_CASES}")
    return cases


def case_files(case: Path) -> tuple[str, str]:
    images = ",".join(str(case / f"{case.name}_{suffix}.nii.gz") for _, suffix in CHANNELS)
    return images, str(case / f"{case.name}_seg.nii.gz")


def install(work: Path, target: Path, provenance: dict) -> None:
    """The trained model as fp16 weights with its card's provenance extended, swapped in whole."""
    from sarseg.model import load_model, save_model

    card, state = load_model(work)
    card.provenance = {**card.provenance, **provenance}
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(staging, {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, card)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    print(f"wrote {target} ({sum(p.stat().st_size for p in target.iterdir()) / 1e6:.1f} MB)", flush=True)


def make_sar_base(data: Path, out: Path, work: Path, quick: bool) -> None:
    recipe = RECIPES["sar-base"]
    steps = recipe["quick_steps"] if quick else recipe["steps"]
    folder = work / "sar-base"
    shutil.rmtree(folder, ignore_errors=True)
    sarseg("pretrain", "--preset", recipe["preset"], "--steps", steps, "--seed", 0, "--data", *pretraining_sources(data),
           "--out", folder, log=work / "sar-base.log")
    install(folder, out / "sar-base", {
        "intended_use": INTENDED_USE + "; a starting point for fine-tuning (sarseg finetune --init sar-base)",
        "training_data": "unlabeled volumes of ../shared/data: BraTS 2018 (12 cases x FLAIR, T1, T1c, T2), BRATS 2015 "
                         "(2 x FLAIR, T1c), TCGA-GBM (2 T1c), sarcoma (2 x CT, MR T1, PET), lung CT (1); labels not used",
        "licenses": [LICENSES[k] for k in ("brats2018", "brats2015", "tcga_gbm", "sarcoma", "lung_ct")],
        "recipe": "scripts/make_models.py" + (" --quick" if quick else "")})


def make_glioma(data: Path, out: Path, work: Path, quick: bool) -> None:
    from sarseg.infer import Segmenter
    from sarseg.io import read_image, read_label
    from sarseg.metrics import evaluate_maps
    from sarseg.train import resolve_device

    recipe = RECIPES["glioma-mr4"]
    steps = recipe["quick_steps"] if quick else recipe["steps"]
    cases = brats_cases(data)
    train, held = cases[:-VALIDATION_CASES], cases[-VALIDATION_CASES:]
    files = [case_files(c) for c in train]
    folder = work / "glioma-mr4"
    shutil.rmtree(folder, ignore_errors=True)
    sarseg("finetune", "--init", out / "sar-base", "--images", *[i for i, _ in files], "--labels", *[l for _, l in files],
           "--label-scheme", "brats", "--modalities", ",".join(c for c, _ in CHANNELS), "--preset", recipe["preset"],
           "--steps", steps, "--seed", 0, "--out", folder, log=work / "glioma-mr4.log")
    segmenter = Segmenter.load(folder, resolve_device("cpu"))
    scheme = SCHEMES["brats"]
    per_case, seconds = {}, []
    for case in held:
        images, label = case_files(case)
        image = read_image(images.split(","), segmenter.config.modalities)
        start = time.perf_counter()
        predicted, _ = segmenter(image)
        seconds.append(time.perf_counter() - start)
        rows = evaluate_maps(predicted, read_label(label, image.geometry), image.geometry.spacing[::-1], scheme, 1.0)
        per_case[case.name] = {row["name"]: round(float(row["dice"]), 4) for row in rows}
    mean = {name: round(sum(c[name] for c in per_case.values()) / len(per_case), 4) for name in scheme.names}
    print("validation Dice:", json.dumps(mean), flush=True)
    install(folder, out / "glioma-mr4", {
        "intended_use": INTENDED_USE + "; brain tumor (glioma) regions on BraTS-like MR",
        "input_requirements": "FLAIR, T1, T1c (post-contrast), T2 of one patient, in that order: skull-stripped and "
                              "co-registered on one grid, about 1 mm voxels, as the BraTS challenge data",
        "training_data": f"BraTS 2018 training cases {', '.join(c.name for c in train)}",
        "licenses": [BRATS_LICENSE],
        "init": "sar-base",
        "validation": {"cases": [c.name for c in held], "dice": mean, "per_case": per_case,
                       "cpu_seconds_per_case": round(sum(seconds) / len(seconds), 1)},
        "recipe": "scripts/make_models.py" + (" --quick" if quick else "")})


MAKERS = {"sar-base": make_sar_base, "glioma-mr4": make_glioma}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "Resources" / "Models")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "make-models")
    p.add_argument("--only", nargs="+", choices=list(MAKERS), default=list(MAKERS))
    p.add_argument("--quick", action="store_true", help="a few steps each: checks the script, not the models")
    args = p.parse_args()
    if not (args.data / "brats2018").is_dir():
        sys.exit(f"make_models: {args.data}/brats2018 not found; the built-in models are trained on ../shared/data")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        start = time.perf_counter()
        MAKERS[name](args.data, args.out, args.work, args.quick)
        print(f"{name}: {time.perf_counter() - start:.0f} s, peak child RSS "
              f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
