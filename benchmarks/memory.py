"""Peak host memory of one configuration, measured inside the running process.

Linux keeps a process's peak RSS in /proc/self/status (VmHWM); writing "5" to
/proc/self/clear_refs resets that peak to the current RSS. So each configuration is measured
as: trim the heap (malloc_trim), reset, note RSS, run warm-up and timed runs, read the peak.
Elsewhere we fall back to getrusage's ru_maxrss, which cannot be reset (then the peak is the
process's so far).
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
from dataclasses import dataclass


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand freed heap back to the OS (glibc), so memory an earlier configuration freed but
    the allocator kept is not silently reused, hiding this configuration's growth."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _maxrss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@dataclass
class PeakMemory:
    """Context manager: `.peak_mb` (process peak RSS) and `.delta_mb` (peak above the start)."""

    method: str = ""
    start_mb: float = 0.0
    peak_mb: float = 0.0
    device_peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        resettable = _reset_peak()
        rss = _status_kb("VmRSS")
        self.method = "VmHWM after clear_refs reset" if resettable else "ru_maxrss (no reset)"
        self.start_mb = rss / 1024 if rss is not None else _maxrss_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kb("VmHWM")
        self.peak_mb = hwm / 1024 if hwm is not None else _maxrss_mb()

    @property
    def delta_mb(self) -> float:
        return max(self.peak_mb - self.start_mb, 0.0)
