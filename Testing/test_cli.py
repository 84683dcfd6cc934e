"""The ``sarseg`` command line itself: unknown options are named, every option's help shows its default,
``--threads``, messages on a line of their own after a progress bar, and the benchmarks' absence from the
engine the Slicer extension ships."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from sarseg import cli
from sarseg.cli import main, parser
from sarseg.core.errors import EXIT_CANCELLED, Cancelled
from cli_helpers import assert_bad, run_cli


@pytest.mark.parametrize("argv, named", [
    (["segment", "--modle", "m", "--input", "a.nii.gz", "--output", "b.nii.gz"], "--modle"),  # --model is missing too
    (["segment", "--roi", "-5", "-5.5", "-5", "5", "5", "5", "--modle", "m"], "--modle"),  # negative numbers are values
    (["--thread", "1", "demo"], "--thread"),  # not "invalid choice: '1'"
    (["pretrain", "--out", "OUT", "--steps", "abc", "--bogus=1"], "--bogus=1"),
    (["pretrain", "--ou", "OUT"], "--ou"),  # no abbreviations: --ou is not --out
    (["jobs", "list", "--bogus"], "--bogus"),
])
def test_unknown_options_are_named(argv: list[str], named: str, tmp_path: Path, capsys) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    rc, err = run_cli(capsys, argv)
    assert_bad(rc, err, f"unrecognized arguments: {named}")
    assert "-5" not in err.split("unrecognized arguments:")[1].split("(")[0]
    assert not (tmp_path / "out").exists()


def _parsers(p: argparse.ArgumentParser):
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_option_help_shows_its_default() -> None:
    seen = {}
    for p in _parsers(parser()):
        for action in p._actions:
            if not action.option_strings or action.nargs == 0 or action.required or action.default is argparse.SUPPRESS:
                continue  # --help, on/off flags, required options, options repeated from the parent
            text = p._get_formatter()._expand_help(action)
            assert "(default: " in text, f"{p.prog} {action.option_strings[0]}: {text!r}"
            seen[f"{p.prog} {action.option_strings[0]}"] = text
    assert seen["sarseg pretrain --steps"] == "training steps (default: the preset's)"
    assert seen["sarseg pretrain --preset"].endswith("(default: small)")
    assert seen["sarseg segment --device"].endswith("(default: auto)")
    assert seen["sarseg evaluate --tolerance"].endswith("(default: 2.0)")
    assert "(default: " in seen["sarseg --threads"]
    assert len(seen) > 40


def test_help_hides_the_job_runner(capsys) -> None:
    assert main(["jobs", "--help"]) == 0
    out = capsys.readouterr().out
    assert "submit" in out and "run-child" not in out


def test_threads_sets_torch_intra_op_threads(capsys) -> None:
    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "bench", "proxy", "--seconds", "0.1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    rc, err = run_cli(capsys, ["--threads", "0", "bench", "proxy"])
    assert_bad(rc, err, "--threads", "must be positive")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_cancel_message_starts_on_its_own_line(terminal: bool, monkeypatch) -> None:
    """On a terminal a progress bar ends mid-line ("\\r[###...] 5/10"); the message must not be glued to it."""
    def interrupted(_args) -> int:
        print("\r[###############...............] 5/10 loss 0.1", end="", file=sys.stderr, flush=True)
        raise Cancelled("stopped at step 5; resume with --resume")

    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setitem(cli.COMMANDS, "demo", interrupted)
    assert main(["demo"]) == EXIT_CANCELLED
    line = "sarseg: cancelled: stopped at step 5; resume with --resume\n"
    assert stream.getvalue().endswith(("5/10 loss 0.1\n" if terminal else "5/10 loss 0.1") + line)


def test_bench_outside_the_pip_engine_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "sarseg.bench", None)  # as in the Slicer extension, which does not ship it
    rc, err = run_cli(capsys, ["bench", "proxy", "--seconds", "0.1"])
    assert_bad(rc, err, "sarseg bench", "not part of the engine shipped in the Slicer extension")
