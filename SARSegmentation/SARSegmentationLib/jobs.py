"""Following background jobs from the GUI: status lines, ETA, loss curves, cancelling off the GUI thread.

The jobs themselves are ``sarseg`` commands run by ``sarseg.core.jobs.JobManager`` (through the
:class:`~SARSegmentationLib.protocols.JobRunner` protocol) in their own processes, so Slicer stays
responsive and a job goes on when Slicer closes. Only the standard library is imported at module level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .models import FolderModelStore, jobs_root
from .protocols import JobLike, JobRunner

FINISHED = ("done", "failed", "cancelled", "interrupted")


def slicer_python() -> str:
    """The interpreter for jobs: ``PythonSlicer`` inside Slicer (there ``sys.executable`` is the
    application itself), else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    here = Path(sys.executable)
    sibling = here.with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    if sibling.is_file():
        return str(sibling)
    return sys.executable


def default_runner(root: str | Path | None = None, python: str | None = None,
                   env: dict[str, str] | None = None) -> JobRunner:
    """``sarseg.core.jobs.JobManager`` on the shared jobs folder (or ``root``), running jobs with
    :func:`slicer_python`; the jobs get this process's folders in their environment, so the engine (and
    ``sarseg jobs`` in a terminal given the same variables) uses the folders Slicer was given."""
    from sarseg.core import paths
    from sarseg.core.jobs import JobManager  # the engine, imported on first use

    root = Path(root) if root is not None else jobs_root()
    return JobManager(root, python or slicer_python(), env={**paths.environment(root), **(env or {})})


def selftest_missing(need: Any = None) -> str:
    """Why a module's self-test cannot run its jobs here (empty when it can): SAR's Python packages are not
    all installed (``need``: :func:`.dependencies.missing`'s answer). The test then skips: it installs
    nothing itself (PyTorch alone is gigabytes); the user installs them from the module, which asks first."""
    from .dependencies import missing

    need = missing() if need is None else need
    if need.nothing:
        return ""
    if need.engine or need.python:
        return "SAR cannot run here (see the SAR modules' messages when they load or Apply); the test is skipped."
    return (f"SAR's Python packages are not all installed here (missing: {need.describe()}); this test downloads "
            "nothing. Install them from a SAR module (Apply asks before installing), then run the test again.")


@contextlib.contextmanager
def selftest_workspace(name: str, parent: str | Path | None = None) -> Iterator[tuple[Path, FolderModelStore, JobRunner]]:
    """For a module's self-test: a new folder (under ``parent``, by default Slicer's temporary folder), a
    models store and a job runner (two threads per job) of its own. While the test runs, SAR's folders
    (home, models, jobs, cache: ``sarseg.core.paths``) all lie in it, for this process and the jobs it
    starts, so nothing is written into the user's folders. Removed when the test passes; kept, and its
    path logged, when it fails."""
    from sarseg.core import paths

    if parent is None:
        import slicer

        parent = slicer.app.temporaryPath
    root = Path(parent) / f"{name}-{os.getpid()}-{int(time.time())}"
    root.mkdir(parents=True)
    folders = {paths.HOME: root / "home", paths.MODELS: root / "models", paths.JOBS: root / "jobs",
               paths.CACHE: root / "cache"}
    saved = {variable: os.environ.get(variable) for variable in folders}
    os.environ.update({variable: str(folder) for variable, folder in folders.items()})
    try:
        yield root, FolderModelStore(folders[paths.MODELS]), default_runner(folders[paths.JOBS],
                                                                            env={"OMP_NUM_THREADS": "2"})
    except BaseException:
        logging.warning(f"{name} failed; its files are kept in {root}")
        raise
    else:
        for _ in range(10):  # a job's runner may still take the jobs folder's lock once after its job ended
            shutil.rmtree(root, ignore_errors=True)
            time.sleep(0.5)
            if not root.exists():
                break
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def format_eta(seconds: Any) -> str:
    """``1 h 02 min``, ``4 min 05 s``, ``12 s``; empty when unknown."""
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@dataclass
class JobStatus:
    """One job as the GUI shows it."""

    id: str
    kind: str
    state: str
    device: str = "cpu"
    step: int | None = None
    steps: int | None = None
    fraction: float | None = None
    eta_s: float | None = None
    loss: float | None = None
    dice: float | None = None  # fine-tuning: the latest validation Dice, and the best so far
    best_dice: float | None = None
    out: str | None = None
    exit_code: int | None = None
    evaluation: dict = field(default_factory=dict)
    stage: str = ""  # a stage-reporting job (segment): what it does now, e.g. "segmenting (TTA pass 2 of 4)"
    waiting: str = ""  # a queued job: what it waits for, e.g. "waiting for job ID (pretrain) on cpu"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def percent(self) -> int:
        """0..100 for a progress bar (100 once done; 0 when unknown)."""
        if self.state == "done":
            return 100
        return int(round(100 * self.fraction)) if self.fraction is not None else 0

    @property
    def eta_text(self) -> str:
        return format_eta(self.eta_s) if self.state == "running" else ""

    @property
    def progress_text(self) -> str:
        return f"{self.step}/{self.steps}" if self.steps else ""

    @property
    def summary(self) -> str:
        """A one-line message: ``pretrain running: step 40/200, loss 0.1234, about 2 min 10 s left``,
        ``segment running: segmenting (TTA pass 2 of 4), 45 %, about 12 s left``,
        ``segment queued: waiting for job ID (segment) on cuda``."""
        parts = [f"{self.kind} {self.state}"]
        details = []
        if self.state == "queued" and self.waiting:
            details.append(self.waiting)
        if self.stage:
            if self.state == "running":
                details.append(self.stage + (f", {self.percent} %" if self.fraction is not None else ""))
        elif self.steps:
            details.append(f"step {self.step}/{self.steps}")
        if self.loss is not None:
            details.append(f"loss {self.loss:.4f}")
        if self.dice is not None:
            details.append(f"validation Dice {self.dice:.3f}"
                           + (f" (best {self.best_dice:.3f})" if self.best_dice is not None else ""))
        if self.eta_text:
            details.append(f"about {self.eta_text} left")
        if self.state in ("failed", "interrupted") and self.exit_code is not None:
            details.append(f"exit code {self.exit_code}")
        text = parts[0]
        return text + (": " + ", ".join(details) if details else "")


def status_of(job: JobLike) -> JobStatus:
    """A :class:`JobStatus` from a job (``sarseg.core.jobs.Job`` or anything with the same fields)."""
    from sarseg.core.progress import fraction, number  # the engine's torch-free layer (a runner made the job)

    progress = dict(getattr(job, "progress", None) or {})
    step, steps = number(progress.get("step")), number(progress.get("steps"))
    validation = progress.get("validation") if isinstance(progress.get("validation"), dict) else {}
    stage = progress.get("stage") if isinstance(progress.get("stage"), str) else ""
    tta_pass, passes = number(progress.get("pass")), number(progress.get("passes"))
    if stage == "segmenting" and tta_pass and passes and passes > 1:
        stage += f" (TTA pass {int(tta_pass)} of {int(passes)})"
    waiting = getattr(job, "waiting", None)
    return JobStatus(
        id=job.id, kind=job.kind, state=job.state, device=getattr(job, "device", "cpu"),
        step=int(step) if step is not None else None, steps=int(steps) if steps is not None else None,
        fraction=fraction(progress), eta_s=number(progress.get("eta_s")), loss=number(progress.get("loss")),
        dice=number(validation.get("dice")), best_dice=number(validation.get("best_dice")),
        out=getattr(job, "out", None), exit_code=getattr(job, "exit_code", None),
        evaluation=dict(progress.get("evaluation") or {}), stage=stage,
        waiting=waiting if isinstance(waiting, str) else "",
    )


def log_tail(text: str, lines: int = 15) -> str:
    """The last lines of a job log (for an error message)."""
    kept = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _start_thread(work: Callable[[], Any]) -> None:
    threading.Thread(target=work, name="sar-cancel", daemon=True).start()


class BackgroundCanceller:
    """Cancels jobs without blocking the GUI.

    ``JobManager.cancel`` sends SIGTERM, then waits (up to ``timeout`` s) for the job to save a
    checkpoint and exit before it would use SIGKILL. That wait runs in a worker thread, with a job
    runner of its own (``make_runner``) so nothing is shared with the GUI thread's runner; the jobs'
    files and lock file keep both consistent. ``start`` runs the work (a thread by default; tests
    may run it at once).
    """

    def __init__(self, make_runner: Callable[[], JobRunner], timeout: float = 60.0,
                 start: Callable[[Callable[[], Any]], None] = _start_thread) -> None:
        self.make_runner, self.timeout, self.start = make_runner, timeout, start
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}

    def cancel(self, job_id: str) -> bool:
        """Ask for ``job_id`` to stop; False when a cancel of it is still in progress."""
        with self._lock:
            if job_id in self._pending:
                return False
            self._pending.add(job_id)

        def work() -> None:
            try:
                self.make_runner().cancel(job_id, self.timeout)
            except Exception as exc:  # shown by the GUI on its next poll
                self.errors[job_id] = str(exc)
            finally:
                with self._lock:
                    self._pending.discard(job_id)

        self.start(work)
        return True

    def busy(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._pending


class SubprocessCanceller:
    """Cancels jobs from a small detached process (``python -m sarseg jobs --root ROOT cancel ID``).

    What the GUI uses: nothing waits in Slicer's process (not even a thread, which inside Slicer only
    runs while the main thread gives up Python's lock), and the stop completes even if Slicer closes
    (the helper runs in its own session, without a console window on Windows).
    The job's state (``cancelled``) shows on the next poll.
    """

    def __init__(self, root: str | Path, python: str | None = None, timeout: float = 60.0) -> None:
        self.root, self.python, self.timeout = Path(root), python or slicer_python(), timeout
        self._procs: dict[str, Any] = {}

    def command(self, job_id: str) -> list[str]:
        return [self.python, "-m", "sarseg", "jobs", "--root", str(self.root), "cancel", job_id,
                "--timeout", repr(float(self.timeout))]

    def cancel(self, job_id: str) -> bool:
        import subprocess

        from sarseg.core import procs
        from sarseg.core.jobs import engine_env  # the same engine for the helper (e.g. the extension's copy)

        if self.busy(job_id):
            return False
        self._procs[job_id] = subprocess.Popen(self.command(job_id), stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=engine_env(),
                                               close_fds=True, **procs.detached(procs.this_host()))
        return True

    def busy(self, job_id: str) -> bool:
        proc = self._procs.get(job_id)
        if proc is None:
            return False
        if proc.poll() is None:
            return True
        del self._procs[job_id]
        return False
