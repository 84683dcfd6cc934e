"""Background jobs (``sarseg.core.jobs``): queue, progress, cancel with checkpoint, resume, interrupted runs,
against the real ``sarseg pretrain --preset tiny`` on the built-in phantoms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarseg.cli import main
from sarseg.core import jobs, procs
from sarseg.core.jobs import Job, JobError, JobManager, merge_args

HOST = procs.this_host()

ENV = {"OMP_NUM_THREADS": "1"}  # two cores here: one thread per job keeps runs short and steady


def pretrain(out: Path, steps: int) -> list[str]:
    return ["pretrain", "--preset", "tiny", "--out", str(out), "--steps", str(steps), "--workers", "0"]


@pytest.fixture
def manager(tmp_path: Path) -> JobManager:
    m = JobManager(tmp_path / "jobs", env=ENV)
    yield m
    for job in m.list():  # never leave a training process behind
        if job.state == "running":
            m.cancel(job.id, timeout=10)


def wait_for(m: JobManager, job_id: str, until, timeout: float = 60.0, use_list: bool = False) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = next(j for j in m.list() if j.id == job_id) if use_list else m.poll(job_id)
        if until(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job.state} with {job.progress} after {timeout} s:\n{m.log(job_id)}")
        time.sleep(0.1)


def finished(job: Job) -> bool:
    return job.finished


def test_jobs_run_one_at_a_time_and_report_progress(manager: JobManager, tmp_path: Path, capsys) -> None:
    first = manager.submit("pretrain", pretrain(tmp_path / "a", 10), "cpu")
    second = manager.submit("pretrain", pretrain(tmp_path / "b", 5), "cpu")
    assert first.state == "running" and first.pid and first.pgid == first.pid
    assert second.state == "queued" and second.pid is None
    first = wait_for(manager, first.id, finished)
    assert first.state == "done" and first.exit_code == 0, manager.log(first.id)
    assert first.progress["step"] == first.progress["steps"] == 10
    assert first.progress["done"] and "loss" in first.progress["losses"] and "eta_s" in first.progress
    assert first.progress["evaluation"]["cubes"] > 0 and first.fraction == 1.0
    assert (tmp_path / "a" / "model.json").is_file() and first.out == str(tmp_path / "a")
    folder = manager.root / first.id
    assert json.loads((folder / "job.json").read_text())["state"] == "done"
    assert all(json.loads(line)["event"] for line in (folder / "progress.jsonl").read_text().splitlines())

    second = wait_for(manager, second.id, finished)  # started by the first job's runner when it ended
    assert second.state == "done" and second.exit_code == 0, manager.log(second.id)
    assert second.progress["step"] == 5 and second.started >= first.ended

    assert main(["jobs", "--root", str(manager.root), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(j["id"], j["state"]) for j in listed] == [(first.id, "done"), (second.id, "done")]
    assert main(["jobs", "list", "--root", str(manager.root)]) == 0
    assert first.id in capsys.readouterr().out


def test_cancel_checkpoints_and_resume_finishes(manager: JobManager, tmp_path: Path) -> None:
    out = tmp_path / "long"
    job = manager.submit("pretrain", pretrain(out, 100000), "cpu")
    wait_for(manager, job.id, lambda j: j.progress.get("event") == "step" or j.finished)
    job = manager.cancel(job.id, timeout=60)
    assert job.state == "cancelled" and job.exit_code == 130, manager.log(job.id)
    assert not procs.group_alive(job.pgid, HOST)
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pgid, 0)
    assert (out / "checkpoint.pt").is_file()
    stopped = job.progress["checkpoint_step"]
    assert stopped >= 5 and "resume with --resume" in manager.log(job.id)

    resumed = manager.resume(job.id, ["--steps", str(stopped + 5)])
    assert resumed.state == "running" and resumed.id == job.id and resumed.folder == job.folder
    job = wait_for(manager, job.id, finished)
    assert job.state == "done" and job.exit_code == 0, manager.log(job.id)
    assert job.progress["started_step"] == stopped
    assert job.progress["step"] == job.progress["steps"] == stopped + 5
    assert job.argv.count("--steps") == 1 and "--resume" in job.argv and job.runs == 2
    assert [h["state"] for h in job.history] == ["cancelled"]


def test_killed_job_is_interrupted_and_resumable(manager: JobManager, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    job = manager.submit("pretrain", pretrain(out, 100000), "cpu")
    job = wait_for(manager, job.id, lambda j: j.progress.get("checkpoint_step") or j.finished)
    assert job.state == "running"
    os.killpg(job.pgid, signal.SIGKILL)  # Slicer, the runner and the machine all gone at once
    fresh = JobManager(manager.root, env=ENV)  # as after a restart: knows nothing of the processes
    job = wait_for(fresh, job.id, lambda j: j.state != "running", timeout=10, use_list=True)
    assert job.state == "interrupted" and job.exit_code is None and job.ended
    last = job.progress["step"]

    job = fresh.resume(job.id, ["--steps", str(last + 5)])
    job = wait_for(fresh, job.id, finished)
    assert job.state == "done" and job.exit_code == 0, fresh.log(job.id)
    assert job.progress["step"] == last + 5 and job.progress["started_step"] <= last


def test_a_command_whose_runner_died_is_stopped_and_then_interrupted(manager: JobManager, tmp_path: Path) -> None:
    job = manager.submit("pretrain", pretrain(tmp_path / "orphan", 100000), "cpu")
    job = wait_for(manager, job.id, lambda j: j.progress.get("checkpoint_step") or j.finished)
    assert job.state == "running" and job.child_pid
    os.kill(job.pid, signal.SIGKILL)  # only the runner: its command goes on, and nobody would record its end
    job = wait_for(manager, job.id, lambda j: j.state != "running", timeout=30)
    assert job.state == "interrupted" and job.orphaned
    assert not procs.alive(job.child_pid, job.child_start, HOST)
    assert "the runner of this job died" in manager.log(job.id)
    assert (tmp_path / "orphan" / "checkpoint.pt").is_file()
    job = manager.resume(job.id, ["--steps", str(job.progress["step"] + 3)])
    job = wait_for(manager, job.id, finished)
    assert job.state == "done" and job.orphaned is None, manager.log(job.id)


def _fake_launch(self: JobManager, job: Job) -> Job:
    """Mark a job running as this test process (alive and ours) without starting anything."""
    return self._update(job.id, state="running", pid=os.getpid(), pgid=None,
                        pid_start=procs.start_time(os.getpid(), self.host), started=jobs.now())


def test_one_cuda_job_and_one_cpu_job_at_a_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    cuda1, cuda2 = (m.submit("finetune", ["finetune", "--out", f"c{i}"], "cuda") for i in (1, 2))
    cpu1, cpu2 = (m.submit("segment", ["segment", "--out", f"s{i}"], "cpu") for i in (1, 2))
    assert [m.poll(j.id).state for j in (cuda1, cuda2, cpu1, cpu2)] == ["running", "queued", "running", "queued"]
    assert m.poll(cuda1.id).out == str(Path.cwd() / "c1")
    m.max_cpu_jobs = 2
    assert [j.id for j in m.start_next()] == [cpu2.id]
    m._update(cuda1.id, state="done", exit_code=0)
    assert [j.id for j in m.start_next()] == [cuda2.id]
    queued = m.submit("segment", ["segment"], "cpu")
    assert m.cancel(queued.id).state == "cancelled"
    with pytest.raises(JobError, match="running"):
        m.resume(cuda2.id)
    with pytest.raises(JobError, match="device"):
        m.submit("segment", ["segment"], "tpu")


def test_dead_or_reused_pid_is_interrupted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    gone = m.submit("pretrain", ["pretrain"], "cpu")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    m._update(gone.id, pid=int(done.stdout))  # that process has exited
    queued = m.submit("pretrain", ["pretrain"], "cpu")  # scheduling looks first: the slot is free
    assert m.poll(gone.id).state == "interrupted" and queued.state == "running"
    reused = m.submit("pretrain", ["pretrain"], "cpu")
    m._update(queued.id, state="done", exit_code=0)
    assert m.poll(reused.id).state == "queued" and m.start_next()[0].id == reused.id
    m._update(reused.id, pid_start=procs.start_time(os.getpid(), HOST) + 12345)  # our pid, started at another time
    states = {j.id: j.state for j in m.list()}
    if Path("/proc/self/stat").is_file():
        assert states[reused.id] == "interrupted"
    resumed = m.resume(gone.id, ["--steps", "7"])
    assert resumed.argv == ["pretrain", "--resume", "--steps", "7"] and resumed.state == "running"


def test_unknown_job_is_bad_input(tmp_path: Path, capsys) -> None:
    root = str(tmp_path / "jobs")
    for command in (["log", "nope"], ["cancel", "nope"], ["resume", "nope"], ["show", "nope"], ["log", "../x"]):
        assert main(["jobs", "--root", root, *command]) == 2
        assert "no such job" in capsys.readouterr().err
    with pytest.raises(JobError):
        JobManager(root).poll("nope")
    assert main(["jobs", "--root", root, "submit", "pretrain"]) == 2
    assert "no sarseg arguments" in capsys.readouterr().err


def test_cli_submit_forms_and_options(tmp_path: Path, monkeypatch, capsys) -> None:
    """``submit KIND -- OPTIONS`` (the README's form), ``submit KIND -- KIND OPTIONS``, submit's own options
    before or after KIND; the job's command line is checked before anything is queued."""
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    root = str(tmp_path / "jobs")

    def submit(*argv: str) -> Job:
        capsys.readouterr()
        assert main(["jobs", "--root", root, "submit", *argv]) == 0, capsys.readouterr().err
        return JobManager(root).poll(capsys.readouterr().out.strip())

    job = submit("--device", "cuda", "pretrain", "--", "pretrain", "--out", "m", "--steps", "3")
    assert (job.kind, job.device, job.argv) == ("pretrain", "cuda", ["pretrain", "--out", "m", "--steps", "3"])
    job = submit("finetune", "--", "--init", "scratch", "--dataset", "d.json", "--out", "f")
    assert (job.kind, job.device, job.argv) == ("finetune", "cpu", ["finetune", "--init", "scratch", "--dataset", "d.json", "--out", "f"])
    job = submit("segment", "--device", "cpu", "--", "--model", "m", "--input", "x", "--output", "y.nii.gz")
    assert (job.device, job.argv) == ("cpu", ["segment", "--model", "m", "--input", "x", "--output", "y.nii.gz"])
    for argv, problem in ((["finetune", "--", "--init", "scratch", "--ot", "f"], "unrecognized arguments: --ot"),
                          (["finetune", "--", "--init", "scratch"], "required: --out"),
                          (["evaluate", "--", "--pred", "a", "--ref", "b"], "KIND must be one of pretrain, finetune, segment")):
        capsys.readouterr()
        assert main(["jobs", "--root", root, "submit", *argv]) == 2
        err = capsys.readouterr().err
        assert problem in err and "sarseg: error: " in err, err
    assert len(JobManager(root).list()) == 3  # nothing queued for the bad ones


def test_documented_submit_form_runs_a_real_job(tmp_path: Path, capsys, monkeypatch) -> None:
    """The README's ``sarseg jobs submit finetune -- --init ...`` (the kind is not repeated) fine-tunes."""
    from sarseg import phantom

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cases = phantom.write_cases(tmp_path / "phantoms", 3)
    root, out = tmp_path / "jobs", tmp_path / "model"
    capsys.readouterr()
    assert main(["jobs", "--root", str(root), "submit", "finetune", "--", "--init", "scratch",
                 "--images", *[c["mr"] for c in cases], "--labels", *[c["label"] for c in cases], "--modalities", "mr",
                 "--out", str(out), "--preset", "tiny", "--steps", "3"]) == 0
    manager = JobManager(root)
    job = wait_for(manager, capsys.readouterr().out.strip(), finished, timeout=300)
    assert job.state == "done" and job.exit_code == 0, manager.log(job.id)
    assert job.argv[0] == "finetune" and job.progress["step"] == 3
    assert json.loads((out / "model.json").read_text())["kind"] == "segmentation"


def test_merge_args_replaces_options() -> None:
    base = ["pretrain", "--data", "a", "b", "--out", "m", "--steps", "100000", "--workers=0"]
    assert merge_args(base, ["--resume", "--steps", "50"]) == \
        ["pretrain", "--data", "a", "b", "--out", "m", "--workers=0", "--resume", "--steps", "50"]
    assert merge_args(base, ["--data", "c", "--workers", "2"]) == \
        ["pretrain", "--out", "m", "--steps", "100000", "--data", "c", "--workers", "2"]


# -- job records are input: nothing is signalled on a record's word alone (hostile-input issue, class 1)

def _forge(manager: JobManager, **fields) -> str:
    """A job folder whose job.json says what ``fields`` say, as an edited record would."""
    job_id = "20260101-000000-pretrain-dead"
    folder = manager.root / job_id
    folder.mkdir(parents=True)
    record = {"id": job_id, "kind": "pretrain", "argv": ["pretrain"], "device": "cpu", "state": "running"}
    (folder / "job.json").write_text(json.dumps({**record, **fields}))
    return job_id


@pytest.fixture
def no_signals(monkeypatch) -> list:
    """Fails the test on any attempt to signal a process group or process (and records it)."""
    sent: list = []

    def refuse(*args):
        sent.append(args)
        raise AssertionError(f"signal sent: {args}")

    monkeypatch.setattr(jobs.os, "killpg", refuse)
    monkeypatch.setattr(jobs.os, "kill", refuse)
    return sent


def test_cancel_never_signals_a_group_the_job_does_not_own(tmp_path: Path, no_signals, capsys) -> None:
    m = JobManager(tmp_path / "jobs")
    init_start = procs.start_time(1, HOST)
    own = os.getpgrp()
    cases = {
        "init without start time": {"pid": 1, "pgid": 1},
        "init with its real start time": {"pid": 1, "pgid": 1, "pid_start": init_start},
        "the caller's own group": {"pid": own, "pgid": own, "pid_start": procs.start_time(own, HOST)},
        "a live process, start time of another": {"pid": os.getpid(), "pgid": os.getpid(), "pid_start": 12345},
    }
    for name, fields in cases.items():
        root = tmp_path / name.replace(" ", "_").replace("'", "")
        m = JobManager(root)
        job_id = _forge(m, **fields)
        try:
            job = m.cancel(job_id, timeout=1)
        except JobError as exc:
            assert "stale" in str(exc) and "nothing was signalled" in str(exc), name
        else:
            assert job.state == "interrupted", name
        assert m.poll(job_id).state == "interrupted", name
    assert no_signals == []


def test_cli_cancel_of_a_forged_record_exits_2(tmp_path: Path, no_signals, capsys) -> None:
    from sarseg.cli import main
    root = tmp_path / "jobs"
    job_id = _forge(JobManager(root), pid=1, pgid=1, pid_start=procs.start_time(1, HOST))
    capsys.readouterr()
    assert main(["jobs", "--root", str(root), "cancel", job_id]) == 2
    err = capsys.readouterr().err
    assert job_id in err and "stale" in err and no_signals == []


@pytest.mark.parametrize("fields, problem", [
    ({"pid": "1"}, "'pid' has the wrong type"),
    ({"pgid": True}, "'pgid' has the wrong type"),
    ({"state": "exploded"}, "unknown state"),
    ({"argv": "pretrain --out /"}, "'argv' has the wrong type"),
    ({"argv": [1, 2]}, "argv must be a list of strings"),
    ({"device": "tpu"}, "unknown device"),
])
def test_edited_records_are_refused_by_name_and_do_not_break_the_listing(tmp_path: Path, fields, problem,
                                                                          capsys) -> None:
    m = JobManager(tmp_path / "jobs")
    job_id = _forge(m, **fields)
    with pytest.raises(JobError, match=problem):
        m.poll(job_id)
    assert m.list() == []  # one bad record does not break the listing of the others
    record = json.loads((m.root / job_id / "job.json").read_text())
    del record["kind"]
    (m.root / job_id / "job.json").write_text(json.dumps(record))
    with pytest.raises(JobError, match="has no 'kind'"):
        m.poll(job_id)


def test_resume_checks_its_options_before_queueing(tmp_path: Path, monkeypatch, capsys) -> None:
    from sarseg.cli import main

    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    job = m.submit("pretrain", pretrain(tmp_path / "out", 5), "cpu")
    m._update(job.id, state="interrupted")
    capsys.readouterr()
    assert main(["jobs", "--root", str(m.root), "resume", job.id, "--", "--stpes", "9"]) == 2
    assert "--stpes" in capsys.readouterr().err and m.poll(job.id).state == "interrupted"
    assert main(["jobs", "--root", str(m.root), "resume", job.id, "--", "--steps", "9"]) == 0
    assert m.poll(job.id).argv[-2:] == ["--steps", "9"] and "--resume" in m.poll(job.id).argv
