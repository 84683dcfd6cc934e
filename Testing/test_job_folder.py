"""One SAR folder the user sees and can change, finished jobs pruned, logs read incrementally: the job
manager (``sarseg.core.jobs``), the log reader (``sarseg.core.progress``), the module's settings
(``SARSegmentationLib.models``) and its log view (``SARSegmentationLib.widgethelpers.JobView``), with
small plain-Python stand-ins for Qt's settings and log box (no Qt, no Slicer)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sarseg.cli import main
from sarseg.core import procs
from sarseg.core.errors import BadInput
from sarseg.core.jobs import KEEP, Job, JobManager, now
from sarseg.core.progress import LogReader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib import default_runner, jobs_root, models_root, sar_home, work_root  # noqa: E402
from SARSegmentationLib.jobs import JobStatus  # noqa: E402
from SARSegmentationLib.models import (DATA_FOLDER_SETTING, KEEP_JOBS_SETTING, apply_settings,  # noqa: E402
                                       folders_text, kept_jobs, set_data_folder, set_kept_jobs)
from SARSegmentationLib.protocols import SARLogicError  # noqa: E402
from SARSegmentationLib.widgethelpers import JobView  # noqa: E402

VARIABLES = ("SARSEG_HOME", "SARSEG_MODELS", "SARSEG_JOBS", KEEP)


@pytest.fixture()
def clean_env(monkeypatch) -> None:
    """None of the folder variables set, and whatever a test sets in os.environ undone afterwards."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "placeholder")  # remembered as unset: restored so after the test
        monkeypatch.delenv(name)


def _fake_launch(self: JobManager, job: Job) -> Job:
    """Mark a job running as this test process (alive and ours) without starting anything."""
    return self._update(job.id, state="running", pid=os.getpid(), pid_start=procs.start_time(os.getpid(), self.host),
                        started=now())


# ------------------------------------------------------------------------------------- pruning

def test_only_the_last_finished_jobs_are_kept_and_never_a_running_or_queued_one(tmp_path: Path, monkeypatch,
                                                                                 clean_env, capsys) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs", keep=100)
    ids = [m.submit("segment", ["segment", "--out", f"o{i}"]).id for i in range(6)]
    assert [m.poll(i).state for i in ids] == ["running"] + ["queued"] * 5
    for order, job_id in enumerate(ids[1:4]):  # three finished, in this order
        m._update(job_id, state="done", exit_code=0, ended=f"2026-01-01T00:00:0{order}+00:00")
    (m.root / ids[1] / "log.txt").write_text("the oldest")

    assert m.prune(keep=1) == [ids[2], ids[1]]  # the two that ended first go
    assert [j.id for j in m.list()] == [ids[0], ids[3], ids[4], ids[5]]
    assert not (m.root / ids[1]).exists() and not list(m.root.glob(".pruned-*"))
    assert [j.state for j in m.list()] == ["running", "done", "queued", "queued"]
    assert m.prune(keep=0) == [ids[3]] and {j.state for j in m.list()} == {"running", "queued"}

    leftover = m.root / ".pruned-20260101-000000-segment-dead"  # what an interrupted prune left
    leftover.mkdir()
    (leftover / "log.txt").write_text("x")
    assert m.prune() == [] and not leftover.exists()

    for order, job_id in enumerate(ids[4:]):  # ended in this order (now() could give both the same millisecond)
        m._update(job_id, state="cancelled", ended=f"2026-01-02T00:00:0{order}+00:00")
    monkeypatch.setenv(KEEP, "1")  # every submit prunes, keeping $SARSEG_KEEP_JOBS finished jobs
    newest = JobManager(m.root).submit("segment", ["segment", "--out", "o7"])
    assert [j.id for j in m.list()] == [ids[0], ids[5], newest.id]

    m._update(ids[0], state="failed", exit_code=1, ended=now())
    capsys.readouterr()
    assert main(["jobs", "--root", str(m.root), "prune", "--keep", "1"]) == 0
    assert capsys.readouterr().out == f"{ids[5]}: removed\n"
    assert main(["jobs", "--root", str(m.root), "prune", "--keep", "-1"]) == 2
    assert "--keep: must be 0 or more" in capsys.readouterr().err
    monkeypatch.setenv(KEEP, "many")
    assert main(["jobs", "--root", str(m.root), "prune"]) == 2
    assert "SARSEG_KEEP_JOBS: must be a positive whole number" in capsys.readouterr().err
    assert [j.id for j in m.list()] == [ids[0], newest.id]


def test_a_bad_keep_variable_refuses_the_submit_before_a_job_is_queued(tmp_path: Path, monkeypatch, clean_env,
                                                                      capsys) -> None:
    """Every submit prunes; a bad ``$SARSEG_KEEP_JOBS`` is bad input (exit 2, nothing written), not an error
    raised after the job was queued and started (a module would then delete the inputs of a running job)."""
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    monkeypatch.setenv(KEEP, "many")
    m = JobManager(tmp_path / "jobs")
    with pytest.raises(BadInput, match="SARSEG_KEEP_JOBS"):
        m.submit("segment", ["segment", "--out", "o"])
    assert m.list() == []
    assert main(["jobs", "--root", str(m.root), "submit", "segment", "--", "--model", "m", "--input", "a.nii.gz",
                 "--output", str(tmp_path / "o.nii.gz")]) == 2
    assert "SARSEG_KEEP_JOBS: must be a positive whole number" in capsys.readouterr().err
    assert m.list() == []


# ------------------------------------------------------------------------------------- logs

def append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)


def test_the_log_reader_returns_only_what_was_written_since(tmp_path: Path) -> None:
    log, out = tmp_path / "log.txt", tmp_path / "progress.jsonl"
    reader = LogReader(log, out)
    assert reader.read() == ("", False)  # nothing written yet
    append(log, "loading\nstep 1 of")
    append(out, '{"event": "start", "step": 0, "steps": 4}\nA library speaks on stdout\n{"event": "st')
    assert reader.read() == ("loading\n[stdout] A library speaks on stdout\n", False)
    assert reader.read() == ("", False)  # nothing new: nothing read again
    append(log, " 4\n")
    append(out, 'ep", "step": 1}\n')  # the rest of a progress line: not log
    assert reader.read() == ("step 1 of 4\n", False)
    append(log, "Traceback (most recent call last)")  # a job that died mid-line
    assert reader.read() == ("", False) and reader.read(final=True) == ("Traceback (most recent call last)", False)

    log.unlink()
    log.write_text("a new log\n")  # replaced (another file): everything again, and said so
    assert reader.read() == ("a new log\n[stdout] A library speaks on stdout\n", True)
    log.unlink()
    assert reader.read() == ("[stdout] A library speaks on stdout\n", True)


def test_manager_log_and_its_reader_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    job = m.submit("segment", ["segment", "--out", "x"])
    folder = m.root / job.id
    append(folder / "log.txt", "one\n")
    follower = m.log_reader(job.id)
    assert follower.read() == ("one\n", False)
    append(folder / "log.txt", "two\n")
    append(folder / "progress.jsonl", "warning\n")
    assert follower.read() == ("two\n[stdout] warning\n", False)
    assert m.log(job.id) == "one\ntwo\n[stdout] warning\n"  # the whole log: a new reader's first read


class LogBox:
    """A QPlainTextEdit: the text, and each call made on it."""

    def __init__(self) -> None:
        self.text, self.calls = "", []

    def setPlainText(self, text: str) -> None:
        self.text = text
        self.calls.append(("set", text))

    def appendPlainText(self, text: str) -> None:  # Qt: a new paragraph
        self.text = f"{self.text}\n{text}" if self.text else text
        self.calls.append(("append", text))


class Bar(SimpleNamespace):
    def setRange(self, *_):
        pass

    def setValue(self, *_):
        pass

    def show(self):
        pass

    def hide(self):
        pass


def test_the_log_view_appends_only_new_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    m = JobManager(tmp_path / "jobs")
    first, second = (m.submit("segment", ["segment", "--out", name]).id for name in ("a", "b"))
    box = LogBox()
    view = JobView(SimpleNamespace(text=""), Bar(), box, log_lines=3)
    state = {"state": "running"}

    def status(job_id: str) -> JobStatus:
        return JobStatus(job_id, "segment", state["state"])

    opened = []

    def log_reader(job_id: str):
        opened.append(job_id)
        return m.log_reader(job_id)

    append(m.root / first / "log.txt", "1\n2\n3\n4\n")
    view.read(first, status, log_reader)
    assert box.calls == [("set", "2\n3\n4")]  # the end of what was there
    view.read(first, status, log_reader)
    assert len(box.calls) == 1  # nothing new: nothing done
    append(m.root / first / "log.txt", "5\n6")
    view.read(first, status, log_reader)
    assert box.calls[-1] == ("append", "5") and box.text == "2\n3\n4\n5"  # the half line waits
    state["state"] = "done"
    view.read(first, status, log_reader)
    assert box.calls[-1] == ("append", "6") and opened == [first]  # one reader for the whole time

    append(m.root / second / "log.txt", "other job\n")
    view.read(second, status, log_reader)
    assert box.calls[-1] == ("set", "other job") and opened == [first, second]
    os.remove(m.root / second / "log.txt")
    append(m.root / second / "log.txt", "replaced\n")
    view.read(second, status, log_reader)
    assert box.calls[-1] == ("set", "replaced")


# ------------------------------------------------------------------------------------- the SAR folder

class Settings:
    """Slicer's qt.QSettings: value(key) (None when unset), setValue(key, value)."""

    def __init__(self, **values) -> None:
        self.values = dict(values)

    def value(self, key: str):
        return self.values.get(key)

    def setValue(self, key: str, value) -> None:
        self.values[key] = value


def test_the_sar_folder_the_user_chose_holds_models_jobs_and_exports(tmp_path: Path, clean_env) -> None:
    default = sar_home()
    apply_settings(Settings())  # nothing chosen: the engine's default (not Slicer's settings folder)
    assert sar_home() == default and kept_jobs() == 50
    settings = Settings()
    chosen = set_data_folder(settings, tmp_path / "my SAR data")
    assert chosen.is_dir() and settings.values[DATA_FOLDER_SETTING] == str(chosen)
    assert (sar_home(), models_root(), jobs_root(), work_root()) == (
        chosen, chosen / "models", chosen / "jobs", chosen / "work")
    assert folders_text().splitlines() == [f"models and the training cases added to them: {chosen / 'models'}",
                                           f"jobs: {chosen / 'jobs'}", f"inputs exported for jobs: {chosen / 'work'}"]
    runner = default_runner()  # what both modules use: its jobs, and the jobs' own folders, are in it
    assert runner.root == chosen / "jobs" and runner.env["SARSEG_HOME"] == str(chosen)

    set_kept_jobs(settings, 7)
    assert settings.values[KEEP_JOBS_SETTING] == 7 and kept_jobs() == 7 and runner.prune() == []
    for bad in (0, -3, True, "7"):
        with pytest.raises(SARLogicError, match="finished jobs kept"):
            set_kept_jobs(settings, bad)

    os.environ.pop("SARSEG_HOME")  # as in a new Slicer session: the stored choice is used again
    os.environ.pop(KEEP)
    apply_settings(Settings(**settings.values))
    assert sar_home() == chosen and kept_jobs() == 7

    (tmp_path / "a file").write_text("x")
    for bad in ("", tmp_path / "a file" / "sub"):
        with pytest.raises(SARLogicError):
            set_data_folder(settings, bad)
    assert settings.values[DATA_FOLDER_SETTING] == str(chosen) and sar_home() == chosen  # unchanged
    os.environ[KEEP] = "many"  # the module still opens; starting a job says what is wrong
    assert kept_jobs() == 50


def test_jobs_of_the_chosen_folder_are_listed_by_the_command_line(tmp_path: Path, monkeypatch, clean_env,
                                                                   capsys) -> None:
    """``sarseg jobs list`` with the same ``$SARSEG_HOME`` shows what the module started there."""
    monkeypatch.setattr(JobManager, "_launch", _fake_launch)
    chosen = set_data_folder(Settings(), tmp_path / "sar")
    job = default_runner().submit("segment", ["segment", "--out", "x"])
    capsys.readouterr()
    assert main(["jobs", "list", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job.id]
    assert (chosen / "jobs" / job.id / "job.json").is_file()
