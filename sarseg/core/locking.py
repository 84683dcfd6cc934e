"""An exclusive lock on an open file, across processes, on every system: what serialises every
read-modify-write of the job records (``core/jobs.py``).

POSIX: ``fcntl.flock``. Windows: ``msvcrt.locking`` of the file's first byte, tried again until it is free
(its own blocking mode gives up after 10 s). Both locks belong to the open file, so the system releases
them when their holder closes it or dies: no stale lock is left behind, as a lock file made with
``O_EXCL`` would be by a killed process. Standard library only (``msvcrt`` can be passed in, for tests).
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any

_BUSY = {errno.EACCES, errno.EAGAIN, errno.EDEADLK, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _msvcrt(given: Any) -> Any:
    if given is not None:
        return given
    import msvcrt  # Windows only

    return msvcrt


def acquire(fd: int, system: str = sys.platform, msvcrt: Any = None, poll: float = 0.02) -> None:
    """Block until this process holds the lock on the open file ``fd``."""
    if system != "win32":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    m = _msvcrt(msvcrt)
    while True:
        os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks from the current position
        try:
            m.locking(fd, m.LK_NBLCK, 1)
            return
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
        time.sleep(poll)


def release(fd: int, system: str = sys.platform, msvcrt: Any = None) -> None:
    """Give the lock up (closing ``fd`` releases it too; Windows asks for an explicit unlock first)."""
    if system != "win32":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    m = _msvcrt(msvcrt)
    os.lseek(fd, 0, os.SEEK_SET)
    m.locking(fd, m.LK_UNLCK, 1)
