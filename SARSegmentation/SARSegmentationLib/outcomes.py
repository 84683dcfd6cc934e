"""What a module shows when a job ends (:class:`JobOutcome`), decided here so that it is tested without Qt.

Every end is shown on the module's status line; a failure (the job failed or was interrupted, its
status could not be read, its result could not be loaded) also opens an error dialog with the details,
so nothing that went wrong reads as "done". A cancelled job, which the user asked for, gets the status
line only. The widget only displays the outcome (:meth:`JobOutcome.show`). Only the standard library is
imported at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .jobs import JobStatus, log_tail

DETAIL_LINES = 40  # of the job's log in a dialog's details


@dataclass(frozen=True)
class JobOutcome:
    """A job's end as the module shows it.

    ``message``: the status line (one line). ``dialog``: "" (none), "warning" or "error";
    ``text`` and ``details``: the dialog's text and detailed text. ``node``: what was loaded (if anything).
    """

    message: str
    dialog: str = ""
    text: str = ""
    details: str = ""
    node: Any = None

    @property
    def failed(self) -> bool:
        return self.dialog == "error"

    def show(self, status_line: Callable[[str], None], error: Callable[..., Any],
             warning: Callable[..., Any]) -> None:
        """Show it: ``status_line(message)``, then ``error`` or ``warning`` (``slicer.util.errorDisplay``,
        ``slicer.util.warningDisplay``) as ``(text, detailedText=details)`` when there is a dialog."""
        status_line(self.message)
        if self.dialog:
            (error if self.failed else warning)(self.text, detailedText=self.details)


def sentence(text: str) -> str:
    """``text`` with a capital first letter (messages are built from lower-case parts)."""
    return text[:1].upper() + text[1:]


def unreadable(what: str, job_id: str, reason: str, folder: Any = None) -> JobOutcome:
    """The job's status could not be read (e.g. its folder was removed)."""
    where = f"\nJob folder: {folder}" if folder else ""
    return JobOutcome(f"Cannot read the {what} job {job_id}: {reason}", "error",
                      f"The {what} job {job_id} can no longer be read.",
                      f"{reason}{where}")


def log_details(log: Callable[[str], str], job_id: str) -> str:
    """The end of the job's log for a dialog's details (what went wrong is usually there)."""
    try:
        return log_tail(log(job_id), DETAIL_LINES) or f"Job {job_id} wrote no log."
    except Exception as exc:  # the log is only the details; the failure is shown anyway
        return f"The log of job {job_id} cannot be read: {exc}"


def stopped(what: str, status: JobStatus, log: Callable[[str], str]) -> JobOutcome:
    """A job that ended without being done: the status line only when cancelled (the user asked for
    it), an error dialog with the log's end when it failed or was interrupted."""
    if status.state == "cancelled":
        return JobOutcome(f"{sentence(what)} cancelled.")
    details = log_details(log, status.id)
    code = f" (exit code {status.exit_code})" if status.exit_code is not None else ""
    return JobOutcome(f"{sentence(what)} {status.state}{code}: {details.splitlines()[-1]}", "error",
                      f"The {what} {status.state}{code}.", details)
