"""``sarseg.core.progress``: the jobs' progress lines as the trainer writes them and every reader reads
them: a real run read while it grows (lines cut anywhere), its resume appending, replaced files, an
earlier checkpoint resumed, and lines that are not progress."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from sarseg.core.jobs import JobManager
from sarseg.core.progress import ProgressReader, format_event, fraction, parse_line


def pretrain(out: Path, progress: Path, *extra: str) -> None:
    """``sarseg pretrain --progress json`` with its stdout appended to ``progress``, as a job's runner does."""
    import torch

    from sarseg.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with open(progress, "a") as stdout, redirect_stdout(stdout), redirect_stderr(io.StringIO()) as err:
            code = main(["pretrain", "--preset", "tiny", "--workers", "0", "--out", str(out), "--progress", "json",
                         *extra])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err.getvalue()[-3000:]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[bytes, int]:
    """The progress file of a real tiny pretraining (12 steps) and of its resume to 17 steps, and where
    the first run's lines end."""
    folder = tmp_path_factory.mktemp("run")
    progress = folder / "progress.jsonl"
    pretrain(folder / "model", progress, "--steps", "12")
    first = progress.stat().st_size
    pretrain(folder / "model", progress, "--resume", "--steps", "17")
    return progress.read_bytes(), first


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def lines_of(*events: dict) -> bytes:
    return "".join(format_event(**event) + "\n" for event in events).encode()


def test_a_real_run_read_while_it_grows_then_its_resume(real_run, tmp_path):
    data, first = real_run
    path = tmp_path / "progress.jsonl"
    reader = ProgressReader(path, history=True)
    assert reader.update() == [] and reader.summary == {} and reader.history == {}  # nothing written yet

    seen = []
    for start in range(0, first, 37):  # written in pieces that cut lines anywhere
        end = min(start + 37, first)
        append(path, data[start:end])
        seen += reader.update()
        assert len(seen) == data[:end].count(b"\n")  # a half-written line waits
    written = [json.loads(line) for line in data[:first].decode().splitlines()]
    assert seen == written and [e["event"] for e in written][:1] == ["start"]
    steps = [e for e in written if e["event"] == "step"]
    summary = reader.summary
    assert summary["event"] == "done" and summary["done"] is True and fraction(summary) == 1.0
    assert summary["step"] == summary["steps"] == 12 and summary["started_step"] == 0
    assert summary["checkpoint_step"] == 12 and summary["eta_s"] == steps[-1]["eta_s"]
    assert summary["losses"] == {k: v for k, v in steps[-1].items() if k.startswith("loss")}
    assert summary["evaluation"]["cubes"] > 0 and summary["device"] == "cpu"
    assert reader.history["loss"] == [(e["step"], e["loss"]) for e in steps] and steps[-1]["step"] == 12

    append(path, data[first:])  # the resumed run appends to the same file
    resumed = reader.update()
    assert resumed == [json.loads(line) for line in data[first:].decode().splitlines()]
    assert resumed[0]["event"] == "start" and resumed[0]["step"] == 12
    summary = reader.summary
    assert summary["started_step"] == 12 and summary["step"] == summary["steps"] == 17 and summary["done"]
    loss_steps = [step for step, _ in reader.history["loss"]]
    assert loss_steps == sorted(set(loss_steps)) and loss_steps[:len(steps)] == [e["step"] for e in steps]
    assert loss_steps[-1] == 17 and len(loss_steps) > len(steps)
    assert reader.update() == []  # nothing new


def test_a_replaced_or_removed_file_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "progress.jsonl"
    append(path, lines_of({"name": "start", "step": 0, "steps": 100},
                          {"name": "step", "step": 40, "steps": 100, "loss": 0.5, "eta_s": 60.0}))
    reader = ProgressReader(path, history=True)
    reader.update()
    assert reader.summary["step"] == 40 and reader.history == {"loss": [(40.0, 0.5)]}

    shorter = tmp_path / "shorter"
    shorter.write_bytes(lines_of({"name": "start", "step": 0, "steps": 10}))
    os.replace(shorter, path)
    assert [e["event"] for e in reader.update()] == ["start"]
    assert reader.summary == {"event": "start", "step": 0, "steps": 10, "started_step": 0} and reader.history == {}

    longer = tmp_path / "longer"  # another file, longer than what was read: not read on from the old offset
    longer.write_bytes(lines_of({"name": "start", "step": 0, "steps": 8},
                                *({"name": "step", "step": s, "steps": 8, "loss": 1.0 / s} for s in (2, 4, 6, 8)),
                                {"name": "done", "step": 8}))
    os.replace(longer, path)
    assert len(reader.update()) == 6 and reader.summary["done"] and reader.history["loss"][0] == (2.0, 0.5)

    path.unlink()
    assert reader.update() == [] and reader.summary == {} and reader.history == {}


def test_resuming_from_an_earlier_checkpoint_drops_the_losses_it_redoes(tmp_path):
    path = tmp_path / "progress.jsonl"
    append(path, lines_of({"name": "start", "step": 0, "steps": 30},
                          {"name": "step", "step": 10, "loss": 1.0, "eta_s": 20.0},
                          {"name": "checkpoint", "step": 20},
                          {"name": "step", "step": 20, "loss": 0.8, "eta_s": 10.0},
                          {"name": "step", "step": 25, "loss": 0.7, "eta_s": 5.0}))  # killed here
    reader = ProgressReader(path, history=True)
    reader.update()
    append(path, lines_of({"name": "start", "step": 20, "steps": 30}))  # resumed from the checkpoint
    reader.update()
    assert reader.history == {"loss": [(10.0, 1.0), (20.0, 0.8)]}
    assert "eta_s" not in reader.summary and reader.summary["started_step"] == 20 and fraction(reader.summary) == 2 / 3
    append(path, lines_of({"name": "step", "step": 25, "loss": 0.6}, {"name": "step", "step": 30, "loss": 0.5},
                          {"name": "done", "step": 30}))
    reader.update()
    assert reader.history == {"loss": [(10.0, 1.0), (20.0, 0.8), (25.0, 0.6), (30.0, 0.5)]}


def test_lines_that_are_not_progress_are_skipped_and_kept_for_the_log(tmp_path):
    garbage = ["Warning: a library speaks on stdout", "{not json", "[1, 2]", '{"no": "event"}',
               '{"event": "bogus", "step": 1}', '"event"']
    root = tmp_path / "jobs"
    folder = root / "job-1"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"id": "job-1", "kind": "pretrain", "argv": [], "device": "cpu",
                                                 "state": "done"}))
    (folder / "log.txt").write_text("stderr line")
    append(folder / "progress.jsonl", lines_of({"name": "start", "step": 0, "steps": 4}))
    append(folder / "progress.jsonl", ("\n".join(garbage) + "\n\n").encode() + b"\xff\xfe bytes\n")
    append(folder / "progress.jsonl", b'{"event": "step", "step": 2, "loss": NaN, "loss_restore": 0.25}\n')
    append(folder / "progress.jsonl", lines_of({"name": "step", "step": 4, "loss": 0.5}) + b'{"event": "do')

    reader = ProgressReader(folder / "progress.jsonl", history=True)
    assert [e["event"] for e in reader.update()] == ["start", "step", "step"]
    assert reader.history == {"loss": [(4.0, 0.5)], "loss_restore": [(2.0, 0.25)]}  # NaN is no point of a plot

    manager = JobManager(root)
    assert manager.poll("job-1").progress == reader.summary and manager.poll("job-1").fraction == 1.0
    log = manager.log("job-1")
    assert log.startswith("stderr line\n[stdout] ")
    assert log.splitlines()[1:] == [f"[stdout] {line}" for line in (*garbage, "\ufffd\ufffd bytes", '{"event": "do')]


def test_format_and_parse():
    line = format_event("validation", step=25, dice=0.8, per_label={"tumor": 0.8})
    assert "\n" not in line and line.startswith('{"event": "validation"')
    assert parse_line(line + "\n") == {"event": "validation", "step": 25, "dice": 0.8, "per_label": {"tumor": 0.8}}
    with pytest.raises(ValueError, match="unknown progress event 'stepp'"):
        format_event("stepp", step=1)
    assert parse_line("") is None and parse_line("   ") is None
    assert fraction({"step": 5, "steps": 0}) is None and fraction({"step": True, "steps": 2}) is None
    assert fraction({"step": 15, "steps": 10}) == 1.0 and fraction({}) is None
