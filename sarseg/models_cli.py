"""``sarseg models ...``: the built-in and the user's models in one listing, and model zips in and out
(the registry itself is ``core/registry.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.errors import EXIT_OK
from .core.registry import Model, Registry, describe

_ROOT_HELP = "the user's models folder (default: $SARSEG_MODELS, else models/ in the per-user sarseg data folder)"


def add_parser(subparsers) -> None:
    """Add ``models`` with its sub-commands to the ``sarseg`` parser's sub-parsers."""
    p = subparsers.add_parser("models", help="models by name: list, show, import and export zips")
    sub = p.add_subparsers(dest="models_command", required=True, parser_class=type(p))

    def command(name: str, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help)
        q.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
        return q

    command("list", "built-in (read-only) and your models").add_argument("--json", action="store_true",
                                                                          help="one JSON list of models")
    q = command("show", "one model's card: what it is for, its training, its validation")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="the whole model.json")
    command("import", "unpack a model zip as a new model (a taken name gets the next version)").add_argument("zip", type=Path)
    q = command("export", "write a model as a zip (its card and weights)")
    q.add_argument("name")
    q.add_argument("zip", type=Path)


def summary(model: Model) -> dict:
    """What a listing says of a model."""
    card = model.card
    out = {"name": model.name, "kind": card.kind, "builtin": model.builtin, "preset": card.preset,
           "folder": str(model.folder)}
    if card.kind == "segmentation":
        out.update(modalities=list(card.modalities), segments=list(card.labels.names) if card.labels else [],
                   promptable=card.promptable)
    else:
        out.update(sources=list(card.sources))
    return out


def run(args: argparse.Namespace) -> int:
    registry = Registry(args.root)
    cmd = args.models_command
    if cmd == "list":
        models, problems = registry.scan()
        if args.json:
            print(json.dumps([summary(m) for m in models], indent=1))
        else:
            print(f"{'NAME':24} {'KIND':12} {'WHERE':9} INPUTS / SOURCES")
            for model in models:
                row = summary(model)
                inputs = ", ".join(row.get("modalities", row.get("sources", [])))
                print(f"{model.name:24} {row['kind']:12} {'built-in' if model.builtin else 'yours':9} {inputs}")
        for folder, problem in problems.items():
            print(f"sarseg: warning: {folder}: {problem} (left out)", file=sys.stderr)
    elif cmd == "show":
        model = registry.get(args.name)
        if args.json:
            print(json.dumps(model.card.to_dict(), indent=1))
        else:
            print(f"{model.name} ({'built-in, read-only' if model.builtin else 'yours'}): {model.folder}")
            print(describe(model.card))
    elif cmd == "import":
        model = registry.import_zip(args.zip)
        print(f"imported {model.name} into {model.folder}")
    else:
        print(f"wrote {registry.export_zip(args.name, args.zip)}")
    return EXIT_OK
