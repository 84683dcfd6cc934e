"""The default folders (``sarseg.core.paths``): environment variables, the platforms' per-user folders, and
Slicer and a terminal agreeing on them (a job started from the modules shows in ``sarseg jobs list``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarseg import phantom
from sarseg.core import paths
from sarseg.core.jobs import JobManager

ROOT = Path(__file__).resolve().parents[1]
for _module_dir in (ROOT / "SARSegmentation", ROOT / "SARPretrain"):  # as Slicer puts them on sys.path
    if str(_module_dir) not in sys.path:
        sys.path.insert(0, str(_module_dir))

from SARSegmentationLib import default_runner, jobs_root, models_root, sar_home, work_root  # noqa: E402

VARIABLES = ("SARSEG_HOME", "SARSEG_MODELS", "SARSEG_JOBS", "SARSEG_CACHE", "XDG_DATA_HOME", "XDG_CACHE_HOME",
             "LOCALAPPDATA")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    """A clean user: HOME in tmp_path and none of the variables set."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_linux_defaults_follow_xdg(home: Path, monkeypatch) -> None:
    assert paths.home("linux") == home / ".local" / "share" / "sarseg"
    assert paths.models("linux") == home / ".local" / "share" / "sarseg" / "models"
    assert paths.jobs("linux") == home / ".local" / "share" / "sarseg" / "jobs"
    assert paths.cache("linux") == home / ".cache" / "sarseg"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    assert (paths.jobs("linux"), paths.cache("linux")) == (home / "data" / "sarseg" / "jobs", home / "cache" / "sarseg")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG specification: ignore relative values
    assert paths.home("linux") == home / ".local" / "share" / "sarseg"


def test_macos_and_windows_defaults(home: Path, monkeypatch) -> None:
    assert paths.home("darwin") == home / "Library" / "Application Support" / "sarseg"
    assert paths.cache("darwin") == home / "Library" / "Caches" / "sarseg"
    assert paths.models("darwin") == home / "Library" / "Application Support" / "sarseg" / "models"
    assert paths.home("win32") == home / "AppData" / "Local" / "sarseg"
    monkeypatch.setenv("LOCALAPPDATA", str(home / "Local"))
    assert paths.home("win32") == home / "Local" / "sarseg"
    assert paths.jobs("win32") == home / "Local" / "sarseg" / "jobs"
    assert paths.cache("win32") == home / "Local" / "sarseg" / "Cache"
    assert "Roaming" not in str(paths.home("win32"))  # large, machine-bound files stay out of the roaming profile


def test_environment_variables_override_each_folder(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("SARSEG_HOME", str(home / "h"))
    assert (paths.models(), paths.jobs()) == (home / "h" / "models", home / "h" / "jobs")
    monkeypatch.setenv("SARSEG_MODELS", "~/m")
    monkeypatch.setenv("SARSEG_JOBS", str(home / "j"))
    monkeypatch.setenv("SARSEG_CACHE", str(home / "c"))
    assert (paths.home(), paths.models(), paths.jobs(), paths.cache()) == (home / "h", home / "m", home / "j", home / "c")
    monkeypatch.chdir(home)
    monkeypatch.setenv("SARSEG_JOBS", "relative")  # made absolute: a job started elsewhere finds the same folder
    assert paths.jobs() == home / "relative"
    monkeypatch.setenv("SARSEG_JOBS", "")  # empty is unset
    assert paths.jobs() == home / "h" / "jobs"


def test_every_user_of_a_folder_asks_paths(home: Path, monkeypatch) -> None:
    """The jobs manager, the phantom cache and the Slicer modules' folders all come from one place."""
    monkeypatch.setenv("SARSEG_HOME", str(home / "h"))
    monkeypatch.setenv("SARSEG_CACHE", str(home / "c"))
    assert JobManager().root == paths.jobs() == jobs_root() == home / "h" / "jobs"
    assert models_root() == paths.models() and sar_home() == paths.home() and work_root() == home / "h" / "work"
    assert phantom.cache_folder() == home / "c" / "phantoms-v2"
    assert paths.environment() == {"SARSEG_HOME": str(home / "h"), "SARSEG_MODELS": str(home / "h" / "models"),
                                   "SARSEG_JOBS": str(home / "h" / "jobs"), "SARSEG_CACHE": str(home / "c")}


def terminal(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``sarseg ARGS`` in a fresh process that has only ``env`` (and this checkout) to go by."""
    full = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "sarseg", *args], env=full, capture_output=True, text=True, timeout=120)


def listed(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [job["id"] for job in json.loads(result.stdout)]


def finished(runner, job_id: str) -> int | None:
    """The job's exit code once its runner has recorded it."""
    deadline = time.monotonic() + 120
    while not (job := runner.poll(job_id)).finished and time.monotonic() < deadline:
        time.sleep(0.2)
    return job.exit_code


def test_a_job_started_from_slicer_is_listed_in_a_terminal(home: Path, monkeypatch) -> None:
    """With no settings at all both default to the same folder; with a folder given to Slicer, its jobs
    carry it, so a terminal with the same variable lists them too."""
    runner = default_runner(env={"OMP_NUM_THREADS": "1"})
    job = runner.submit("pretrain", ["pretrain", "--data", str(home / "missing"), "--out", str(home / "out")], "cpu")
    assert Path(job.folder).parent == home / ".local" / "share" / "sarseg" / "jobs"
    assert job.env["SARSEG_JOBS"] == str(paths.jobs()) and job.env["OMP_NUM_THREADS"] == "1"
    assert listed(terminal(["jobs", "list", "--json"], {"HOME": str(home)})) == [job.id]
    assert finished(runner, job.id) == 2  # it ran: the missing data is bad input

    monkeypatch.setenv("SARSEG_HOME", str(home / "elsewhere"))
    runner = default_runner()
    other = runner.submit("pretrain", ["pretrain", "--data", str(home / "missing"), "--out", str(home / "o2")], "cpu")
    assert Path(other.folder).parent == home / "elsewhere" / "jobs"
    assert listed(terminal(["jobs", "list", "--json"], {"HOME": str(home), "SARSEG_HOME": other.env["SARSEG_HOME"]})) == [other.id]
    assert finished(runner, other.id) == 2
