"""Errors the command line turns into exit codes, and the codes themselves (the one place they are defined)."""

from __future__ import annotations

EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 2, 130  # success; BadInput (argparse's own code too); Cancelled


class BadInput(ValueError):
    """Input the user can fix: a file, a value or a folder. The message names it and the problem."""

    def __init__(self, what: object, problem: str | None = None) -> None:
        self.what = str(what)
        self.problem = problem
        super().__init__(self.what if problem is None else f"{self.what}: {problem}")


class Cancelled(RuntimeError):
    """The job was asked to stop (SIGINT/SIGTERM); its last checkpoint is resumable."""
