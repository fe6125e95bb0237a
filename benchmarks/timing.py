"""Timing loops: one configuration (with its peak memory), or several interleaved."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lbnet_deploy.runtime.backend import DeviceMemory

from .memory import PeakMemory
from .stats import summarize


def sample_input(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A reproducible float32 NCHW 0..255 batch (content does not change LBNet's cost)."""
    rng = np.random.default_rng(seed)
    return (rng.random((batch, 3, *size), dtype=np.float32) * 255).astype(np.float32)


def time_calls(fn: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_forward(runner: Any, x: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
    """Forward-pass timings of `runner.infer(x)` with the peak memory of warm-up + runs.

    `infer` takes a prepared host array and returns the fetched output; torch CUDA runners
    synchronise inside it, so each sample covers the whole device work.
    """
    gc.collect()
    on_device = isinstance(runner, DeviceMemory)
    if on_device:
        runner.reset_device_peak()
    with PeakMemory() as mem:
        samples = time_calls(lambda: runner.infer(x), warmup, runs)
    return {
        "samples_s": samples,
        "stats": summarize(samples),
        "peak_rss_mb": round(mem.peak_mb, 1),
        "rss_delta_mb": round(mem.delta_mb, 1),
        "memory_method": mem.method,
        "device_peak_mb": runner.device_peak_mb() if on_device else None,
    }


def interleaved(
    calls: Mapping[str, Callable[[], object]], warmup: int, runs: int
) -> dict[str, list[float]]:
    """Time several callables alternately (A, B, C, A, B, C, ...), so drifting machine load
    (other jobs, thermal state) hits every contender alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples
