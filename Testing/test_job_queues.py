"""Inference never waits behind training (``sarseg.core.jobs``): segmentation has its own queue on each
device, so a segment job starts at once while a training job holds the device; a job that does wait
says what it waits for, and the module's status line shows it.

The long training job runs under an interpreter whose job runner is the real one but whose command
only sleeps: hours of pretraining, as the scheduler sees them, for no CPU at all."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from sarseg import phantom
from sarseg.cli import main
from sarseg.core.jobs import JobManager
from sarseg.io import write_image
from test_jobs import ENV, _fake_launch, finished, wait_for
from test_model import saved, segmentation_card

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib.jobs import status_of  # noqa: E402


def test_each_device_has_a_training_and_a_segmentation_queue(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    pretrain = m.submit("pretrain", ["pretrain", "--out", "p"], "cuda")
    finetune, finetune2 = (m.submit("finetune", ["finetune", "--out", f"f{i}"], "cuda") for i in (1, 2))
    seg_cuda = m.submit("segment", ["segment"], "cuda")
    seg_cpu, seg_cpu2 = (m.submit("segment", ["segment"], "cpu") for _ in range(2))
    train_cpu = m.submit("pretrain", ["pretrain", "--out", "c"], "cpu")
    states = {j.id: (j.state, j.waiting) for j in m.list()}
    assert states == {
        pretrain.id: ("running", None),
        finetune.id: ("queued", f"waiting for job {pretrain.id} (pretrain) on cuda"),
        finetune2.id: ("queued", f"waiting for job {pretrain.id} (pretrain) on cuda, 1 queued before it"),
        seg_cuda.id: ("running", None),  # beside the training on the same GPU
        seg_cpu.id: ("running", None),
        seg_cpu2.id: ("queued", f"waiting for job {seg_cpu.id} (segment) on cpu"),  # one segmentation at a time
        train_cpu.id: ("running", None),  # a segmentation holds no training slot either
    }
    assert m.poll(finetune2.id).waiting == states[finetune2.id][1] and m.poll(pretrain.id).waiting is None
    status = status_of(m.poll(finetune.id))
    assert status.summary == f"finetune queued: waiting for job {pretrain.id} (pretrain) on cuda"
    capsys.readouterr()
    assert main(["jobs", "--root", str(m.root), "show", seg_cpu2.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["waiting"] == states[seg_cpu2.id][1]
    assert "waiting" not in json.loads((m.root / seg_cpu2.id / "job.json").read_text())  # read, never stored

    m._update(seg_cpu.id, state="done", exit_code=0)
    assert [j.id for j in m.start_next()] == [seg_cpu2.id]
    m._update(pretrain.id, state="done", exit_code=0)
    assert [j.id for j in m.start_next()] == [finetune.id]
    assert m.poll(finetune2.id).waiting == f"waiting for job {finetune.id} (finetune) on cuda"


@pytest.mark.parametrize("finder", ["poll", "prune"])
def test_a_queued_job_starts_once_the_dead_job_holding_its_slot_is_found(tmp_path: Path, monkeypatch,
                                                                         finder: str) -> None:
    """Following a queued job (what the module's timer does), or pruning, finds the job ahead of it dead (its
    runner was killed; nothing recorded its end): that job is now interrupted and the queued one starts,
    not left queued for a slot nobody holds."""
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    ahead, waiting = (m.submit("segment", ["segment"], "cpu") for _ in range(2))
    assert m.poll(waiting.id).state == "queued"
    m._update(ahead.id, pid_start=1)  # its runner's pid now belongs to another process
    if finder == "prune":
        assert m.prune() == []
    for _ in range(2):
        polled = m.poll(waiting.id)
    assert m.poll(ahead.id).state == "interrupted"
    assert polled.state == "running" and polled.waiting is None


@pytest.fixture
def sleeper(tmp_path: Path) -> str:
    """An interpreter for jobs: the job runner (``-m sarseg jobs run-child``) runs for real, the job's own
    command sleeps until it is stopped."""
    script = tmp_path / "python-that-trains"
    script.write_text(f'#!/bin/sh\ncase "$*" in *"jobs run-child"*) exec "{sys.executable}" "$@";; esac\nexec sleep 600\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def manager(tmp_path: Path) -> JobManager:
    m = JobManager(tmp_path / "jobs", env=ENV)
    yield m
    for job in m.list():  # never leave a process behind
        if job.state == "running":
            m.cancel(job.id, timeout=10)


@pytest.mark.skipif(os.name == "nt", reason="the sleeping interpreter is a POSIX shell script")
def test_segmentation_starts_at_once_while_training_runs(manager: JobManager, sleeper: str, tmp_path: Path) -> None:
    trainer = JobManager(manager.root, python=sleeper, env=ENV)
    training = trainer.submit("pretrain", ["pretrain", "--preset", "tiny", "--out", str(tmp_path / "sar")], "cpu")
    assert training.state == "running"
    later = trainer.submit("finetune", ["finetune", "--init", "scratch", "--out", str(tmp_path / "ft")], "cpu")
    assert later.state == "queued"

    model = saved(tmp_path / "model", segmentation_card())[0]
    images, _ = phantom.make_case(2, (32, 64, 64))
    scan = write_image(tmp_path / "mr.nii.gz", images["mr"], phantom.geometry((32, 64, 64)))

    def segment(name: str) -> list[str]:
        return ["segment", "--model", str(model), "--input", str(scan), "--output", str(tmp_path / name), "--device", "cpu"]

    first = manager.submit("segment", segment("a.nii.gz"), "cpu")
    second = manager.submit("segment", segment("b.nii.gz"), "cpu")
    assert first.state == "running" and first.pid  # at once, beside the training
    assert (second.state, second.waiting) == ("queued", f"waiting for job {first.id} (segment) on cpu")
    for job in (first, second):  # the second one started by the first one's runner when it ended
        job = wait_for(manager, job.id, finished, timeout=180)
        assert job.state == "done" and job.exit_code == 0, manager.log(job.id)
        assert job.progress["step"] == job.progress["steps"] == 2 + 27 and job.fraction == 1.0
        assert Path(job.argv[job.argv.index("--output") + 1]).is_file()
        lines = (manager.root / job.id / "progress.jsonl").read_text().splitlines()
        fractions = [e["step"] / e["steps"] for e in map(json.loads, lines) if e["event"] == "step"]
        assert len(set(fractions)) > 5 and fractions == sorted(fractions)

    training, later = manager.poll(training.id), manager.poll(later.id)
    assert training.state == "running" and later.state == "queued"  # training still holds its slot
    assert status_of(later).summary == f"finetune queued: waiting for job {training.id} (pretrain) on cpu"
    assert manager.cancel(training.id, timeout=10).state == "cancelled"
    later = wait_for(manager, later.id, lambda j: j.state != "queued", timeout=30)
    assert later.state == "running" and later.waiting is None
