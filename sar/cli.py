"""The ``sar`` command. Exit codes: 0 success, 2 bad input, 130 cancelled."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import BadInput, Cancelled
from .runtime import tune_malloc

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"sar: error: {message}\n")


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


def _bench_args(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    q = bench.add_parser("proxy", help="throughput of the whole proxy-task pipeline from volumes in memory")
    q.add_argument("--seconds", type=float, default=10.0)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--device", default="auto")
    q.add_argument("--json", action="store_true")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sar", description="SAR: Scale-Aware Restoration pretraining and tumor segmentation")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _pretrain_args(sub)
    _bench_args(sub)
    return p


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise BadInput(name, f"must be positive (got {value})")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from . import phantom
    from .config import pretrain_config, read_config_file
    from .data import Source, parse_sources
    from .pretrain import pretrain
    from .train import close_distributed, init_distributed

    for name in ("--steps", "--batch-size"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    overrides = read_config_file(args.config) if args.config else {}
    for key in ("steps", "batch_size", "seed", "workers"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = pretrain_config(args.preset, overrides, where=str(args.config or "config"))
    if args.data:
        sources = parse_sources(args.data)
    else:
        cases = phantom.write_cases(phantom.cache_folder(), 6)
        sources = [Source(m, tuple(c[m] for c in cases)) for m in phantom.MODALITIES]
    dist_info, device = init_distributed(args.device)
    try:
        out = pretrain(config, sources, args.out, device, dist_info, args.resume, args.progress,
                       steps=args.steps if args.resume else None)
    finally:
        close_distributed()
    if dist_info.main and args.progress != "json":
        print(f"model written to {out}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import proxy_throughput
    from .train import resolve_device

    _positive("--seconds", args.seconds)
    _positive("--batch-size", args.batch_size)
    result = proxy_throughput(args.seconds, args.batch_size, resolve_device(args.device))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"proxy task: {result['cubes_per_s']:.0f} cubes/s on {result['device']} "
              f"(batch {result['batch_size']}, {result['cubes']} cubes in {result['seconds']:.1f} s)")
    return EXIT_OK


COMMANDS = {"pretrain": cmd_pretrain, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tune_malloc()
    try:
        return COMMANDS[args.command](args)
    except BadInput as exc:
        print(f"sar: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"sar: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
