"""Summary statistics of repeated timings, and throughput in output megapixels per second."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """median, p90, p99, min, max, mean (seconds) and the run count.

    Percentiles interpolate linearly between order statistics (numpy's default), so with few
    runs p99 sits just below the maximum rather than jumping to it.
    """
    if len(seconds) == 0:
        raise ValueError("no timings to summarize")
    x = np.asarray(seconds, dtype=np.float64)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "median_s": float(p50),
        "p90_s": float(p90),
        "p99_s": float(p99),
        "min_s": float(x.min()),
        "max_s": float(x.max()),
        "mean_s": float(x.mean()),
        "runs": len(x),
    }


def output_megapixels(batch: int, size: tuple[int, int], scale: int) -> float:
    """Output pixels of one forward pass, in millions."""
    return batch * size[0] * size[1] * scale * scale / 1e6


def throughput(megapixels: float, seconds: float) -> float:
    """Output megapixels per second at the given (median) latency."""
    return megapixels / seconds if seconds > 0 else float("nan")
