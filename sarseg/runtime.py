"""Process-wide settings for speed that must be made before heavy work starts."""

from __future__ import annotations

import ctypes
import os
import sys
import time

from .core.errors import BadInput

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Keep freed memory in the process (glibc): large tensors are then reused instead of being
    unmapped and page-faulted back in every step, which made CPU steps 1.3-3x faster here.
    Returns whether the settings took effect (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((_M_MMAP_THRESHOLD, 2**31 - 1), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 2**28))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)



SPIN_COUNT = 1000  # GOMP_SPINCOUNT: rounds a waiting OpenMP thread spins before it sleeps (libgomp's default: 300000)
LOAD_SAMPLE_S = 0.2  # how long the cores' load is sampled before choosing the thread count


def available_cores() -> set[int]:
    """The cores this process may run on (its affinity: a container's or ``taskset``'s share, not the machine's)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def busy_cores(cores: set[int], seconds: float = LOAD_SAMPLE_S) -> float:
    """How many of ``cores`` other programs keep busy: their non-idle share over ``seconds`` while this
    process sleeps (Linux ``/proc/stat``; 0.0 where it cannot tell)."""
    def sample() -> dict[int, tuple[int, int]]:
        ticks = {}
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                name, *values = line.split()
                if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cores:
                    times = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                    ticks[int(name[3:])] = (sum(times), times[3] + times[4])
        return ticks

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    busy = 0.0
    for cpu, (total, idle) in after.items():
        if cpu in before and total > before[cpu][0]:
            busy += 1.0 - (idle - before[cpu][1]) / (total - before[cpu][0])
    return busy


def thread_policy() -> str:
    """The default, in words (``--threads``' help)."""
    return (f"one per core of the {len(available_cores())} this process may use that other programs leave idle, "
            f"at least 1, torch's own count when all are idle; a waiting thread spins {SPIN_COUNT} rounds, then sleeps")


def configure_threads(threads: int | None, adapt: bool = True) -> None:
    """torch's intra-op threads and how they wait, set before torch loads (libgomp reads its environment
    then); ``threads`` also applies when torch was loaded already (``torch.set_num_threads``).

    Waiting OpenMP threads spin only briefly before they sleep: libgomp's default spin (milliseconds at
    every barrier) burns the time slices other processes need; sleeping at once (OMP_WAIT_POLICY=PASSIVE)
    made an idle tiny run 1.7x slower. Without ``threads`` (and with ``adapt``): one thread per core this
    process may use that other programs leave idle now (at least one), since threads that wait for a
    core another program holds slowed every step (README, Benchmarks); with idle cores torch's own
    count stands. The user's own OMP_WAIT_POLICY, GOMP_SPINCOUNT and OMP_NUM_THREADS win."""
    if threads is not None and threads < 1:
        raise BadInput("--threads", f"must be positive (got {threads})")
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    elif adapt and "OMP_NUM_THREADS" not in os.environ:
        cores = available_cores()
        free = max(1, min(len(cores), round(len(cores) - busy_cores(cores))))
        if free < len(cores) or len(cores) < (os.cpu_count() or 1):
            os.environ["OMP_NUM_THREADS"] = str(free)
