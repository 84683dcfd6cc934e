"""Process-wide settings for speed that must be made before heavy work starts."""

from __future__ import annotations

import ctypes
import sys

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

