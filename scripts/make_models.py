"""Train the built-in models from ../shared/data and write them to Resources/Models (``make models``).

    python scripts/make_models.py [--data ../shared/data] [--only sar-base glioma-mr4] [--quick]

* ``sar-base``: SAR pretraining on every unlabeled volume the data holds that a cube fits in (each BraTS
  channel as an MR volume, CT, PET); the LIDC volumes of interest are left out (6 mm deep, less than the
  smallest cube).
* ``glioma-mr4``: fine-tuned from ``sar-base`` on BraTS 2018 (FLAIR, T1, T1c, T2; BraTS regions) with the
  last three cases (sorted by name) kept back; their Dice per region goes into the model card.
* ``lesion-click``: a promptable model (``finetune --promptable``: one image channel of any modality, clicks
  and a box): the tiny preset at widths 12-192, from a SAR pretraining of its own width on sar-base's
  volumes (made in the work folder, not shipped: the built-ins' 25 MB hold one small base, and a small
  lesion-click would not fit beside it; the narrow network also keeps a click fast on a CPU), on BraTS 2018
  (each training case twice, whole tumor and tumor core, each
  time another channel alone), LIDC nodule volumes of interest (every tenth of those not kept back),
  sarcoma STS_001 (CT, MR, PET) and the lung CT. Kept back and scored by ``sarseg bench interactive``
  (simulated clicks; next to ``glioma-mr4`` on BraTS): the last three BraTS cases per channel and target,
  the last 50 nodules, sarcoma STS_002 per modality; the scores go into the model card.

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
from sarseg.core.expects import Expectations  # noqa: E402
from sarseg.core.labels import SCHEMES  # noqa: E402
from sarseg.bench_ssl import BRATS_CHANNELS as CHANNELS, pretraining_sources  # noqa: E402  (shared with sarseg bench ssl)

INTENDED_USE = "research only, not for clinical use"
SAR_EVIDENCE = ("measured here (sarseg bench ssl --profile cases, docs/bench-ssl: BraTS 2018 with 1, 2, 4, 8 labeled cases, "
                "LIDC nodules with 8, 32, 128; 5 seeds): SAR pretraining at its defaults, as this model was made, does not beat "
                "Models Genesis (restoration only) in any row: level in 14 of 15, worse on BraTS enhancing tumor (2), 95% intervals with seeds and "
                "test cases as crossed factors; no pretraining beat fine-tuning from scratch; the adversarial term cost Dice and did not make "
                "the encoder modality-invariant (docs/bench-ssl/mechanisms.md)")  # what the bench found; in sar-base's card
BRATS_LICENSE = "BraTS 2018 training data: research use under the BraTS terms; cite Menze et al. TMI 2015, Bakas et al. Sci Data 2017"
LICENSES = {
    "brats2018": BRATS_LICENSE,
    "brats2015": "BRATS 2015 (CC BY-NC-SA 3.0 CH); cite Menze et al. TMI 2015",
    "tcga_gbm": "TCGA-GBM via pyradiomics test data (TCIA)",
    "sarcoma": "TCIA Soft-tissue-Sarcoma (CC BY 3.0); cite Vallieres et al. 2015",
    "lung_ct": "IBSI lung CT phantom patient (CC BY-NC 3.0); Lambin, CancerData 2016",
    "lidc_nodules": "LIDC-IDRI (TCIA, CC BY 3.0); cite Armato et al. Med Phys 2011",
}
RECIPES = {  # preset and steps per model; --quick: a smoke run of the whole script
    "sar-base": {"preset": "small", "steps": 1200, "quick_steps": 4},
    "glioma-mr4": {"preset": "small", "steps": 1000, "quick_steps": 4},
    "lesion-click": {"preset": "tiny", "net": {"features": [12, 24, 48, 96, 192]}, "steps": 6000, "quick_steps": 4,
                     "base_steps": 3000},
}
SHIPPED_JITTER = {"intensity_jitter": 0.3}  # the fine-tuning default when the shipped models were made (now 0.0)
LESION_TARGETS = (("whole tumor", (1, 2, 4)), ("tumor core", (1, 4)))  # BraTS 2018 label values
LIDC_KEPT_BACK = 50
VALIDATION_CASES = 3
REPORT = ROOT / "docs" / "bench-interactive"  # lesion-click's bench table and plot, shown in the README


def sarseg(*args: object, log: Path) -> None:
    """Run one sarseg command, its output in ``log``; a failure stops the script with the log's end."""
    command = [sys.executable, "-m", "sarseg", *map(str, args)]
    print("+", " ".join(command), flush=True)
    with open(log, "a") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        sys.exit(f"failed ({done.returncode}); the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-20:]))


def brats_cases(data: Path) -> list[Path]:
    cases = sorted(p for p in (data / "brats2018").iterdir() if p.is_dir())
    if len(cases) <= VALIDATION_CASES:
        raise BadInput(data / "brats2018", f"holds {len(cases)} cases; glioma-mr4 needs more than {VALIDATION_CASES}")
    return cases


def case_files(case: Path) -> tuple[str, str]:
    images = ",".join(str(case / f"{case.name}_{suffix}.nii.gz") for _, suffix in CHANNELS)
    return images, str(case / f"{case.name}_seg.nii.gz")


def install(work: Path, target: Path, provenance: dict, expects: Expectations | None = None) -> None:
    """The trained model as fp16 weights with its card's provenance (and what its input must look like)
    extended, swapped in whole."""
    from sarseg.model import load_model, save_model

    card, state = load_model(work)
    card.provenance = {**card.provenance, **provenance}
    card.expects = expects or card.expects
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
        "evidence": SAR_EVIDENCE,
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
    config = work / "glioma-mr4.json"
    config.write_text(json.dumps(SHIPPED_JITTER))
    sarseg("finetune", "--init", out / "sar-base", "--images", *[i for i, _ in files], "--labels", *[l for _, l in files],
           "--label-scheme", "brats", "--modalities", ",".join(c for c, _ in CHANNELS), "--preset", recipe["preset"],
           "--steps", steps, "--seed", 0, "--config", config, "--out", folder, log=work / "glioma-mr4.log")
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
        "recipe": "scripts/make_models.py" + (" --quick" if quick else "")}, Expectations((1.0, 1.0, 1.0), 0.5, skull_stripped=True))


def target_label(seg: Path, values: tuple[int, ...], path: Path) -> str:
    """A 0/1 label of the voxels of ``values`` in ``seg``, on its grid (written once)."""
    import numpy as np

    from sarseg.io import Geometry, read_label, read_sitk, write_image

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, np.isin(read_label(seg), values).astype(np.int16), Geometry.of(read_sitk(seg)))
    return str(path)


def lesion_training_cases(data: Path, work: Path, quick: bool) -> list[tuple[str, str]]:
    """(image, label) pairs; the last four (one of each kind) validate."""
    brats = brats_cases(data)[:-VALIDATION_CASES][:2 if quick else None]
    pairs = [(str(case / f"{case.name}_{CHANNELS[(i + t) % len(CHANNELS)][1]}.nii.gz"),
              target_label(case / f"{case.name}_seg.nii.gz", values, work / "labels" / f"{case.name}_{t}.nii.gz"))
             for i, case in enumerate(brats) for t, (_, values) in enumerate(LESION_TARGETS)]
    nodules = sorted((data / "lidc_nodules" / "image").glob("*.nii.gz"))[:-LIDC_KEPT_BACK][::10]
    nodules = nodules[:4] if quick else nodules
    lidc = [(str(n), str(n.parent.parent / "mask" / n.name)) for n in nodules]
    sarcoma = [(str(data / "sarcoma" / f"STS_001_{m}_image.nii.gz"), str(data / "sarcoma" / f"STS_001_{m}_mask.nii.gz"))
               for m in ("CT", "MR_T1", "PET")]
    lung = [(str(data / "lung_ct" / "image.nii.gz"), str(data / "lung_ct" / "label.nii.gz"))]
    validation = [pairs.pop(), pairs.pop(), sarcoma.pop(), lidc.pop()]
    return pairs + lidc + sarcoma + lung + validation


def bench_dataset(folder: Path, cases: list[tuple[list[Path], Path]], channels: list[str]) -> Path:
    """An nnU-Net v2 folder of copies of the kept-back cases (a dataset.json holds only its own files)."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i, (images, label) in enumerate(cases):
        for k, image in enumerate(images):
            shutil.copy(image, folder / "imagesTr" / f"case{i:03d}_{k:04d}.nii.gz")
        shutil.copy(label, folder / "labelsTr" / f"case{i:03d}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {str(k): c for k, c in enumerate(channels)},
                                                     "labels": {"background": 0, "lesion": 1}, "numTraining": len(cases),
                                                     "file_ending": ".nii.gz"}))
    return folder / "dataset.json"


def lesion_benches(data: Path, work: Path, out: Path, quick: bool) -> list[tuple[str, Path, list[str]]]:
    """(name, dataset.json, extra bench options) of each kept-back set."""
    held = brats_cases(data)[-VALIDATION_CASES:]
    brats = bench_dataset(work / "bench" / "brats", [([c / f"{c.name}_{s}.nii.gz" for _, s in CHANNELS], c / f"{c.name}_seg.nii.gz")
                                                     for c in held], [c for c, _ in CHANNELS])
    fixed = ["--fixed", str(out / "glioma-mr4")] if (out / "glioma-mr4").is_dir() else []
    runs = [(f"BraTS {channel}, {target}", brats, ["--channel", channel, "--values", ",".join(map(str, values)),
                                                   "--test-cases", str(len(held)), *fixed])
            for channel, _ in CHANNELS for target, values in LESION_TARGETS]
    nodules = sorted((data / "lidc_nodules" / "image").glob("*.nii.gz"))[-LIDC_KEPT_BACK:]
    nodules = nodules[:3] if quick else nodules
    lidc = bench_dataset(work / "bench" / "lidc", [([n], n.parent.parent / "mask" / n.name) for n in nodules], ["CT"])
    runs.append(("LIDC nodules", lidc, ["--test-cases", str(len(nodules))]))
    for modality in ("CT", "MR_T1", "PET"):
        sts = bench_dataset(work / "bench" / f"sarcoma-{modality}", [([data / "sarcoma" / f"STS_002_{modality}_image.nii.gz"],
                                                                       data / "sarcoma" / f"STS_002_{modality}_mask.nii.gz")], [modality])
        runs.append((f"sarcoma {modality.replace('_T1', ' T1')}", sts, ["--test-cases", "1"]))
    return runs


def pooled(name: str) -> str:
    """A bench run's name as the plot groups it: "BraTS t1c, tumor core" -> "BraTS, tumor core" (four
    channels), "sarcoma PET" -> "sarcoma" (three modalities)."""
    if name.startswith("BraTS "):
        return "BraTS, " + name.split(", ", 1)[1]
    return "sarcoma" if name.startswith("sarcoma ") else name


def bench_report(results: list[Path], folder: Path) -> dict:
    """The kept-back scores of every bench run in one table (``results.md``), one file of every case
    (``results.json``) and one plot (``dice_vs_clicks.png``: BraTS pooled over the four channels per
    target, sarcoma over its modalities); returns the summaries by dataset for the model card."""
    from sarseg.bench_interactive import markdown, plot, summarise
    from sarseg.core.files import write_bytes

    runs = [json.loads(r.read_text()) for r in results]
    rows = [row for run in runs for row in run["cases"]]
    clicks = runs[0]["clicks"]
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / "results.md", markdown(summarise(rows, clicks), clicks).encode())
    write_bytes(folder / "results.json", json.dumps(runs, indent=1).encode())
    plot([{**row, "dataset": pooled(row["dataset"])} for row in rows], folder / "dice_vs_clicks.png")
    print((folder / "results.md").read_text(), flush=True)
    return {s["dataset"]: {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items() if k != "dataset"}
            for s in summarise(rows, clicks)}


def make_lesion_click(data: Path, out: Path, work: Path, quick: bool) -> None:
    recipe = RECIPES["lesion-click"]
    steps = recipe["quick_steps"] if quick else recipe["steps"]
    base = work / "lesion-base"
    shutil.rmtree(base, ignore_errors=True)
    base_config = work / "lesion-base.json"
    base_config.write_text(json.dumps({"net": recipe["net"]}))
    sarseg("pretrain", "--preset", recipe["preset"], "--steps", recipe["quick_steps"] if quick else recipe["base_steps"],
           "--seed", 0, "--config", base_config, "--data", *pretraining_sources(data), "--out", base,
           log=work / "lesion-base.log")
    pairs = lesion_training_cases(data, work, quick)
    folder = work / "lesion-click"
    shutil.rmtree(folder, ignore_errors=True)
    config = work / "lesion-click.json"
    config.write_text(json.dumps({"val_fraction": 4 / len(pairs), "min_train_cases": 1, **SHIPPED_JITTER,
                                  "val_every": 2 if quick else 500, "checkpoint_every": 2 if quick else 500}))
    sarseg("finetune", "--init", base, "--promptable", "--images", *[i for i, _ in pairs],
           "--labels", *[l for _, l in pairs], "--modalities", "default", "--preset", recipe["preset"], "--steps", steps,
           "--seed", 0, "--config", config, "--out", folder, log=work / "lesion-click.log")
    results = []
    for name, dataset, options in lesion_benches(data, work, out, quick):
        bench = work / "bench" / f"result-{name.replace(' ', '_').replace(',', '')}"
        shutil.rmtree(bench, ignore_errors=True)
        sarseg("bench", "interactive", "--model", folder, "--dataset", dataset, "--name", name, "--clicks", 10,
               "--out", bench, "--device", "cpu", *options, log=work / "lesion-click-bench.log")
        results.append(bench / "results.json")
    scores = bench_report(results, work / "bench" if quick else REPORT)
    install(folder, out / "lesion-click", {
        "intended_use": INTENDED_USE + "; one lesion (tumor, nodule) from clicks and a box, in any single modality "
                                       "(sarseg segment --points / --prompts, sarseg serve)",
        "input_requirements": "one channel, any modality (normalised by its own 0.5-99.5 percentiles); clicks inside "
                              "the lesion, optionally clicks outside it and a box around it, in LPS mm",
        "training_data": "BraTS 2018 training cases (whole tumor and core, one channel at a time), LIDC-IDRI nodule "
                         "volumes of interest, sarcoma STS_001 (CT, MR T1, PET), the IBSI lung CT patient",
        "licenses": [LICENSES[k] for k in ("brats2018", "lidc_nodules", "sarcoma", "lung_ct")],
        "init": f"SAR pretraining, {recipe['preset']} preset with widths {recipe['net']['features']}, {recipe['base_steps']} "
                "steps on sar-base's volumes "
                "(scripts/make_models.py: work folder lesion-base)",
        "validation": {"protocol": "sarseg bench interactive, 10 simulated clicks per kept-back case", "scores": scores},
        "recipe": "scripts/make_models.py" + (" --quick" if quick else "")})


MAKERS = {"sar-base": make_sar_base, "glioma-mr4": make_glioma, "lesion-click": make_lesion_click}


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
