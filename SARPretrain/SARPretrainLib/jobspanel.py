"""The jobs panel (:class:`JobsPanelLogic`): every SAR job with state, progress and ETA; cancel, resume, log.

Jobs are folders under the jobs root (``sarseg.core.jobs``), so the panel only lists them: it shows the same
jobs after Slicer restarts, including those that went on running meanwhile. Only the standard library
is imported at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from SARSegmentationLib import outcomes
from SARSegmentationLib.jobs import BackgroundCanceller, JobStatus, status_of
from SARSegmentationLib.models import MODEL_JSON
from SARSegmentationLib.protocols import JobRunner, LogFollower, SARLogicError

RESUMABLE_KINDS = ("pretrain", "finetune")
RESUMABLE_STATES = ("cancelled", "interrupted", "failed")
WHAT = {"pretrain": "pretraining", "finetune": "fine-tuning"}  # a job kind as the user reads it


@dataclass
class JobRow:
    """One line of the jobs table."""

    id: str
    kind: str
    state: str
    progress: str
    percent: int
    eta: str
    device: str
    out: str
    can_cancel: bool
    can_resume: bool


class JobsPanelLogic:
    """Lists and controls jobs through a :class:`~SARSegmentationLib.protocols.JobRunner`."""

    def __init__(self, runner: JobRunner, canceller: BackgroundCanceller | None = None) -> None:
        self.runner = runner
        self.canceller = canceller or BackgroundCanceller(lambda: runner, start=lambda work: work())
        self._losses: dict[str, Any] = {}  # job id -> sarseg.core.progress.ProgressReader
        self._watched: set[str] = set()  # jobs whose end is reported once (see ended)

    @staticmethod
    def row(job: Any) -> JobRow:
        status = status_of(job)
        return JobRow(
            id=status.id, kind=status.kind, state=status.state, progress=status.progress_text,
            percent=status.percent, eta=status.eta_text, device=status.device, out=status.out or "",
            can_cancel=status.state in ("queued", "running"),
            can_resume=status.kind in RESUMABLE_KINDS and status.state in RESUMABLE_STATES,
        )

    def rows(self) -> list[JobRow]:
        """All jobs, newest first."""
        return [self.row(job) for job in reversed(self.runner.list())]

    def status(self, job_id: str) -> JobStatus:
        return status_of(self.runner.poll(job_id))

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop (it checkpoints first); returns at once."""
        return self.canceller.cancel(job_id)

    def resume(self, job_id: str, extra_args: Sequence[str] = ()) -> JobStatus:
        """Run a stopped pretraining or fine-tuning again from its checkpoint, in the same folder."""
        status = self.status(job_id)
        if status.kind not in RESUMABLE_KINDS:
            raise SARLogicError(f"a {status.kind} job cannot be resumed; run it again instead")
        if status.state not in RESUMABLE_STATES and not extra_args:
            raise SARLogicError(f"job {job_id} is {status.state}; only a cancelled, interrupted or failed job "
                                "can be resumed (or a finished one with more steps)")
        return status_of(self.runner.resume(job_id, list(extra_args)))

    def log(self, job_id: str) -> str:
        return self.runner.log(job_id)

    def log_reader(self, job_id: str) -> LogFollower:
        return self.runner.log_reader(job_id)

    def log_path(self, job_id: str) -> str | None:
        folder = getattr(self.runner.poll(job_id), "folder", None)
        return f"{folder}/log.txt" if folder else None

    def loss_history(self, job_id: str) -> dict[str, list[tuple[float, float]]]:
        """The job's losses per step so far (read incrementally from its progress file)."""
        from sarseg.core.jobs import PROGRESS_FILE
        from sarseg.core.progress import ProgressReader

        reader = self._losses.get(job_id)
        if reader is None:
            folder = getattr(self.runner.poll(job_id), "folder", None)
            if not folder:
                return {}
            reader = self._losses[job_id] = ProgressReader(Path(folder) / PROGRESS_FILE, history=True)
        reader.update()
        return reader.history

    def watch(self, job_id: str) -> None:
        """Report this job's end once (:meth:`ended`): the jobs started or resumed in this session."""
        self._watched.add(job_id)

    def ended(self) -> list[outcomes.JobOutcome]:
        """What to show for each watched job that has ended since the last call (then no longer watched):
        done only when its model folder holds a model.json, an error dialog for every failure."""
        shown = []
        for job_id in sorted(self._watched):
            try:
                status = self.status(job_id)
            except Exception as exc:  # its folder was removed, or a file is unreadable
                self._watched.discard(job_id)
                shown.append(outcomes.unreadable("SAR", job_id, str(exc)))
                continue
            if not status.finished:
                continue
            self._watched.discard(job_id)
            what = WHAT.get(status.kind, status.kind)
            if status.state != "done":
                shown.append(outcomes.stopped(what, status, self.log))
            elif status.out and Path(status.out, MODEL_JSON).is_file():
                shown.append(outcomes.JobOutcome(f"{outcomes.sentence(what)} done: model {Path(status.out).name}."))
            else:
                text = f"The {what} job {job_id} finished but wrote no model."
                shown.append(outcomes.JobOutcome(text, "error", text, f"No {MODEL_JSON} in {status.out}.\n"
                                                 + outcomes.log_details(self.log, job_id)))
        return shown
