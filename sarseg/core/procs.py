"""The processes of background jobs on Linux, macOS and Windows: which still run, the whole tree a job
started, stopping it, and starting one without a console window.

A process is known by its pid *and* its start time, so a pid the system gave to another process is never
taken for the job's. Linux reads both from ``/proc`` (no dependency); elsewhere psutil answers (it is in
``sarseg/requirements.txt`` for every system without ``/proc``), and without it nothing is guessed: a
:class:`~sarseg.core.errors.BadInput` says to install it. In particular ``os.kill(pid, 0)`` is never used:
on Windows signal 0 is ``CTRL_C_EVENT``, which interrupts every process on the console.

Stopping: on POSIX a job runs in its own session, so SIGTERM to its process group reaches the command
(which checkpoints) and its workers; descendants that left the group get it one by one. Windows has no
signal to ask a process to stop, and ``PythonSlicer`` there is a launcher whose child is the real Python:
the whole tree is ended (psutil ``children(recursive=True)``), the command keeps its last periodic
checkpoint.

Every function takes a :class:`Host` (the system and what it offers), so the branches of the other
systems are tested on this one. Standard library only at import; psutil inside :func:`this_host`.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from .errors import BadInput

CREATE_NEW_PROCESS_GROUP = 0x00000200  # subprocess's constants exist only on Windows
CREATE_NO_WINDOW = 0x08000000

Member = tuple[int, "int | None"]  # (pid, start time) of a process known to belong to a job


@dataclass(frozen=True)
class Host:
    """What process handling depends on: ``system`` (``sys.platform``: linux, darwin, win32), whether
    ``/proc/PID/stat`` can be read, and the psutil module (None when it is not installed)."""

    system: str
    proc: bool = False
    psutil: Any = None

    @property
    def windows(self) -> bool:
        return self.system == "win32"


def this_host() -> Host:
    try:
        import psutil
    except ImportError:
        psutil = None
    return Host(sys.platform, Path("/proc/self/stat").is_file(), psutil)


def _psutil(host: Host) -> Any:
    if host.psutil is None:
        raise BadInput("psutil", "is needed to follow and stop jobs on a system without /proc; install it "
                                 "(python -m pip install psutil, or let the Slicer module install it)")
    return host.psutil


def require(host: Host) -> None:
    """Refuse (BadInput) to start a job that could not be followed or stopped here: no /proc, no psutil."""
    if not host.proc:
        _psutil(host)


class _Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    start: int  # clock ticks after boot


def _proc_stat(pid: int) -> _Stat | None:
    """``/proc/PID/stat``, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return _Stat(rest[0], int(rest[1]), int(rest[2]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def _all_stats() -> dict[int, _Stat]:
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


def _valid(pid: Any) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


def _ps_start(process: Any) -> int:
    return round(process.create_time() * 1000)  # milliseconds since the epoch: fits the records' integers


def start_time(pid: int, host: Host) -> int | None:
    """The process's start time (clock ticks after boot from /proc, else milliseconds since the epoch
    from psutil), or None when it is gone or cannot be asked."""
    if not _valid(pid):
        return None
    if host.proc:
        stat = _proc_stat(pid)
        return stat.start if stat else None
    if host.psutil is None:
        return None
    ps = host.psutil
    try:
        return _ps_start(ps.Process(pid))
    except (ps.NoSuchProcess, ps.AccessDenied):
        return None


def alive(pid: Any, start: int | None, host: Host) -> bool:
    """Whether ``pid`` runs and is still the process that started at ``start``. Zombies count as gone, and
    so does a pid without a recorded start time: nothing proves it is still ours."""
    if not _valid(pid):
        return False
    if host.proc:
        stat = _proc_stat(pid)
        return stat is not None and stat.state not in ("Z", "X") and start is not None and stat.start == start
    ps = _psutil(host)
    try:
        process = ps.Process(pid)
        return start is not None and _ps_start(process) == start and process.status() != ps.STATUS_ZOMBIE
    except (ps.NoSuchProcess, ps.AccessDenied):
        return False


def group_of(pid: int, host: Host) -> int | None:
    """The process group of ``pid`` (None on Windows, which has none, or when it is gone)."""
    if host.windows or not _valid(pid):
        return None
    if host.proc:
        stat = _proc_stat(pid)
        return stat.pgrp if stat else None
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def group_alive(pgid: Any, host: Host) -> bool:
    """Whether any (non-zombie) process is left in process group ``pgid``; always False on Windows,
    where a job is followed through its tree of processes instead."""
    if host.windows or not _valid(pgid):
        return False
    if host.proc:
        return any(s.pgrp == pgid and s.state not in ("Z", "X") for s in _all_stats().values())
    try:
        os.killpg(pgid, 0)  # POSIX: signal 0 only checks
    except OSError:
        return False
    return True


def tree(roots: Iterable[Member], host: Host) -> list[Member]:
    """The processes of ``roots`` that are still theirs, with every process they started (and those
    started, recursively), as (pid, start time): taken before stopping a job, so nothing it started
    is missed when its parent goes first."""
    live = [(pid, start) for pid, start in roots if alive(pid, start, host)]
    found = list(live)
    if host.proc:
        children: dict[int, list[tuple[int, int]]] = {}
        for pid, stat in _all_stats().items():
            children.setdefault(stat.ppid, []).append((pid, stat.start))
        todo = [pid for pid, _ in live]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.append(child)
                    todo.append(child[0])
        return found
    ps = _psutil(host)
    for pid, _ in live:
        try:
            descendants = ps.Process(pid).children(recursive=True)
        except (ps.NoSuchProcess, ps.AccessDenied):
            continue
        for child in descendants:
            try:
                member = (child.pid, _ps_start(child))
            except (ps.NoSuchProcess, ps.AccessDenied):
                continue
            if member not in found:
                found.append(member)
    return found


def _end(members: Sequence[Member], host: Host) -> None:
    """Windows: end each process still ours (TerminateProcess through psutil)."""
    ps = _psutil(host)
    for pid, start in members:
        try:
            process = ps.Process(pid)
            if _ps_start(process) == start:
                process.kill()
        except (ps.NoSuchProcess, ps.AccessDenied):
            continue


def _signal(members: Sequence[Member], sig: int, host: Host, skip_group: int | None = None) -> None:
    for pid, start in members:
        if (skip_group is None or group_of(pid, host) != skip_group) and alive(pid, start, host):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(pgid: int | None, members: Sequence[Member], host: Host) -> None:
    """Ask a job to stop: SIGTERM to its group ``pgid`` and to the ``members`` outside it (POSIX; the
    command checkpoints and exits); on Windows the members are ended at once."""
    if host.windows:
        _end(members, host)
        return
    if pgid is not None:
        _signal_group(pgid, signal.SIGTERM)
    _signal(members, signal.SIGTERM, host, skip_group=pgid)


def kill(pgid: int | None, members: Sequence[Member], host: Host) -> None:
    """End a job that did not stop when asked: SIGKILL to its group and every member still there."""
    if host.windows:
        _end(members, host)
        return
    sigkill = getattr(signal, "SIGKILL", signal.SIGTERM)
    if pgid is not None:
        _signal_group(pgid, sigkill)
    _signal(members, sigkill, host)


def stop_command(member: Member, host: Host) -> None:
    """Ask one command whose runner died to stop: SIGTERM to it alone on POSIX (it checkpoints); on
    Windows its tree (the launcher and the real Python) is ended."""
    if host.windows:
        _end(tree([member], host), host)
    else:
        _signal([member], signal.SIGTERM, host)


def detached(host: Host) -> dict[str, Any]:
    """``subprocess.Popen`` options for a process that outlives its parent and its terminal: a new session
    (POSIX); a new process group and no console window (Windows)."""
    if host.windows:
        return {"creationflags": CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def hidden(host: Host) -> dict[str, Any]:
    """``subprocess.Popen`` options for a child that stays in its parent's group: no console window."""
    return {"creationflags": CREATE_NO_WINDOW} if host.windows else {}
