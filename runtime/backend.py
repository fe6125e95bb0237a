"""The one interface every inference backend offers, Polygraphy-style: a loader makes the
session or engine, a runner wraps it behind `infer`. Tiling, parity checks and benchmarks talk
only to a `Runner`, never to onnxruntime, torch or TensorRT directly.

Backends: `onnxrt.OnnxRuntimeRunner` (CPU/CUDA/TensorRT execution providers) and
`torch_ref.TorchRunner` (the PyTorch reference). The TensorRT engine backend slots in as
`runtime/tensorrt.py`: an engine loader (deserialize, keyed cache) and a runner whose
`input_size`/`max_batch` come from the engine's optimization profile (fixed shapes -> a tuple,
dynamic shapes -> None) and whose `infer` copies the batch to the device, runs
`execute_async_v3` and copies back. Nothing outside that module changes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """Runs LBNet on a float32 NCHW batch of 0..255 RGB; returns the (unclipped) SR batch."""

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) every input must have, or None for any size."""
        ...

    @property
    def max_batch(self) -> int | None:
        """The largest batch `infer` takes in one call, or None for any."""
        ...

    @property
    def scale(self) -> int: ...

    def describe(self) -> dict[str, object]:
        """Facts for logs and the memory model: at least backend, variant, scale, heads,
        n_feats."""
        ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, 3, sH, sW) float32."""
        ...


def check_batch(batch: np.ndarray, input_size: tuple[int, int] | None) -> np.ndarray:
    """The batch as contiguous float32 NCHW RGB; a wrong shape is a programming error."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) batch, got shape {batch.shape}")
    if input_size is not None and tuple(batch.shape[2:]) != tuple(input_size):
        raise ValueError(f"this runner takes {input_size} inputs only, got {batch.shape[2:]}")
    return np.ascontiguousarray(batch, dtype=np.float32)


class AnySizeRunner:
    """Shared part of runners that take any height, width and batch (PyTorch, bicubic)."""

    scale: int

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    @property
    def max_batch(self) -> int | None:
        return None
