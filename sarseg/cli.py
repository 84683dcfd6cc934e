"""The ``sarseg`` command. Exit codes (``sarseg.core.errors``): 0 success, 2 bad input, 130 cancelled."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

from . import jobs_cli, models_cli
from .core.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK, BadInput, Cancelled
from .core.registry import DEFAULT_INIT
from .runtime import configure_threads, thread_policy, tune_malloc


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default; options whose default is not a value (None) say theirs
    in words, and on/off flags need none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default is not None
                and action.default is not False and action.default is not argparse.SUPPRESS and not action.required):
            text += " (default: %(default)s)"
        return text


_NUMBER = r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_NEGATIVE_VALUE = re.compile(rf"^-{_NUMBER}$|^-{_NUMBER},-?{_NUMBER},-?{_NUMBER}$")  # a number, or a point X,Y,Z


class _Parser(argparse.ArgumentParser):
    """argparse with the defaults shown, no abbreviated options (``--ou`` is not ``--out``; a job's
    ``--steps`` override must match by name), unknown options named whatever else went wrong, and errors
    in the form of every other bad input (``sarseg: error: ...``, then where the usage is)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Help)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []
        self._negative_number_matcher = _NEGATIVE_VALUE  # "--points -3.5,10,2" is a value, not an option

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _unknown_options(self) -> list[str]:
        """Options in this parser's part of the command line that it does not know (a sub-command's part
        is left to the sub-command's parser)."""
        unknown, tokens = [], iter(self._argv)
        for token in tokens:
            if token == "--":
                break
            if token.startswith("-") and token != "-" and not self._negative_number_matcher.match(token):
                action = self._option_string_actions.get(token.split("=", 1)[0])
                if action is None:
                    unknown.append(token)
                elif "=" not in token and action.nargs is None:
                    next(tokens, None)  # its value
            elif self._subparsers is not None:
                break  # the sub-command: the rest is its own
        return unknown

    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        unknown = self._unknown_options()
        if unknown and not message.startswith("unrecognized arguments"):
            message = f"unrecognized arguments: {' '.join(unknown)} (and {message})"
        self.exit(EXIT_BAD_INPUT, f"sarseg: error: {message}\n(see '{self.prog} --help')\n")


def _preset_settings(p: argparse.ArgumentParser, *names: str) -> None:
    """Options that override one setting of the preset (``--config`` and the preset fill the rest)."""
    what = {"steps": "training steps", "batch-size": "samples per step", "seed": "random seed",
            "workers": "DataLoader processes reading volumes"}
    for name in names:
        p.add_argument(f"--{name}", type=int, default=None, help=f"{what[name]} (default: the preset's)")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda")


def _common(p: argparse.ArgumentParser, progress_help: str = "bar on stderr, or one JSON event per line on stdout (jobs)") -> None:
    _device(p)
    p.add_argument("--progress", choices=("bar", "json"), default="bar", help=progress_help)


def _pretrain_args(sub) -> None:
    p = sub.add_parser("pretrain", help="SAR self-supervised pretraining on unlabeled volumes")
    p.add_argument("--data", nargs="+", metavar="[NAME=]PATH", default=None,
                   help="files, folders, globs or dataset.json, optionally named by source (mr=..., ct=...) "
                        "(default: built-in synthetic CT/MR/PET phantoms)")
    p.add_argument("--out", required=True, type=Path, help="model folder to create (or resume)")
    p.add_argument("--preset", default="small", help="tiny | small | genesis: network size, steps, batch size")
    _preset_settings(p, "steps", "batch-size", "seed", "workers")
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--config", type=Path, default=None, help="JSON file of settings over the preset (default: none)")


def _finetune_args(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune for tumor segmentation from a SAR model or from scratch")
    p.add_argument("--init", default=DEFAULT_INIT, help="the model to start from: a name (sarseg models list; sar-base is "
                                                         "the built-in SAR-pretrained one) or folder, or 'scratch'")
    p.add_argument("--allow-partial-init", action="store_true",
                   help="fine-tune even when only part of the --init model's encoder fits (other channels or widths)")
    p.add_argument("--images", nargs="+", metavar="CASE", default=None,
                   help="one entry per case; a case's channels joined by commas (flair.nii.gz,t1c.nii.gz) "
                        "(default: none; give --images with --labels, or --dataset)")
    p.add_argument("--labels", nargs="+", metavar="PATH", default=None, help="label maps, in the order of --images (default: none)")
    p.add_argument("--dataset", type=Path, default=None, help="dataset.json (Decathlon or nnU-Net v2) instead of --images/--labels (default: none)")
    p.add_argument("--out", required=True, type=Path, help="model folder to create (or resume)")
    p.add_argument("--label-scheme", default="auto", help="auto (one class per label value) | brats (WT/TC/ET regions) | binary")
    p.add_argument("--modalities", default=None,
                   help="channel names, comma-separated, picking each channel's normalisation (default: the dataset's, else 'default')")
    p.add_argument("--preset", default="small", help="tiny | small | genesis: network size, steps, batch size")
    _preset_settings(p, "steps", "batch-size", "seed")
    p.add_argument("--max-cases", type=int, default=None, help="train on the first K labeled cases only (default: all)")
    p.add_argument("--promptable", action="store_true",
                   help="train a promptable (interactive) model: the image plus positive/negative clicks and a box, "
                        "with simulated prompts; one label (--label-scheme auto: binary)")
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--config", type=Path, default=None, help="JSON file of settings over the preset (default: none)")


def _segment_args(sub) -> None:
    p = sub.add_parser("segment", help="segment a scan with a fine-tuned model")
    p.add_argument("--model", required=True, type=Path, help="a fine-tuned model: a name (sarseg models list) or folder")
    p.add_argument("--input", required=True, nargs="+", help="the case's channel files, one per model modality, in its order")
    p.add_argument("--output", required=True, type=Path, help=".nii.gz, .nrrd or .seg.nrrd (segment names and colors)")
    p.add_argument("--roi", nargs=6, type=float, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"), default=None,
                   help="segment only this box, physical LPS mm as SimpleITK and the file's header; for a promptable "
                        "model, the box around the lesion (default: the whole image)")
    p.add_argument("--points", nargs="+", metavar="X,Y,Z", default=None,
                   help="promptable models: clicks inside the lesion, LPS mm as ITK reads the image (default: none)")
    p.add_argument("--negative-points", nargs="+", metavar="X,Y,Z", default=None,
                   help="promptable models: clicks outside the lesion, LPS mm (default: none)")
    p.add_argument("--prompts", nargs="+", type=Path, metavar="FILE.mrk.json", default=None,
                   help="promptable models: Slicer markups files, their point lists positive clicks and an ROI the box "
                        "(default: none)")
    p.add_argument("--negative-prompts", nargs="+", type=Path, metavar="FILE.mrk.json", default=None,
                   help="promptable models: Slicer markups files whose points are negative clicks (default: none)")
    p.add_argument("--probabilities", type=Path, default=None, help="also write the probabilities, one component per output (default: not written)")
    p.add_argument("--tta", action="store_true", help="average over flips (test-time augmentation)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model's)")
    _common(p, "json: start/done events on stdout (jobs)")


def _serve_args(sub) -> None:
    p = sub.add_parser("serve", help="the interactive worker: a promptable model answering prompts as JSON lines on "
                                     "stdin/stdout (protocol: sarseg/core/worker.py)")
    p.add_argument("--model", required=True, type=Path, help="a promptable model: a name (sarseg models list) or folder")
    _device(p)


def _evaluate_args(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, HD95, surface Dice and volumes of a label map against a reference")
    p.add_argument("--pred", required=True, type=Path, help="the label map to score")
    p.add_argument("--ref", required=True, type=Path, help="the reference label map")
    p.add_argument("--model", type=Path, default=None, help="evaluate the model's labels/regions, a name or folder (default: each label value)")
    p.add_argument("--label-scheme", default=None, help="brats | binary instead of per label value (default: each label value)")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    p.add_argument("--json", type=Path, default=None, dest="json_out", help="also write the report as JSON (default: stdout only)")
    p.add_argument("--csv", type=Path, default=None, dest="csv_out", help="also write one CSV row per label (default: none)")


def _demo_args(sub) -> None:
    p = sub.add_parser("demo", help="the whole loop on built-in synthetic data: pretrain, fine-tune, segment")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder to create")
    _device(p)
    p.add_argument("--pretrain-steps", type=int, default=150, help="SAR pretraining steps")
    p.add_argument("--finetune-steps", type=int, default=400, help="fine-tuning steps")
    p.add_argument("--seed", type=int, default=0, help="random seed of both trainings")


def _bench_args(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (not part of the engine shipped in the Slicer extension)")
    bench = p.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    q = bench.add_parser("proxy", help="throughput of the whole proxy-task pipeline from volumes in memory")
    q.add_argument("--seconds", type=float, default=10.0, help="how long to measure")
    q.add_argument("--batch-size", type=int, default=64, help="cubes per batch")
    _device(q)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    r = bench.add_parser("ssl", help="scratch vs Models Genesis vs SAR (its defaults and its best variant) on the shared "
                                     "data (BraTS 2018, LIDC nodules) or on your labeled cases")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--data", type=Path, default=None,
                       help="the shared data folder: brats2018/, lidc_nodules/ (default: ../shared/data beside the checkout)")
    where.add_argument("--dataset", type=Path, default=None, help="your labeled cases instead: dataset.json, one file per channel (default: none, the shared data)")
    r.add_argument("--profile", choices=("quick", "cases", "full", "gpu"), default="quick",
                   help="the budget: quick (2 CPU cores, 30 minutes), cases (quick's at every k of full, 34 minutes), "
                        "full, gpu (one H100/H200, 10 minutes)")
    r.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the 2-CPU, 30-minute budget")
    r.add_argument("--labeled-cases", type=int, nargs="+", default=None, metavar="K",
                   help="fine-tune on the first K training cases, for each K: Dice vs labeled cases (default: the profile's "
                        "on the shared data, all of them on --dataset)")
    r.add_argument("--test-cases", type=int, default=1, help="with --dataset: the last N cases are the test set")
    r.add_argument("--tasks", nargs="+", choices=("brats2018", "lidc"), default=None,
                   help="on the shared data: only these tasks (default: both)")
    r.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S", help="these seeds (default: the profile's 0 1 2)")
    r.add_argument("--out", type=Path, default=Path("runs/bench-ssl"), help="folder for models, results and plots")
    _device(r)
    i = bench.add_parser("interactive", help="a promptable model by simulated clicks on held-back cases (Dice after 1, 3 "
                                             "and 5 clicks, clicks to Dice 0.85 and 0.90), next to a fixed model")
    i.add_argument("--model", type=Path, required=True, help="the promptable model: a name (sarseg models list) or folder")
    i.add_argument("--fixed", default=None, help="a fixed (non-promptable) model scored on the same cases (default: none)")
    i.add_argument("--dataset", type=Path, required=True, help="the cases (dataset.json, Decathlon or nnU-Net v2)")
    i.add_argument("--test-cases", type=int, default=5, help="the last N labeled cases are scored (held back from training)")
    i.add_argument("--channel", default=None, help="the channel the promptable model sees, by name or index (default: the first)")
    i.add_argument("--values", default=None, metavar="V,V,...",
                   help="label values of the target, e.g. 1,3,4 for the BraTS tumor core (default: any label)")
    i.add_argument("--clicks", type=int, default=10, help="clicks simulated per case")
    i.add_argument("--name", default=None, help="the dataset's name in the table (default: its name and the channel)")
    i.add_argument("--out", type=Path, default=Path("runs/bench-interactive"), help="folder for results.json, results.md and the plot")
    _device(i)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sarseg", description="SAR: Scale-Aware Restoration pretraining and tumor segmentation")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"torch's intra-op CPU threads (default: {thread_policy()})")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _pretrain_args(sub)
    _finetune_args(sub)
    _segment_args(sub)
    _serve_args(sub)
    _evaluate_args(sub)
    _demo_args(sub)
    _bench_args(sub)
    jobs_cli.add_parser(sub)
    models_cli.add_parser(sub)
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
    if "labels" not in overrides and cases and not (args.promptable and args.label_scheme == "auto"):
        scheme = auto_scheme(cases) if args.label_scheme == "auto" else builtin(args.label_scheme, "--label-scheme", ("auto",))
        overrides["labels"] = scheme.to_dict()
    job = None
    if args.promptable:
        from .config import promptable_config
        from .interactive import PromptTraining

        config, job = promptable_config(args.preset, overrides, where=str(args.config or "config")), PromptTraining
    else:
        config = finetune_config(args.preset, overrides, where=str(args.config or "config"))
    return _train_job(args, lambda device, dist_info: finetune(
        config, cases, args.init, args.out, device, dist_info, args.resume, args.progress,
        steps=args.steps if args.resume else None, max_cases=args.max_cases, allow_partial_init=args.allow_partial_init,
        job=job))


def cmd_segment(args: argparse.Namespace) -> int:
    import dataclasses

    from .infer import Segmenter, SegmentProgress
    from .io import check_output_path, read_image, write_image, write_segmentation
    from .train import resolve_device

    check_output_path(args.output, "--output")  # before any work: nothing is computed for nothing
    if args.probabilities is not None:
        check_output_path(args.probabilities, "--probabilities")
        if Path(args.probabilities).resolve() == Path(args.output).resolve():
            raise BadInput("--probabilities", f"is the same file as --output ({args.output})")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise BadInput("--overlap", f"must lie in [0, 1) (got {args.overlap})")
    segmenter = Segmenter.load(args.model, resolve_device(args.device))
    prompts = _prompts(args, segmenter.card)
    inference = segmenter.config.inference
    if args.tta or args.overlap is not None:
        inference = dataclasses.replace(inference, tta=args.tta or inference.tta,
                                        overlap=inference.overlap if args.overlap is None else args.overlap)
    progress = SegmentProgress(str(segmenter.device), 4 if inference.tta else 1) if args.progress == "json" else None
    modalities = segmenter.config.modalities
    image = read_image(args.input, modalities)
    if image.channels != len(modalities):
        given = f"{len(args.input)} file(s) given ({', '.join(args.input)})"
        given += f" holding {image.channels} channels" if image.channels != len(args.input) else ""
        raise BadInput("--input", f"{given}, but the model {args.model} wants {len(modalities)}, one per modality: "
                                  f"{', '.join(modalities)}")
    _warn_unlike_training(segmenter.card, image, args.input)
    if prompts is not None:
        label, probs = _segment_prompted(segmenter, image, prompts, inference, progress)
    else:
        label, probs = segmenter(image, args.roi, inference, progress.windows if progress else None)
    if progress:
        progress.writing()
    write_segmentation(args.output, label, image.geometry, segmenter.labels.segments())
    if args.probabilities is not None:
        try:
            write_image(args.probabilities, probs, image.geometry)
        except BadInput:
            Path(args.output).unlink(missing_ok=True)  # all outputs or none
            raise
    if progress:
        progress.done(str(args.output))
    else:
        print(f"segmentation written to {args.output}")
    return EXIT_OK


def _warn_unlike_training(card, image, inputs: Sequence[str]) -> None:
    """Say on stderr when the scan does not look like what the model was trained on (see core/expects.py)."""
    from .core.expects import background_fraction

    if card.expects is not None:
        for warning in card.expects.warnings(image.geometry.spacing, background_fraction(image.array)):
            print(f"sarseg: warning: {', '.join(map(str, inputs))}: {warning}", file=sys.stderr, flush=True)


def _prompts(args: argparse.Namespace, card) -> list[tuple[str, object]] | None:
    """``segment``'s prompts, each with the option (and file) it came from, checked before any image is
    read; None for a fixed model, which takes none."""
    from .core.prompts import Prompts, parse_point, read_markups

    parts: list[tuple[str, Prompts]] = []
    for option, negative in (("--points", False), ("--negative-points", True)):
        for text in getattr(args, option[2:].replace("-", "_")) or []:
            point = (parse_point(text, f"{option} {text}"),)
            parts.append((f"{option} {text}", Prompts(negative=point) if negative else Prompts(positive=point)))
    for option, negative in (("--prompts", False), ("--negative-prompts", True)):
        for path in getattr(args, option[2:].replace("-", "_")) or []:
            parts.append((f"{option} {path}", read_markups(path, negative)))
    if not card.promptable:
        if parts:
            raise BadInput(args.model, "is not a promptable model: it takes no --points, --negative-points, --prompts "
                                       "or --negative-prompts (a promptable model's model.json has 'prompts')")
        return None
    if args.roi is not None:
        parts.append(("--roi", Prompts(box=tuple(args.roi))))
    if not any(p.positive or p.box is not None for _, p in parts):
        raise BadInput(args.model, "is a promptable model: give the lesion with --points X,Y,Z (LPS mm), --prompts "
                                   "FILE.mrk.json or --roi (negative clicks alone do not say which lesion)")
    return parts


def _segment_prompted(segmenter, image, parts: list, inference, progress):
    """Label map and probabilities of a promptable model from the command line's prompts; a click outside
    the image is named by the option that gave it."""
    from .core.prompts import Prompts
    from .prompted import PromptSession

    session, prompts = PromptSession(segmenter, image), Prompts()
    for where, part in parts:
        session.voxels(part, where)
        prompts = prompts + part
    return session(session.voxels(prompts, "prompts"), inference, progress.windows if progress else None).full(session.shape)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv
    import io

    import numpy as np

    from .core.card import read_card
    from .core.files import check_writable, write_bytes, writing
    from .core.labels import LabelScheme, builtin
    from .io import read_label, read_sitk, Geometry
    from .metrics import evaluate_maps

    if not args.tolerance > 0:
        raise BadInput("--tolerance", f"must be a positive distance in mm (got {args.tolerance})")
    outputs = [p for p in (args.json_out, args.csv_out) if p is not None]
    for output in outputs:
        if Path(output).is_dir():
            raise BadInput(output, "is a folder; give a file name")
        check_writable(output)
    if len(outputs) == 2 and Path(outputs[0]).resolve() == Path(outputs[1]).resolve():
        raise BadInput("--csv", f"is the same file as --json ({args.json_out})")
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
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["name"])
    writer.writeheader()
    writer.writerows(rows)
    contents = {args.json_out: json.dumps(report, indent=2), args.csv_out: table.getvalue()}
    written: list[Path] = []
    try:
        for output, text in contents.items():
            if output is not None:
                with writing(output):
                    write_bytes(Path(output), text.encode("utf-8"))
                written.append(Path(output))
    except BadInput:
        for path in written:  # all outputs or none
            path.unlink(missing_ok=True)
        raise
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import protocol_output, serve
    from .train import resolve_device

    return serve(args.model, resolve_device(args.device), sys.stdin.buffer, protocol_output())


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .train import check_output, resolve_device

    _positive("--pretrain-steps", args.pretrain_steps)
    _positive("--finetune-steps", args.finetune_steps)
    check_output(args.out, resume=False)
    result = run_demo(args.out, resolve_device(args.device), args.pretrain_steps, args.finetune_steps, args.seed)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _bench_module(name: str):
    """``sarseg.bench``, ``sarseg.bench_ssl`` or ``sarseg.bench_interactive``: installed with pip, left out of the Slicer
    extension."""
    import importlib

    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{name}":
            raise
        raise BadInput("sarseg bench", "is not part of the engine shipped in the Slicer extension; "
                                       "install sarseg with pip to run the benchmarks") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from .train import resolve_device

    if args.bench == "interactive":
        from .core.registry import Registry

        bench_interactive = _bench_module("bench_interactive")
        try:
            values = [int(v) for v in args.values.split(",")] if args.values else []
        except ValueError:
            raise BadInput("--values", f"{args.values!r} is not a list of label values V,V,...") from None
        task = bench_interactive.dataset_task(args.dataset, args.test_cases, args.channel, values, args.name)
        fixed = None if args.fixed is None else Registry().resolve(args.fixed)
        print(bench_interactive.benchmark(task, args.model, fixed, args.clicks, args.out, resolve_device(args.device),
                                          log=lambda line: print(line, file=sys.stderr, flush=True)))
        return EXIT_OK
    if args.bench == "ssl":
        bench_ssl = _bench_module("bench_ssl")
        if args.seeds and min(args.seeds) < 0:
            raise BadInput("--seeds", f"seeds are 0 or more (got {min(args.seeds)})")
        if args.dataset is not None:
            if args.tasks:
                raise BadInput("--tasks", "picks among the shared data's tasks; --dataset makes one task of its cases")
            sources, tasks = bench_ssl.dataset_tasks(args.dataset, args.test_cases)
        else:
            sources, tasks = bench_ssl.shared_tasks(args.data or bench_ssl.SHARED_DATA, bench_ssl.PROFILES[args.profile].shared)
            tasks = [t for t in tasks if args.tasks is None or t.name in args.tasks]
        print(bench_ssl.benchmark(sources, tasks, args.out, args.profile, args.labeled_cases, resolve_device(args.device),
                                  log=lambda line: print(line, file=sys.stderr, flush=True), seeds=args.seeds))
        return EXIT_OK
    _positive("--seconds", args.seconds)
    _positive("--batch-size", args.batch_size)
    result = _bench_module("bench").proxy_throughput(args.seconds, args.batch_size, resolve_device(args.device))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"proxy task: {result['cubes_per_s']:.0f} cubes/s on {result['device']} "
              f"(batch {result['batch_size']}, {result['cubes']} cubes in {result['seconds']:.1f} s)")
    return EXIT_OK


COMMANDS = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "segment": cmd_segment, "serve": cmd_serve,
            "evaluate": cmd_evaluate,
            "demo": cmd_demo, "bench": cmd_bench, "jobs": lambda args: jobs_cli.run(args, parser().parse_args), "models": models_cli.run}


def _model_names(args: argparse.Namespace) -> None:
    """``--model`` and ``--init`` take a model's name (``sarseg models list``) as well as its folder."""
    from .core.registry import Registry

    if getattr(args, "model", None) is not None:
        args.model = Registry().resolve(args.model)
    if getattr(args, "init", None) not in (None, "scratch"):
        args.init = str(Registry().resolve(args.init))


def _report(kind: str, exc: BaseException) -> None:
    """``sarseg: KIND: message`` on stderr, on a line of its own (on a terminal a progress bar may be mid-line)."""
    start = "\n" if sys.stderr.isatty() else ""
    print(f"{start}sarseg: {kind}: {str(exc) or type(exc).__name__}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has reported (2)
        return int(exc.code or 0)
    tune_malloc()
    try:
        configure_threads(args.threads, adapt=args.command not in ("jobs", "models"))  # these only read and write files
        _model_names(args)
        return COMMANDS[args.command](args)
    except BadInput as exc:
        _report("error", exc)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        _report("cancelled", exc)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
