"""`sarseg bench ssl` on the shared real cases (../shared/data beside the checkout): the profile behind the
README's table. The engine's generic protocol (``sarseg.bench_ssl``) with this folder's file names.

    python benchmarks/ssl_shared.py [--profile quick|full] [--data ../shared/data] [--out runs/bench-ssl] [--device auto]

Writes results.json, summary.md and dice_vs_steps.png into --out and prints the table. The quick profile
fine-tunes on one case of each dataset and tests on the other (BraTS pat0001 -> pat0002, TCGA-GBM brain1 ->
brain2); the full one also the other way round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarseg.bench_ssl import Task, benchmark
from sarseg.core.labels import SCHEMES
from sarseg.core.errors import BadInput
from sarseg.finetune import Case
from sarseg.io import Geometry, read_image, read_label, write_image
from sarseg.runtime import configure_threads, tune_malloc
from sarseg.train import resolve_device

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDS = {"quick": 1, "full": 2}  # 1: train on the first case, test on the second; 2: also the other way round


def crop_to_foreground(case: Case, folder: Path, margin: int = 4) -> Case:
    """Crop a case's channels and label to the bounding box of its non-zero first channel (skull-stripped
    brains sit in a fraction of the BraTS grid), keeping the physical geometry of the crop."""
    image = read_image(case.images)
    label = read_label(case.label, image.geometry)
    first = image.array[0]
    inside = np.argwhere(first != first.flat[0])
    low = np.maximum(inside.min(0) - margin, 0)
    high = np.minimum(inside.max(0) + margin + 1, first.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    reference = image.geometry.apply_to(sitk.Image([int(s) for s in image.geometry.size], sitk.sitkUInt8))
    origin = reference.TransformIndexToPhysicalPoint([int(v) for v in low[::-1]])
    geometry = Geometry(tuple(int(b - a) for a, b in zip(low[::-1], high[::-1])), image.geometry.spacing, origin,
                        image.geometry.direction)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(case.label).parent.name + "_" + Path(case.label).name.split(".")[0]
    paths = tuple(str(write_image(folder / f"{stem}_c{i}.nii.gz", channel[box], geometry)) for i, channel in enumerate(image.array))
    return Case(paths, str(write_image(folder / f"{stem}_label.nii.gz", label[box], geometry)))


def shared_tasks(data: Path, work: Path, folds: int = 2) -> tuple[list[str], list[Task]]:
    """Pretraining sources and fine-tuning tasks from the shared real cases: BraTS (FLAIR + T1c,
    whole tumor / core / enhancing) and TCGA-GBM (T1 post-contrast, tumor), in one or both directions."""
    if not (data / "brats2015").is_dir():
        raise BadInput(data, "does not hold the shared real cases (brats2015/, tcga_gbm/, sarcoma/, lung_ct/)")
    sources = [f"mr={data}/brats2015/*/Flair_subtrMeanDivStd.nii.gz", f"mr={data}/brats2015/*/T1c_subtrMeanDivStd.nii.gz",
               f"mr={data}/tcga_gbm/brain?_image.nrrd", f"mr={data}/sarcoma/*MR_T1_image.nii.gz",
               f"ct={data}/sarcoma/*CT_image.nii.gz", f"ct={data}/lung_ct/image.nii.gz", f"pet={data}/sarcoma/*PET_image.nii.gz"]
    brats = [crop_to_foreground(Case((str(data / f"brats2015/{p}/Flair_subtrMeanDivStd.nii.gz"),
                                      str(data / f"brats2015/{p}/T1c_subtrMeanDivStd.nii.gz")),
                                     str(data / f"brats2015/{p}/OTMultiClass.nii.gz")), work / "cases") for p in ("pat0001", "pat0002")]
    tcga = [Case((str(data / f"tcga_gbm/brain{i}_image.nrrd"),), str(data / f"tcga_gbm/brain{i}_label.nrrd")) for i in (1, 2)]
    tasks = []
    for fold in range(folds):
        tasks.append(Task(f"brats_fold{fold}", "brats", (brats[fold],), (brats[1 - fold],), ("mr", "mr"), SCHEMES["brats"], (64, 64, 64)))
        tasks.append(Task(f"tcga_fold{fold}", "tcga", (tcga[fold],), (tcga[1 - fold],), ("mr",), SCHEMES["binary"], (96, 96, 16)))
    return sources, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(FOLDS), default="quick", help="the budget (default: quick)")
    parser.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the 2-CPU, 30-minute profile")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"the shared real cases (default: {SHARED_DATA})")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ssl"), help="default: runs/bench-ssl")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    args = parser.parse_args()
    tune_malloc()
    configure_threads(None)
    try:
        sources, tasks = shared_tasks(args.data, args.out, FOLDS[args.profile])
        print(benchmark(sources, tasks, args.out, args.profile, None, resolve_device(args.device),
                        log=lambda line: print(line, file=sys.stderr, flush=True)))
    except BadInput as exc:
        sys.exit(f"ssl_shared: error: {exc}")


if __name__ == "__main__":
    main()
