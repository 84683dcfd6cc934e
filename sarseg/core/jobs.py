"""Background jobs: ``sarseg`` commands run in their own process group so the GUI never blocks.

A job is a folder ``ROOT/ID`` (ROOT: ``$SARSEG_JOBS``, else ``jobs`` in the engine's home, see ``core/paths.py``) holding

* ``job.json``: id, kind, argv (the ``sarseg`` arguments), state (queued | running | done | failed |
  cancelled | interrupted), device (cpu | cuda), pid/pgid of the runner, times (ISO UTC), exit code,
  output folder, and the history of earlier runs;
* ``progress.jsonl``: the command's stdout, i.e. its ``--progress json`` lines;
* ``log.txt``: its stderr (and anything the runner itself has to say).

Robust to the parent (Slicer) closing: a job runs under a small runner, ``python -m sarseg jobs run-child
DIR``, started in a new session. The runner starts ``python -m sarseg ARGS --progress json`` in its own
process group with stdout/stderr going straight to the files above, waits for it, records the exit
code and final state in ``job.json`` (written atomically, under a lock on a file in ROOT, see
``core/locking.py``), then starts the next queued job. Readers (``list``/``poll``/``log_reader``) only
read files, so any process can follow a job. Only the last ``keep`` finished jobs are kept (``prune``,
run on every submit: ``$SARSEG_KEEP_JOBS``, else 50); a queued or running job is never removed.

Scheduling: two queues per device, *inference* (``segment`` jobs) and *training* (every other kind:
pretrain, finetune). Each runs at most the device's limit at a time, ``max_cuda_jobs`` (1) on cuda and
``max_cpu_jobs`` (1, since training uses every core) on cpu; the rest wait queued, first in first out
within their queue. So a segmentation never waits behind an hours-long training on its device (the two
share it meanwhile: the segmentation's few windows at a time, beside the training), only behind another
segmentation. A queued job's ``waiting`` (filled when read, like its progress) names what it waits for:
``waiting for job ID (KIND) on DEVICE``.

States: ``cancel`` sends SIGTERM to the job's process group (the command checkpoints and exits 130),
then SIGKILL to the group and every process the job started after a timeout -> cancelled (on Windows,
which has no such signal, the job's whole tree is ended at once; see ``core/procs.py``). A job found
running whose processes are gone (or whose pid now belongs to another process, by its start time)
without a recorded exit code -> interrupted (e.g. the machine died). A command stopped by a signal
nobody asked for through the manager -> interrupted too. Exit 0 -> done, other codes -> failed.

``resume`` re-runs a finished job *in the same folder* (one folder per model): its argv gains
``--resume`` plus any overrides (``--steps 500`` replaces an earlier ``--steps``), the previous run is
appended to ``history``, and progress lines keep being appended to ``progress.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import locking, procs
from .errors import EXIT_CANCELLED, EXIT_OK, BadInput
from .files import atomic_path
from .paths import jobs as jobs_folder
from .paths import limit
from .progress import LogReader, ProgressReader, fraction

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")
DEVICES = ("cpu", "cuda")
INFERENCE_KINDS = ("segment",)
JOB_FILE, PROGRESS_FILE, LOG_FILE, LOCK_FILE = "job.json", "progress.jsonl", "log.txt", ".lock"
KEEP, KEEP_DEFAULT = "SARSEG_KEEP_JOBS", 50  # finished jobs kept (prune)
_PRUNED = ".pruned-"  # a pruned job's folder while it is removed (not a job id: listings skip it)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JobError(BadInput):
    """A job request the user can fix: unknown id, resuming a running job, bad device (exit 2)."""


@dataclass
class Job:
    id: str
    kind: str
    argv: list[str]
    device: str
    state: str = "queued"
    out: str | None = None
    cwd: str | None = None
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    created: str | None = None
    queued: str | None = None
    started: str | None = None
    ended: str | None = None
    exit_code: int | None = None
    pid: int | None = None  # the runner (leader of the job's process group)
    pgid: int | None = None
    pid_start: int | None = None  # its start time (core/procs.py), to spot pid reuse
    child_pid: int | None = None  # the sarseg command itself
    child_start: int | None = None
    cancel_requested: bool = False
    orphaned: str | None = None  # when the runner was found dead and its command told to stop
    runs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # Not stored in job.json: filled from the files when read.
    folder: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    waiting: str | None = None  # a queued job: what it waits for

    _TRANSIENT = ("folder", "progress", "waiting")

    def to_dict(self, transient: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not transient:
            for key in self._TRANSIENT:
                data.pop(key)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "job.json") -> "Job":
        """A job from its record, every field checked: a record is a file anyone can edit."""
        if not isinstance(data, dict):
            raise JobError(where, "is not a JSON object")
        for key in ("id", "kind", "argv", "device"):
            if key not in data:
                raise JobError(where, f"has no {key!r}")
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and k not in cls._TRANSIENT}
        for key, value in values.items():
            expected = _FIELD_TYPES[key]
            if value is None and known[key].default is None:
                continue
            if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
                raise JobError(where, f"field {key!r} has the wrong type ({type(value).__name__})")
            high = 2**53 if key.endswith("_start") else 2**31  # start times: milliseconds since 1970 with psutil
            if expected is int and not (-256 if key == "exit_code" else 0) <= value < high:
                raise JobError(where, f"field {key!r} is out of range ({value})")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.get("env", {}).items()):
            raise JobError(where, "env must map names to strings")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1000 for v in values.get("limits", {}).values()):
            raise JobError(where, "limits must be positive job counts")
        if not all(isinstance(h, dict) for h in values.get("history", [])):
            raise JobError(where, "history must be a list of objects")
        if not _ID.match(values["id"]):
            raise JobError(where, f"id {values['id']!r} is not a job id")
        if values.get("state", "queued") not in STATES:
            raise JobError(where, f"unknown state {values.get('state')!r}")
        if values["device"] not in DEVICES:
            raise JobError(where, f"unknown device {values['device']!r}")
        if not all(isinstance(a, str) for a in values["argv"]):
            raise JobError(where, "argv must be a list of strings")
        return cls(**values)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def fraction(self) -> float | None:
        """Share of steps done (0..1) from the latest progress line, when known."""
        return fraction(self.progress)

    @property
    def queue(self) -> tuple[str, str]:
        """(queue, device) whose slots the job takes: ``inference`` for segmentation, else ``training``."""
        return ("inference" if self.kind in INFERENCE_KINDS else "training"), self.device


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "kind": str, "argv": list, "device": str, "state": str, "out": str, "cwd": str,
    "python": str, "env": dict, "limits": dict, "created": str, "queued": str, "started": str,
    "ended": str, "exit_code": int, "pid": int, "pgid": int, "pid_start": int, "child_pid": int,
    "child_start": int, "cancel_requested": bool, "orphaned": str, "runs": int, "history": list,
}


# -- processes (how each system answers: core/procs.py) ------------------------------------------

def _roots(job: "Job") -> list[procs.Member]:
    """The runner and the command the job record names, as (pid, start time)."""
    return [(job.pid, job.pid_start), (job.child_pid, job.child_start)]


def owned_group(job: "Job", host: procs.Host) -> int | None:
    """The job's process group, only while its runner (or the command it started) is still the process
    the record names (same pid, same start time) and leads or belongs to it, the group > 1 and not the
    caller's own. Otherwise None. (On Windows the group is the runner's console process group.)

    A job record is a file anyone with access to the jobs folder can edit: ``"pgid": 1`` would make
    ``killpg`` signal every process of the user, so nothing is signalled without this check."""
    pgid = job.pgid
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1 or job.pid != pgid:
        return None
    if not host.windows and hasattr(os, "getpgrp") and pgid == os.getpgrp():
        return None
    for pid, start in _roots(job):
        if procs.alive(pid, start, host) and (host.windows or procs.group_of(pid, host) == pgid):
            return pgid
    return None


def _atomic_write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1))


def _option_value(argv: Sequence[str], name: str) -> str | None:
    value = None
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(name + "="):
            value = token[len(name) + 1:]
    return value


def merge_args(argv: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``argv`` with the options in ``extra`` replacing earlier ones of the same name.

    An option's values are the tokens after it up to the next ``--option`` (so ``--data a b`` works).
    """
    extra = list(extra)
    names = {t.split("=", 1)[0] for t in extra if t.startswith("--") and t != "--"}
    out: list[str] = []
    skipping = False
    for i, token in enumerate(argv):
        if token.startswith("--"):
            skipping = i > 0 and token.split("=", 1)[0] in names
            if skipping and "=" in token:
                skipping = False  # --name=value carries its own value
                continue
        if not skipping:
            out.append(token)
    return out + extra


# -- the manager --------------------------------------------------------------------------------

class JobManager:
    """Submits, schedules, follows, cancels and resumes ``sarseg`` jobs under ``root``.

    ``python``: interpreter that runs ``-m sarseg`` (PythonSlicer inside Slicer; default this one).
    ``env``: extra environment variables for the jobs this manager submits (stored with each job).
    ``keep``: finished jobs kept by :meth:`prune` (default ``$SARSEG_KEEP_JOBS``, else 50).
    ``host``: the system the processes run on (:func:`sarseg.core.procs.this_host`; tests pass another).
    """

    def __init__(self, root: str | os.PathLike | None = None, python: str | None = None,
                 max_cpu_jobs: int = 1, max_cuda_jobs: int = 1, env: dict[str, str] | None = None,
                 keep: int | None = None, host: procs.Host | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else jobs_folder()
        self.python = python or sys.executable
        self.max_cpu_jobs, self.max_cuda_jobs = max_cpu_jobs, max_cuda_jobs
        self.env = dict(env or {})
        self.keep = keep
        self.host = host or procs.this_host()
        self._procs: dict[str, subprocess.Popen] = {}  # runners started here, reaped on refresh
        self._progress: dict[str, ProgressReader] = {}  # each job's progress file, read on from where it was
        self._rlock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None
        self._freed = False  # a refresh found a dead running job (its slot is free again)

    # locking: one lock file per root serialises every read-modify-write of job.json across processes
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._rlock:
            if self._depth == 0:
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    locking.acquire(fd, self.host.system)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    try:
                        locking.release(self._lock_fd, self.host.system)
                    finally:
                        os.close(self._lock_fd)
                        self._lock_fd = None

    def folder(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not _ID.match(job_id) or not (self.root / job_id / JOB_FILE).is_file():
            raise JobError(job_id, f"no such job under {self.root}")
        return self.root / job_id

    def _read(self, job_id: str) -> Job:
        path = self.folder(job_id) / JOB_FILE
        for attempt in range(5):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                break
            except (OSError, ValueError):
                if attempt == 4:
                    raise JobError(job_id, f"unreadable {path}") from None
                time.sleep(0.05)
        job = Job.from_dict(data, str(path))
        if job.id != job_id:
            raise JobError(str(path), f"records id {job.id!r}, not its folder's name {job_id!r}")
        job.folder = str(path.parent)
        return job

    def _write(self, job: Job) -> None:
        _atomic_write_json(self.root / job.id / JOB_FILE, job.to_dict(transient=False))

    def _update(self, job_id: str, **changes: Any) -> Job:
        with self._locked():
            job = self._read(job_id)
            for key, value in changes.items():
                setattr(job, key, value)
            self._write(job)
            return job

    # -- submitting and scheduling
    def submit(self, kind: str, args: Sequence[str], device: str = "cpu") -> Job:
        """Queue ``sarseg ARGS`` (``--progress json`` is added) as a new job, then start what may start."""
        if device not in DEVICES:
            raise JobError("device", f"unknown device {device!r}; choose cpu or cuda")
        if not re.match(r"^[A-Za-z0-9_-]+$", kind or ""):
            raise JobError("kind", f"{kind!r} is not a simple name like pretrain, finetune or segment")
        procs.require(self.host)
        keep = self._keep()  # read (and checked) before anything is written: every submit prunes
        args = [str(a) for a in args]
        cwd = os.getcwd()
        out = _option_value(args, "--out")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            while True:
                job_id = f"{stamp}-{kind}-{secrets.token_hex(2)}"
                try:
                    (self.root / job_id).mkdir()
                    break
                except FileExistsError:
                    continue
            created = now()
            job = Job(id=job_id, kind=kind, argv=args, device=device, state="queued",
                      out=str(Path(cwd, out).resolve()) if out else None, cwd=cwd, python=self.python,
                      env=self.env, limits={"cpu": self.max_cpu_jobs, "cuda": self.max_cuda_jobs},
                      created=created, queued=created)
            self._write(job)
            self.start_next()
            self.prune(keep)
        return self.poll(job_id)

    def start_next(self) -> list[Job]:
        """Start queued jobs while their device has a free slot; returns the jobs started."""
        started = []
        with self._locked():
            jobs = self._refresh_all()
            limits = {"cpu": self.max_cpu_jobs, "cuda": self.max_cuda_jobs}
            running = Counter(j.queue for j in jobs if j.state == "running")
            for job in sorted((j for j in jobs if j.state == "queued"), key=_queue_order):
                if running[job.queue] < limits.get(job.device, 1):
                    started.append(self._launch(job))
                    running[job.queue] += 1
        return started

    def _launch(self, job: Job) -> Job:
        folder = self.root / job.id
        env = _child_env(job)
        try:
            with open(folder / LOG_FILE, "ab") as log:
                proc = subprocess.Popen(
                    [job.python or self.python, "-m", "sarseg", "jobs", "run-child", str(folder)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=job.cwd if job.cwd and os.path.isdir(job.cwd) else None,
                    close_fds=True, **procs.detached(self.host))
        except OSError as exc:
            with open(folder / LOG_FILE, "a") as log:
                print(f"sarseg jobs: could not start {job.python}: {exc}", file=log)
            return self._update(job.id, state="failed", started=now(), ended=now(), exit_code=None)
        self._procs[job.id] = proc
        return self._update(job.id, state="running", pid=proc.pid, pgid=proc.pid,
                            pid_start=procs.start_time(proc.pid, self.host),
                            child_pid=None, child_start=None, orphaned=None, started=now(), ended=None, exit_code=None,
                            cancel_requested=False, runs=job.runs + 1)

    # -- following
    def _reap(self) -> None:
        for job_id, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[job_id]

    def _runner_alive(self, job: Job) -> bool:
        return any(procs.alive(pid, start, self.host) for pid, start in _roots(job))

    def _refresh(self, job: Job) -> Job:
        """Mark a running job whose processes are gone (and recorded no exit code) interrupted. A command
        whose runner died is stopped (it checkpoints): nobody would record how it ended."""
        if job.state != "running" or procs.alive(job.pid, job.pid_start, self.host):
            return job
        if procs.alive(job.child_pid, job.child_start, self.host):
            self._stop_orphan(job)
            return job
        with self._locked():
            job = self._read(job.id)
            if job.state == "running" and not self._runner_alive(job):
                job.state, job.ended = "interrupted", now()
                self._write(job)
                self._freed = True
        return job

    def _stop_orphan(self, job: Job) -> None:
        if job.orphaned is None and owned_group(job, self.host) is not None:
            with open(self.root / job.id / LOG_FILE, "a", encoding="utf-8") as log:
                print(f"sarseg jobs: the runner of this job died; stopping its command (pid {job.child_pid}), "
                      "which checkpoints: resume the job to go on", file=log)
            procs.stop_command((job.child_pid, job.child_start), self.host)
            self._update(job.id, orphaned=now())

    def _refresh_all(self) -> list[Job]:
        self._reap()
        jobs = []
        if not self.root.is_dir():
            return jobs
        for entry in sorted(self.root.iterdir()):
            if (entry / JOB_FILE).is_file() and _ID.match(entry.name):
                try:
                    jobs.append(self._refresh(self._read(entry.name)))
                except JobError:
                    continue
        return jobs

    def list(self) -> list[Job]:
        """All jobs, oldest first, with states refreshed and their latest progress.

        When a running job is found dead (now interrupted), queued jobs that may now run are started."""
        self._freed = False
        jobs = self._refresh_all()
        if self._freed:
            self.start_next()
            jobs = self._refresh_all()
        _note_waiting(jobs)
        for job in jobs:
            self._read_progress(job)
        return sorted(jobs, key=lambda j: (j.created or "", j.id))

    def get(self, job_id: str) -> Job:
        return self.poll(job_id)

    def poll(self, job_id: str) -> Job:
        """The job with its state refreshed and ``progress`` from the lines written since last time:
        event (latest), step, steps, eta_s, cubes_per_s, losses, checkpoint_step, evaluation, ..."""
        self._reap()
        self._freed = False
        job = self._refresh(self._read(job_id))
        others = [j for j in self._refresh_all() if j.id != job_id] if job.state == "queued" else []
        if self._freed:  # a dead job held a slot (this one's, maybe): what may start now starts
            self.start_next()
            job = self._read(job_id)
            others = [j for j in self._refresh_all() if j.id != job_id] if job.state == "queued" else []
        if job.state == "queued":
            _note_waiting([job, *others])
        self._read_progress(job)
        return job

    def _read_progress(self, job: Job) -> None:
        reader = self._progress.get(job.id)
        if reader is None:
            reader = self._progress[job.id] = ProgressReader(self.root / job.id / PROGRESS_FILE)
        reader.update()
        job.progress = dict(reader.summary)

    def log_reader(self, job_id: str) -> LogReader:
        """A reader of the job's log that returns only what was written since its previous read."""
        folder = self.folder(job_id)
        return LogReader(folder / LOG_FILE, folder / PROGRESS_FILE)

    def log(self, job_id: str) -> str:
        """The job's whole log: the command's stderr, then the stdout lines that were not progress JSON."""
        return self.log_reader(job_id).read(final=True)[0]

    def prune(self, keep: int | None = None) -> list[str]:
        """Remove the folders of the finished jobs beyond the ``keep`` (default: ``self.keep``, else
        ``$SARSEG_KEEP_JOBS``, else 50) that ended last; a queued or running job is never removed.
        Returns the ids removed. A folder that cannot be moved aside now (open elsewhere, on Windows)
        stays for the next time."""
        keep = keep if keep is not None else self._keep()
        removed = []
        self._freed = False
        with self._locked():
            finished = sorted((j for j in self._refresh_all() if j.finished),
                              key=lambda j: (j.ended or j.created or "", j.id), reverse=True)
            for job in finished[max(keep, 0):]:
                try:
                    os.replace(self.root / job.id, self.root / f"{_PRUNED}{job.id}")
                except OSError:
                    continue
                self._progress.pop(job.id, None)
                removed.append(job.id)
            for entry in self.root.glob(f"{_PRUNED}*"):  # this time's, and any an earlier prune left
                shutil.rmtree(entry, ignore_errors=True)
            if self._freed:  # a dead job held a slot
                self.start_next()
        return removed

    def _keep(self) -> int:
        return self.keep if self.keep is not None else limit(KEEP, KEEP_DEFAULT)

    # -- stopping and resuming
    def cancel(self, job_id: str, timeout: float = 60.0) -> Job:
        """Stop a job: queued -> cancelled at once; running -> SIGTERM to its process group (the command
        checkpoints and exits 130), SIGKILL to the group and every process the job started when still
        there after ``timeout`` s (Windows: the whole tree is ended at once). Finished: unchanged."""
        with self._locked():
            job = self._refresh(self._read(job_id))
            if job.state == "queued":
                self._update(job_id, state="cancelled", ended=now())
                return self.poll(job_id)
            if job.state != "running":
                return self.poll(job_id)
            pgid = owned_group(job, self.host)
            if pgid is None:
                job.state, job.ended = "interrupted", now()
                self._write(job)
                raise JobError(job_id, f"is stale: its record names process group {job.pgid!r}, which is not "
                                       "this job's runner; nothing was signalled and the job is now interrupted")
            job = self._update(job_id, cancel_requested=True)
            members = procs.tree(_roots(job), self.host)  # taken first: a child outlives its parent's end
        procs.terminate(pgid, members, self.host)
        if not self._wait_gone(job, members, timeout):
            group = owned_group(job, self.host)  # None once the runner and its command are gone
            if group is not None:
                members += [m for m in procs.tree(_roots(job), self.host) if m not in members]
            procs.kill(group, members, self.host)
            self._wait_gone(job, members, 10.0)
        with self._locked():
            job = self._read(job_id)
            if job.state == "running":  # the runner could not record it (killed, or died before)
                job.state, job.ended = "cancelled", now()
                self._write(job)
        self.start_next()
        return self.poll(job_id)

    def _wait_gone(self, job: Job, members: Sequence[procs.Member], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if not procs.group_alive(job.pgid, self.host) and not any(procs.alive(*m, self.host) for m in members):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def resume(self, job_id: str, extra_args: Sequence[str] = ()) -> Job:
        """Queue a finished job again in the same folder with ``--resume`` (and ``extra_args``, which
        replace same-named options, e.g. ``["--steps", "500"]``); the last run goes to ``history``."""
        with self._locked():
            job = self._refresh(self._read(job_id))
            if not job.finished:
                raise JobError(job_id, f"is {job.state}; only a finished job can be resumed")
            procs.require(self.host)
            job.history.append({k: getattr(job, k) for k in ("argv", "state", "started", "ended", "exit_code")})
            extra = [str(a) for a in extra_args]
            if "--resume" not in job.argv and "--resume" not in extra:
                extra.insert(0, "--resume")
            job.argv = merge_args(job.argv, extra)
            job.state, job.queued = "queued", now()
            job.started = job.ended = job.exit_code = job.pid = job.pgid = job.pid_start = None
            job.child_pid = job.child_start = job.orphaned = None
            job.cancel_requested = False
            self._write(job)
            self.start_next()
        return self.poll(job_id)


def _queue_order(job: Job) -> tuple[str, str]:
    """First in first out: by when the job was queued (a resumed job queues anew), then by id."""
    return job.queued or "", job.id


def _note_waiting(jobs: list[Job]) -> None:
    """Fill in each queued job's ``waiting``: the running jobs holding its queue's slots on its device,
    and how many queued jobs come before it there."""
    for job in jobs:
        if job.state != "queued":
            continue
        holding = [j for j in jobs if j.state == "running" and j.queue == job.queue]
        ahead = sum(1 for j in jobs if j.state == "queued" and j.queue == job.queue and _queue_order(j) < _queue_order(job))
        names = ", ".join(f"job {j.id} ({j.kind})" for j in holding) or "a free slot"
        job.waiting = f"waiting for {names} on {job.device}" + (f", {ahead} queued before it" if ahead else "")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment (plus ``extra``) in which another interpreter imports this same sarseg
    (e.g. the copy in Slicer's extension folder), without pushing a whole site-packages ahead of the
    standard library."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    here = str(Path(__file__).resolve().parents[2])  # the folder holding sarseg/ (this file: sarseg/core/jobs.py)
    if Path(here).name not in ("site-packages", "dist-packages"):
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if here not in paths:
            env["PYTHONPATH"] = os.pathsep.join(paths + [here])
    return env


def _child_env(job: Job) -> dict[str, str]:
    return {**engine_env(job.env), "PYTHONUNBUFFERED": "1"}


# -- the runner (python -m sarseg jobs run-child DIR) ----------------------------------------------------

def run_child(folder: str | os.PathLike) -> int:
    """Run one job's command with its output going to the job's files; record how it ended; start
    the next queued job. Signals reach the command through the process group; here they are noted."""
    folder = Path(folder).resolve()
    manager = JobManager(folder.parent)
    job = manager._read(folder.name)
    manager.python = job.python or sys.executable
    manager.max_cpu_jobs = int(job.limits.get("cpu", 1))
    manager.max_cuda_jobs = int(job.limits.get("cuda", 1))
    signalled: list[int] = []

    def note(signum: int, _frame: Any) -> None:
        signalled.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, note)
    argv = merge_args(job.argv, ["--progress", "json"])
    code: int | None = None
    if not signalled:
        with open(folder / PROGRESS_FILE, "ab") as out, open(folder / LOG_FILE, "ab") as err:
            try:
                proc = subprocess.Popen([manager.python, "-m", "sarseg", *argv], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, env=_child_env(job),
                                        cwd=job.cwd if job.cwd and os.path.isdir(job.cwd) else None,
                                        **procs.hidden(manager.host))
            except OSError as exc:
                err.write(f"sarseg jobs: could not start {manager.python}: {exc}\n".encode())
                proc = None
        if proc is not None:
            child = (proc.pid, procs.start_time(proc.pid, manager.host))
            if signalled:  # a stop that came while starting it may have missed the command
                procs.stop_command(child, manager.host)
            manager._update(job.id, child_pid=child[0], child_start=child[1])
            while True:
                try:
                    code = proc.wait()
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
    with manager._locked():
        job = manager._read(job.id)
        if job.cancel_requested:
            state = "cancelled"
        elif code == EXIT_OK:
            state = "done"
        elif code is None or code == EXIT_CANCELLED or code < 0:
            state = "interrupted"  # stopped by a signal nobody asked for through the manager
        else:
            state = "failed"
        job.state, job.exit_code, job.ended = state, code, now()
        manager._write(job)
    if job.cancel_requested or not signalled:  # not when the system is shutting down
        manager.start_next()
    return EXIT_OK
