"""Errors the command line turns into exit codes (2: bad input, 130: cancelled)."""

from __future__ import annotations


class BadInput(ValueError):
    """Input the user can fix: a file, a value or a folder. The message names it and the problem."""

    def __init__(self, what: object, problem: str | None = None) -> None:
        self.what = str(what)
        self.problem = problem
        super().__init__(self.what if problem is None else f"{self.what}: {problem}")


class Cancelled(RuntimeError):
    """The job was asked to stop (SIGINT/SIGTERM); its last checkpoint is resumable."""
