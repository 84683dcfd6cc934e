"""Process-wide settings for speed that must be made before heavy work starts."""

from __future__ import annotations

import ctypes
import os
import sys

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


def available_cores() -> int:
    """The cores this process may run on (its affinity: a container's or ``taskset``'s share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_policy() -> str:
    """The default, in words (``--threads``' help)."""
    return (f"torch's own, one per physical core, at most the {available_cores()} cores this process may use; "
            f"a waiting thread spins {SPIN_COUNT} rounds, then sleeps")


def configure_threads(threads: int | None) -> None:
    """torch's intra-op threads and how they wait, set before torch loads (libgomp reads its environment
    then); ``threads`` also applies when torch was loaded already (``torch.set_num_threads``).

    Waiting OpenMP threads spin only briefly before they sleep: libgomp's default spin (about a
    millisecond at every barrier) burns the time slices other processes need, and made training
    7-40x slower when another program shared the cores, while sleeping at once (OMP_WAIT_POLICY=PASSIVE)
    made an idle tiny run 1.7x slower; a short spin costs little in both cases (README, Benchmarks).
    Without ``threads``: torch's own count (one per physical core of the machine), capped at the cores
    this process may use. The user's own OMP_WAIT_POLICY, GOMP_SPINCOUNT and OMP_NUM_THREADS win."""
    if threads is not None and threads < 1:
        raise BadInput("--threads", f"must be positive (got {threads})")
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    elif available_cores() < (os.cpu_count() or 1):
        os.environ.setdefault("OMP_NUM_THREADS", str(available_cores()))
