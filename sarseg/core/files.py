"""Atomic file writes: every output (images, models, checkpoints) appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import BadInput

TEMP_MARK = ".sarseg-tmp-"  # in every temporary's name, so a stale one is known for what it is
_UMASK = os.umask(0o022)  # read once, at import: setting it later would race with other threads' files
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends without error the file gets the
    usual permissions (mkstemp makes it owner-only) and is renamed over ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace(source: str | os.PathLike, target: str | os.PathLike, system: str = sys.platform,
            rename: Callable[[str | os.PathLike, str | os.PathLike], None] = os.replace, seconds: float = 2.0) -> None:
    """``os.replace``; on Windows a reader that holds ``target`` open for a moment (another process
    reading a job record) makes the rename fail with PermissionError, so it is tried again meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            rename(source, target)
            return
        except PermissionError:
            if system != "win32" or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically, flushed to the disk before the rename: a full disk raises
    OSError here (writers that serialise on their own, as torch's, report it as something else)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove what :func:`atomic_path` left behind when its process was killed mid-write (SIGKILL, power
    loss); called when a job starts in ``folder``, where no other writer runs. Returns what was removed."""
    removed = []
    if Path(folder).is_dir():
        for entry in Path(folder).iterdir():
            if entry.name.startswith(".") and TEMP_MARK in entry.name and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def check_writable(path: Path, what: str = "output") -> None:
    """Refuse, before any work, a target whose folder cannot be written: the nearest folder that exists
    (missing ones are created) must be a writable folder."""
    parent = Path(path) if Path(path).is_dir() else Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(path, f"{what}: folder {parent} is not writable")


class NotWritten(BadInput):
    """A write that failed (a full or read-only disk, a quota): what was being written is named."""


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Turn the OSError of a failed write into :class:`NotWritten` naming ``target``."""
    try:
        yield
    except OSError as exc:
        raise NotWritten(target, f"cannot be written ({exc.strerror or exc})") from None
