"""The ``sarseg`` command. Exit codes: 0 success, 2 bad input, 130 cancelled."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .core import jobs
from .core.errors import BadInput, Cancelled
from .runtime import tune_malloc

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"sarseg: error: {message}\n")


def _pretrain_args(sub) -> None:
    p = sub.add_parser("pretrain", help="SAR self-supervised pretraining on unlabeled volumes")
    p.add_argument("--data", nargs="+", metavar="[NAME=]PATH", default=None,
                   help="files, folders, globs or dataset.json, optionally named by source (mr=..., ct=...); "
                        "default: built-in synthetic CT/MR/PET phantoms")
    p.add_argument("--out", required=True, type=Path, help="model folder to create (or resume)")
    p.add_argument("--preset", default="small", help="tiny | small | genesis (default small)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--progress", choices=("bar", "json"), default="bar")
    p.add_argument("--config", type=Path, default=None, help="JSON file of settings over the preset")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes reading volumes")


def _finetune_args(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune for tumor segmentation from a SAR model or from scratch")
    p.add_argument("--init", required=True, help="pretrained (or fine-tuned) model folder, or 'scratch'")
    p.add_argument("--allow-partial-init", action="store_true",
                   help="fine-tune even when only part of the --init model's encoder fits (other channels or widths)")
    p.add_argument("--images", nargs="+", metavar="CASE", default=None,
                   help="one entry per case; a case's channels joined by commas (flair.nii.gz,t1c.nii.gz)")
    p.add_argument("--labels", nargs="+", metavar="PATH", default=None, help="label maps, in the order of --images")
    p.add_argument("--dataset", type=Path, default=None, help="dataset.json (Decathlon or nnU-Net v2) instead of --images/--labels")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--label-scheme", default="auto", help="auto (one class per label value) | brats (WT/TC/ET regions) | binary")
    p.add_argument("--modalities", default=None, help="channel names, comma-separated (pick each channel's normalisation)")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-cases", type=int, default=None, help="train on the first K labeled cases only")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--progress", choices=("bar", "json"), default="bar")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--seed", type=int, default=None)


def _segment_args(sub) -> None:
    p = sub.add_parser("segment", help="segment a scan with a fine-tuned model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--input", required=True, nargs="+", help="the case's channel files, in the model's order")
    p.add_argument("--output", required=True, type=Path, help=".nii.gz, .nrrd or .seg.nrrd (segment names and colors)")
    p.add_argument("--roi", nargs=6, type=float, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"), default=None,
                   help="segment only this box (physical LPS mm, as SimpleITK and the file's header)")
    p.add_argument("--probabilities", type=Path, default=None, help="also write the probabilities (multi-component)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help="average over flips (test-time augmentation)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model's)")
    p.add_argument("--progress", choices=("bar", "json"), default="bar", help="json: start/done events on stdout (jobs)")


def _evaluate_args(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, HD95, surface Dice and volumes of a label map against a reference")
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--ref", required=True, type=Path)
    p.add_argument("--model", type=Path, default=None, help="evaluate the model's labels/regions (default: each label value)")
    p.add_argument("--label-scheme", default=None, help="brats | binary instead of per label value")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    p.add_argument("--json", type=Path, default=None, dest="json_out")
    p.add_argument("--csv", type=Path, default=None, dest="csv_out")


def _demo_args(sub) -> None:
    p = sub.add_parser("demo", help="the whole loop on built-in synthetic data: pretrain, fine-tune, segment")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder to create (default runs/demo)")
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=400)


def _bench_args(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    q = bench.add_parser("proxy", help="throughput of the whole proxy-task pipeline from volumes in memory")
    q.add_argument("--seconds", type=float, default=10.0)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--device", default="auto")
    q.add_argument("--json", action="store_true")
    r = bench.add_parser("ssl", help="scratch vs Models Genesis vs SAR (with and without the adversarial term)")
    r.add_argument("--profile", choices=("quick", "full"), default="quick")
    r.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the 2-CPU, 30-minute profile")
    r.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the shared real cases (default ../shared/data beside the checkout)")
    r.add_argument("--dataset", type=Path, default=None,
                   help="your own labeled cases (dataset.json, one file per channel) instead of the shared ones")
    r.add_argument("--labeled-cases", type=int, nargs="+", default=None, metavar="K",
                   help="fine-tune on the first K training cases, for each K (Dice vs labeled cases); default: all with --dataset")
    r.add_argument("--test-cases", type=int, default=1, help="with --dataset: the last N cases are the test set")
    r.add_argument("--out", type=Path, default=Path("runs/bench-ssl"))
    r.add_argument("--device", default="auto")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sarseg", description="SAR: Scale-Aware Restoration pretraining and tumor segmentation")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _pretrain_args(sub)
    _finetune_args(sub)
    _segment_args(sub)
    _evaluate_args(sub)
    _demo_args(sub)
    _bench_args(sub)
    jobs.add_parser(sub)
    return p


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise BadInput(name, f"must be positive (got {value})")


def _overrides(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    """Settings from ``--config FILE`` with the command-line options in ``keys`` on top."""
    from .config import read_config_file

    for name in ("--steps", "--batch-size"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    overrides = read_config_file(args.config) if args.config else {}
    overrides.update({key: getattr(args, key) for key in keys if getattr(args, key) is not None})
    return overrides


def _train_job(args: argparse.Namespace, job) -> int:
    """Run ``job(device, dist_info)`` inside this process's ``torchrun`` group (or alone)."""
    from .train import close_distributed, init_distributed

    dist_info, device = init_distributed(args.device)
    try:
        out = job(device, dist_info)
    finally:
        close_distributed()
    if dist_info.main and args.progress != "json":
        print(f"model written to {out}")
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    from . import phantom
    from .config import pretrain_config
    from .data import Source, parse_sources
    from .pretrain import pretrain

    overrides = _overrides(args, ("steps", "batch_size", "seed", "workers"))
    config = pretrain_config(args.preset, overrides, where=str(args.config or "config"))
    if args.data:
        sources = parse_sources(args.data)
    else:
        cases = phantom.write_cases(phantom.cache_folder(), 6)
        sources = [Source(m, tuple(c[m] for c in cases)) for m in phantom.MODALITIES]
    return _train_job(args, lambda device, dist_info: pretrain(
        config, sources, args.out, device, dist_info, args.resume, args.progress, steps=args.steps if args.resume else None))


def cmd_finetune(args: argparse.Namespace) -> int:
    from .config import finetune_config
    from .core.labels import builtin
    from .finetune import auto_scheme, cases_from_dataset, finetune, parse_cases

    if args.dataset is not None:
        if args.images or args.labels:
            raise BadInput("--dataset", "give either --dataset or --images with --labels, not both")
        cases, modalities = cases_from_dataset(args.dataset)
    elif args.images or args.labels:
        cases, modalities = parse_cases(args.images or [], args.labels or []), ()
    elif args.resume:
        cases, modalities = [], ()  # the checkpoint knows its cases and settings
    else:
        raise BadInput("--images", "give --images with --labels, or --dataset")
    overrides = _overrides(args, ("steps", "batch_size", "seed"))
    if args.modalities:
        modalities = tuple(m.strip() for m in args.modalities.split(","))
    if modalities and "modalities" not in overrides:
        overrides["modalities"] = list(modalities)
    if "labels" not in overrides and cases:
        scheme = auto_scheme(cases) if args.label_scheme == "auto" else builtin(args.label_scheme, "--label-scheme", ("auto",))
        overrides["labels"] = scheme.to_dict()
    config = finetune_config(args.preset, overrides, where=str(args.config or "config"))
    return _train_job(args, lambda device, dist_info: finetune(
        config, cases, args.init, args.out, device, dist_info, args.resume, args.progress,
        steps=args.steps if args.resume else None, max_cases=args.max_cases, allow_partial_init=args.allow_partial_init))


def cmd_segment(args: argparse.Namespace) -> int:
    import dataclasses

    from .infer import Segmenter
    from .io import read_image, write_image, write_segmentation
    from .train import resolve_device

    segmenter = Segmenter.load(args.model, resolve_device(args.device))
    image = read_image(args.input, segmenter.config.modalities)
    inference = segmenter.config.inference
    if args.tta or args.overlap is not None:
        if args.overlap is not None and not 0 <= args.overlap < 1:
            raise BadInput("--overlap", f"must lie in [0, 1) (got {args.overlap})")
        inference = dataclasses.replace(inference, tta=args.tta or inference.tta,
                                        overlap=inference.overlap if args.overlap is None else args.overlap)
    if args.progress == "json":
        print(json.dumps({"event": "start", "step": 0, "steps": 1, "device": str(segmenter.device)}), flush=True)
    label, probs = segmenter(image, args.roi, inference)
    write_segmentation(args.output, label, image.geometry, segmenter.labels.segments())
    if args.probabilities is not None:
        write_image(args.probabilities, probs, image.geometry)
    if args.progress == "json":
        print(json.dumps({"event": "done", "step": 1, "steps": 1, "path": str(args.output)}), flush=True)
    else:
        print(f"segmentation written to {args.output}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from .core.card import read_card
    from .core.labels import LabelScheme, builtin
    from .io import read_label, read_sitk, Geometry
    from .metrics import evaluate_maps

    reference_geometry = Geometry.of(read_sitk(args.ref))
    ref = read_label(args.ref)
    pred = read_label(args.pred, reference_geometry)
    if args.model is not None:
        card = read_card(args.model)
        card.require_kind("segmentation", "evaluating its labels")
        scheme = card.labels
    elif args.label_scheme is not None:
        scheme = builtin(args.label_scheme, "--label-scheme")
    else:
        scheme = LabelScheme.auto(np.union1d(np.unique(ref), np.unique(pred)).tolist(), "--pred and --ref")
    scheme.check_values(ref, args.ref)
    scheme.check_values(pred, args.pred)
    rows = evaluate_maps(pred, ref, reference_geometry.spacing[::-1], scheme, args.tolerance)
    report = {"pred": str(args.pred), "ref": str(args.ref), "tolerance_mm": args.tolerance, "labels": rows}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    if args.csv_out:
        with open(args.csv_out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["name"])
            writer.writeheader()
            writer.writerows(rows)
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .train import check_output, resolve_device

    _positive("--pretrain-steps", args.pretrain_steps)
    _positive("--finetune-steps", args.finetune_steps)
    check_output(args.out, resume=False)
    result = run_demo(args.out, resolve_device(args.device), args.pretrain_steps, args.finetune_steps)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .train import resolve_device

    if args.bench == "ssl":
        import dataclasses

        from . import bench_ssl

        try:
            import matplotlib  # noqa: F401  (checked before hours of work, not after)
        except ImportError:
            raise BadInput("sarseg bench ssl", "draws its plots with matplotlib, which is not installed: pip install 'sarseg[bench]'") from None
        profile = bench_ssl.PROFILES[args.profile]
        if args.dataset is not None:
            sources, tasks = bench_ssl.dataset_tasks(args.dataset, args.test_cases)
        else:
            sources, tasks = bench_ssl.shared_tasks(args.data, args.out, profile.folds)
        pool = max(len(t.train) for t in tasks)
        counts = args.labeled_cases or ([pool] if args.dataset is not None else list(profile.labeled_cases))
        if not 1 <= min(counts) <= max(counts) <= pool:
            raise BadInput("--labeled-cases", f"each K must lie in 1..{pool}, the training cases there are (got {sorted(counts)})")
        profile = dataclasses.replace(profile, labeled_cases=tuple(sorted(set(counts))))
        args.out.mkdir(parents=True, exist_ok=True)
        rows = bench_ssl.run(sources, tasks, args.out, profile, resolve_device(args.device),
                             log=lambda line: print(line, file=sys.stderr, flush=True))
        summary = bench_ssl.summarise(rows)
        (args.out / "summary.md").write_text(bench_ssl.markdown(summary), encoding="utf-8")
        bench_ssl.plot(summary, args.out)
        print(bench_ssl.markdown(summary))
        return EXIT_OK
    from .bench import proxy_throughput

    _positive("--seconds", args.seconds)
    _positive("--batch-size", args.batch_size)
    result = proxy_throughput(args.seconds, args.batch_size, resolve_device(args.device))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"proxy task: {result['cubes_per_s']:.0f} cubes/s on {result['device']} "
              f"(batch {result['batch_size']}, {result['cubes']} cubes in {result['seconds']:.1f} s)")
    return EXIT_OK


COMMANDS = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "segment": cmd_segment, "evaluate": cmd_evaluate,
            "demo": cmd_demo, "bench": cmd_bench, "jobs": jobs.run}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tune_malloc()
    try:
        return COMMANDS[args.command](args)
    except BadInput as exc:
        print(f"sarseg: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"sarseg: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
