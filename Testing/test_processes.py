"""Processes and locks of background jobs on every system (``sarseg.core.procs``, ``sarseg.core.locking``).

Linux is tested for real: real processes (dead, zombie, reused pids; a job whose command, started by a
launcher as ``PythonSlicer`` does on Windows, leaves grandchildren in and out of its process group) and
real concurrent writers. The psutil path of systems without /proc (macOS) runs here for real too, on a
host that ignores /proc, when psutil is installed. Windows branches run with the platform passed in: a
host saying ``win32`` with the real psutil (its ``kill`` ends processes here as TerminateProcess does
there), or with a small recording stand-in for psutil given as a parameter, and ``msvcrt`` as a stand-in
built on real byte-range locks; nothing is put into ``sys.modules``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sarseg.core import files, locking, procs
from sarseg.core.errors import BadInput
from sarseg.core.jobs import JobManager

try:
    import psutil
except ImportError:  # not needed on Linux (requirements.txt: only where there is no /proc)
    psutil = None

HOST = procs.this_host()
NEEDS_PSUTIL = pytest.mark.skipif(psutil is None, reason="psutil is not installed (Linux does not need it)")
POSIX_HOSTS = [pytest.param(HOST, id="proc"),
               pytest.param(procs.Host(sys.platform, False, psutil), id="psutil-no-proc", marks=NEEDS_PSUTIL)]

pytestmark = pytest.mark.skipif(not HOST.proc, reason="the real-process tests run on Linux")


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ------------------------------------------------------------------------------------- liveness

@pytest.mark.parametrize("host", POSIX_HOSTS)
def test_liveness_of_a_live_a_dead_a_zombie_and_a_reused_pid(host: procs.Host) -> None:
    me, start = os.getpid(), procs.start_time(os.getpid(), host)
    assert start is not None and procs.alive(me, start, host)
    assert not procs.alive(me, start + 1, host)  # our pid, but another process's start: reused
    assert not procs.alive(me, None, host)  # nothing proves it is still ours
    for bad in (0, -1, None, True, "1"):
        assert not procs.alive(bad, start, host) and procs.start_time(bad, host) is None

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    started = procs.start_time(done.pid, host)
    assert started is not None
    assert wait_until(lambda: procs._proc_stat(done.pid) is None or procs._proc_stat(done.pid).state == "Z")
    assert not procs.alive(done.pid, started, host)  # a zombie (exited, not yet reaped) is gone
    done.wait()
    assert not procs.alive(done.pid, started, host) and procs.start_time(done.pid, host) is None


# ------------------------------------------------------------------------------------- a job-like tree

COMMAND = r'''
import json, os, signal, subprocess, sys, time
out, ignore = sys.argv[sys.argv.index("--out") + 1], "--ignore-term" in sys.argv
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleeper = [sys.executable, "-c", "import signal, sys, time\n"
           + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore else "") + "time.sleep(600)"]
inside = subprocess.Popen(sleeper)  # stays in the job's process group
escaped = subprocess.Popen(sleeper, start_new_session=True)  # left it
tmp = out + ".tmp"
with open(tmp, "w") as handle:
    json.dump({"launcher": os.getppid(), "command": os.getpid(), "inside": inside.pid, "escaped": escaped.pid}, handle)
os.replace(tmp, out)
time.sleep(600)
'''


def launcher(tmp_path: Path) -> Path:
    """An interpreter like ``PythonSlicer`` on Windows: a launcher whose child is the real Python. The job
    runner (``-m sarseg jobs ...``) is run as it is; a job's command is the tree :data:`COMMAND` makes."""
    path = tmp_path / "python-launcher"
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys
        REAL = {sys.executable!r}
        if sys.argv[1:4] == ["-m", "sarseg", "jobs"]:
            import os
            os.execv(REAL, [REAL] + sys.argv[1:])
        sys.exit(subprocess.call([REAL, "-c", {COMMAND!r}] + sys.argv[1:]))
        """))
    path.chmod(0o755)
    return path


def read_tree(pid_file: Path, host: procs.Host) -> dict[str, procs.Member]:
    assert wait_until(pid_file.is_file), "the job's command did not start"
    pids = json.loads(pid_file.read_text())
    return {name: (pid, procs.start_time(pid, host)) for name, pid in pids.items()}


def start_tree(tmp_path: Path, host: procs.Host, ignore_term: bool) -> tuple[subprocess.Popen, dict[str, procs.Member]]:
    """The launcher running a command (as a job's runner would start it), in a session of its own."""
    pid_file = tmp_path / "pids.json"
    argv = [str(launcher(tmp_path)), "-m", "sarseg", "segment", "--out", str(pid_file)]
    proc = subprocess.Popen(argv + (["--ignore-term"] if ignore_term else []), **procs.detached(HOST))
    return proc, read_tree(pid_file, host)


@pytest.mark.parametrize("host", POSIX_HOSTS)
def test_terminate_then_kill_ends_a_tree_on_posix(tmp_path: Path, host: procs.Host) -> None:
    proc, tree = start_tree(tmp_path, host, ignore_term=True)
    root = tree["launcher"]
    assert root[0] == proc.pid and all(m[1] is not None for m in tree.values())
    members = procs.tree([root], host)
    assert set(tree.values()) <= set(members)  # children and grandchildren, also the one that left the group
    assert procs.group_of(tree["inside"][0], host) == proc.pid != procs.group_of(tree["escaped"][0], host)

    procs.terminate(proc.pid, members, host)
    proc.wait(10)  # the launcher honours SIGTERM; the command and its children ignore it
    assert procs.alive(*tree["command"], host) and procs.alive(*tree["escaped"], host)
    assert procs.group_alive(proc.pid, host)

    procs.kill(proc.pid, members, host)
    assert wait_until(lambda: not any(procs.alive(*m, host) for m in tree.values()))
    assert wait_until(lambda: not procs.group_alive(proc.pid, host))


@NEEDS_PSUTIL
def test_the_windows_branch_ends_the_whole_tree_at_once(tmp_path: Path) -> None:
    """What cancel does on Windows, where ending the launcher alone leaves the real Python running: every
    process of the tree is ended through psutil (``TerminateProcess`` there; here psutil's ``kill`` is
    SIGKILL), at once, also the one that left the group; that nothing else is signalled there is checked
    with a stand-in below."""
    windows = procs.Host("win32", False, psutil)
    proc, tree = start_tree(tmp_path, windows, ignore_term=True)
    members = procs.tree([tree["launcher"]], windows)
    assert set(tree.values()) <= set(members)
    procs.terminate(proc.pid, members, windows)
    proc.wait(10)
    assert wait_until(lambda: not any(procs.alive(*m, windows) for m in tree.values()), 5)
    assert not procs.group_alive(proc.pid, windows)


@pytest.mark.parametrize("ignore_term", [False, True], ids=["checkpointing command", "command ignoring SIGTERM"])
def test_cancel_ends_the_whole_tree_of_a_job(tmp_path: Path, ignore_term: bool) -> None:
    """A real job whose command runs under a launcher and leaves grandchildren inside and outside its
    process group: cancel leaves nothing running, at once when SIGTERM is honoured, else after the timeout."""
    manager = JobManager(tmp_path / "jobs", python=str(launcher(tmp_path)))
    pid_file = tmp_path / "pids.json"
    job = manager.submit("segment", ["segment", "--out", str(pid_file)] + (["--ignore-term"] if ignore_term else []))
    try:
        tree = read_tree(pid_file, HOST)
        assert manager.poll(job.id).state == "running"
        began = time.monotonic()
        job = manager.cancel(job.id, timeout=3)
        took = time.monotonic() - began
    finally:
        if manager.poll(job.id).state == "running":
            manager.cancel(job.id, timeout=1)
    assert job.state == "cancelled"
    assert wait_until(lambda: not any(procs.alive(*m, HOST) for m in tree.values()), 10)
    assert not procs.group_alive(job.pgid, HOST)
    assert (took >= 3) if ignore_term else (took < 3), took


# ------------------------------------------------------------------------------------- Windows, by parameter

class FakeProcess:
    def __init__(self, table: "FakePsutil", pid: int) -> None:
        if pid not in table.processes:
            raise table.NoSuchProcess(pid)
        self.table, self.pid = table, pid

    def create_time(self) -> float:
        return self.table.processes[self.pid]["created"]

    def status(self) -> str:
        return self.table.processes[self.pid].get("status", "running")

    def children(self, recursive: bool = False) -> list["FakeProcess"]:
        assert recursive, "the whole tree is asked for"
        found, todo = [], [self.pid]
        while todo:
            parent = todo.pop()
            for pid, info in self.table.processes.items():
                if info.get("parent") == parent:
                    found.append(FakeProcess(self.table, pid))
                    todo.append(pid)
        return found

    def kill(self) -> None:
        self.table.killed.append(self.pid)
        del self.table.processes[self.pid]


class FakePsutil:
    """The few psutil calls the Windows branch makes, over a table of processes (given as a parameter)."""

    STATUS_ZOMBIE = "zombie"

    class NoSuchProcess(Exception):
        pass

    class AccessDenied(Exception):
        pass

    def __init__(self, processes: dict[int, dict]) -> None:
        self.processes, self.killed = processes, []

    def Process(self, pid: int) -> FakeProcess:  # noqa: N802 - psutil's name
        return FakeProcess(self, pid)


def test_windows_liveness_tree_and_stop_never_signal(monkeypatch) -> None:
    def refuse(*args):
        raise AssertionError(f"a signal on Windows: {args} (signal 0 is CTRL_C_EVENT there)")

    monkeypatch.setattr(os, "kill", refuse)
    monkeypatch.setattr(os, "killpg", refuse)
    table = FakePsutil({100: {"created": 1000.0}, 101: {"created": 1000.5, "parent": 100},
                        102: {"created": 1001.0, "parent": 101}, 103: {"created": 1002.0, "parent": 102},
                        200: {"created": 5.0}, 300: {"created": 7.0, "status": "zombie"}})
    windows = procs.Host("win32", False, table)
    assert procs.start_time(100, windows) == 1_000_000 and procs.alive(100, 1_000_000, windows)
    assert not procs.alive(100, 999_999, windows) and not procs.alive(100, None, windows)  # reused, or unproven
    assert not procs.alive(300, 7000, windows) and not procs.alive(999, 1, windows)  # zombie, gone
    assert procs.group_of(100, windows) is None and not procs.group_alive(100, windows)

    members = procs.tree([(100, 1_000_000), (200, 1)], windows)  # 200: another process now
    assert members == [(100, 1_000_000), (101, 1_000_500), (102, 1_001_000), (103, 1_002_000)]
    table.processes[102]["created"] = 9.0  # pid 102 ended and was reused meanwhile: not ours to end
    procs.terminate(100, members, windows)
    assert table.killed == [100, 101, 103] and 102 in table.processes and 200 in table.processes

    procs.stop_command((102, 9000), windows)  # a command whose runner died: its tree ends too
    assert table.killed == [100, 101, 103, 102]


def test_without_proc_and_psutil_nothing_is_guessed() -> None:
    for system in ("win32", "darwin"):
        bare = procs.Host(system, False, None)
        with pytest.raises(BadInput, match="psutil.*install"):
            procs.require(bare)
        with pytest.raises(BadInput, match="psutil"):
            procs.alive(os.getpid(), 1, bare)
        assert procs.start_time(os.getpid(), bare) is None
    procs.require(HOST)  # Linux: /proc is enough


def test_popen_options_start_jobs_detached_without_console_windows() -> None:
    windows, linux, mac = procs.Host("win32"), procs.Host("linux", True), procs.Host("darwin", False, object())
    assert procs.detached(windows) == {"creationflags": 0x08000000 | 0x00000200}  # CREATE_NO_WINDOW | NEW_PROCESS_GROUP
    assert procs.hidden(windows) == {"creationflags": 0x08000000}
    for posix in (linux, mac):
        assert procs.detached(posix) == {"start_new_session": True} and procs.hidden(posix) == {}
    if sys.platform == "win32":  # pragma: no cover - the constants are subprocess's own there
        assert procs.CREATE_NO_WINDOW == subprocess.CREATE_NO_WINDOW


# ------------------------------------------------------------------------------------- locks

COUNTER = r'''
import sys
sys.path.insert(0, {root!r})
from sarseg.core.jobs import JobManager
manager = JobManager({jobs!r})
for _ in range({n}):
    with manager._locked():
        job = manager._read("counter")
        job.runs += 1
        manager._write(job)
'''

FAKE_MSVCRT = r'''
import fcntl, os, sys
sys.path.insert(0, {root!r})
from sarseg.core import locking


class Msvcrt:
    """msvcrt.locking's contract (a byte range from the current position, OSError when taken), on real
    POSIX byte-range locks, so processes really contend."""
    LK_NBLCK, LK_UNLCK = 2, 0

    def locking(self, fd, mode, nbytes):
        if mode == self.LK_UNLCK:
            fcntl.lockf(fd, fcntl.LOCK_UN, nbytes, 0, os.SEEK_CUR)
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, nbytes, 0, os.SEEK_CUR)
        except OSError as exc:
            raise OSError(13, "Permission denied") from exc  # what msvcrt raises when the range is taken


m = Msvcrt()
fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)
for _ in range({n}):
    locking.acquire(fd, "win32", m, poll=0.001)
    value = int(open({counter!r}).read())
    open({counter!r}, "w").write(str(value + 1))
    locking.release(fd, "win32", m)
'''

ROOT = str(Path(__file__).resolve().parents[1])


def run_together(scripts: list[str]) -> None:
    children = [subprocess.Popen([sys.executable, "-c", script]) for script in scripts]
    assert [child.wait(120) for child in children] == [0] * len(children)


def test_concurrent_read_modify_writes_of_a_job_record_lose_nothing(tmp_path: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    (manager.root / "counter").mkdir(parents=True)
    (manager.root / "counter" / "job.json").write_text(json.dumps({"id": "counter", "kind": "pretrain",
                                                                    "argv": [], "device": "cpu", "runs": 0}))
    run_together([COUNTER.format(root=ROOT, jobs=str(manager.root), n=40)] * 4)
    assert manager._read("counter").runs == 160


def test_the_windows_lock_serialises_processes(tmp_path: Path) -> None:
    counter, lock = tmp_path / "counter", tmp_path / ".lock"
    counter.write_text("0")
    run_together([FAKE_MSVCRT.format(root=ROOT, lock=str(lock), counter=str(counter), n=40)] * 4)
    assert counter.read_text() == "160"


def test_a_dead_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r})\n"
                               "import os, time\nfrom sarseg.core import locking\n"
                               f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\nlocking.acquire(fd)\n"
                               "print('held', flush=True)\ntime.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    fd = os.open(lock, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    locking.acquire(fd)  # released by the system with its holder
    locking.release(fd)
    os.close(fd)


def test_the_windows_lock_raises_what_is_not_contention(tmp_path: Path) -> None:
    calls = []

    def locking_call(fd, mode, nbytes):
        calls.append(mode)
        if len(calls) < 3:
            raise OSError(errno.EACCES, "taken")  # contention: tried again
        if len(calls) == 3:
            return
        raise OSError(errno.EBADF, "bad file")

    m = SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking_call)
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    locking.acquire(fd, "win32", m, poll=0.001)
    assert calls == [2, 2, 2]
    with pytest.raises(OSError, match="bad file"):
        locking.acquire(fd, "win32", m)
    os.close(fd)


def test_a_rename_over_a_file_a_reader_holds_is_retried_on_windows(tmp_path: Path) -> None:
    """On Windows, replacing a job record another process is reading fails for a moment (PermissionError)."""
    source, target = tmp_path / "new", tmp_path / "job.json"
    source.write_text("new")
    refusals = [PermissionError(13, "in use")] * 3

    def busy_then_free(src, dst):
        if refusals:
            raise refusals.pop()
        os.replace(src, dst)

    files.replace(source, target, "win32", busy_then_free)
    assert target.read_text() == "new" and not refusals
    source.write_text("again")
    refusals.append(PermissionError(13, "in use"))
    with pytest.raises(PermissionError):  # elsewhere it means what it says
        files.replace(source, target, "linux", busy_then_free)
