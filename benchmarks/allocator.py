"""Pin glibc malloc's adaptive thresholds so eager PyTorch timings do not depend on history.

glibc moves its mmap threshold with every large free and trims the heap top when enough is free,
so whether eager PyTorch's per-pass temporaries (tens of MB) come from reused heap memory or
from fresh pages (a page fault per 4 KiB, every pass) depends on what the process allocated
before. Measured here for the reference port at 128x128: 4.8 s per pass in a fresh process,
2.1 s once the thresholds are pinned (or after some unrelated large allocation). ONNX Runtime
keeps its own arena and is not affected. Benchmarks pin them once, for every contender alike.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # the highest value glibc accepts on 64-bit
TRIM_THRESHOLD = 2**30

_applied: str | None = None


def pin_malloc_thresholds() -> str:
    """Pin the thresholds where the C library is glibc; say what the allocator now does."""
    global _applied
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return allocator_setting()
    mallopt = ctypes.CDLL(None).mallopt
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        _applied = (
            f"glibc malloc, mmap threshold pinned at {MMAP_THRESHOLD >> 20} MiB and trim "
            f"threshold at {TRIM_THRESHOLD >> 30} GiB (eager PyTorch reuses its temporaries)"
        )
    return allocator_setting()


def allocator_setting() -> str:
    return _applied or "C library default (adaptive thresholds)"
