"""PyTorch backend: the eager model from a checkpoint or model name (or an already built model,
for bench's variants), any input size, on the CPU or a CUDA device, FP32 or FP16.

The only runtime module that imports torch, and only when a runner is created.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import AnySizeRunner, check_batch, describe_facts
from .onnxrt import bounded_threads

DTYPES = {"fp32": "float32", "fp16": "float16"}


# no_tf32's bookkeeping: the switches are process-wide, so overlapping calls (the Upscaler's
# threads, two runners) share one change: the first in makes it, the last out undoes it
_TF32_LOCK = threading.Lock()
_tf32_users = 0
_tf32_changed: list[tuple[Any, str, Any, Any]] = []  # (object, attribute, before, written)


def _tf32_switches(torch: Any) -> list[tuple[Any, str, Any]]:
    """(object, attribute, value without TF32), parents first. torch >= 2.9: fp32_precision
    (the legacy flags raise once a user set these); cuDNN's parent switch reaches every
    convolution setting the user did not set, so only those the user set are written and
    undone, and torch's inheritance is left as it was. Before 2.9: the allow_tf32 flags."""
    cudnn = torch.backends.cudnn
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        return [(cudnn, "fp32_precision", "ieee"), (cudnn.conv, "fp32_precision", "ieee"),
                (torch.backends.cuda.matmul, "fp32_precision", "ieee")]  # fmt: skip
    return [(cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]


def _undo(changed: list[tuple[Any, str, Any, Any]]) -> None:
    """Put back what no_tf32 wrote, parents first (a child the user set to inherit meanwhile
    reads the parent's "ieee" until the parent is back); a switch the user changed since stays,
    unless to the very value written, which cannot be told apart."""
    for obj, name, before, written in changed:
        if getattr(obj, name) == written:
            setattr(obj, name, before)


@contextlib.contextmanager
def no_tf32(torch: Any, active: bool = True) -> Iterator[None]:
    """FP32 on CUDA means FP32, as in our engines: torch's default lets cuDNN convolve in TF32,
    which moved LBNet-T x4's Set5 output by up to 0.21 of 255 (H200, device check) against
    0.0003 without it. Turned off for the call and undone when the last call overlapping it
    ends. Meanwhile other torch work in the process runs without TF32 too, and on torch >= 2.9
    reading the legacy allow_tf32 flags raises there (torch refuses to mix the two APIs)."""
    global _tf32_users, _tf32_changed
    if not active:
        yield
        return
    with _TF32_LOCK:
        if _tf32_users == 0:
            changed: list[tuple[Any, str, Any, Any]] = []
            try:
                for obj, name, off in _tf32_switches(torch):
                    before = getattr(obj, name)
                    if before != off:  # already off (inherited, or the user's): untouched
                        setattr(obj, name, off)
                        changed.append((obj, name, before, off))
            except BaseException:
                _undo(changed)
                raise
            _tf32_changed = changed
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_users -= 1
            if _tf32_users == 0:
                _undo(_tf32_changed)
                _tf32_changed = []


class TorchRunner(AnySizeRunner):
    """Runner over `load_model(spec)` (or `model`); dynamic size and batch.

    ops "reference" (default) is the straightforward port (nn.Unfold/Fold, one attention run at
    a time): the official code's semantics, the oracle for parity, and light on memory for
    full-image evaluation; "static" is our exported form, run eagerly (bench compares them).
    `infer` returns after the device is done: the output is copied to the host.
    """

    def __init__(
        self,
        spec: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        *,
        model: Any = None,
        ops: str = "reference",
        precision: str = "fp32",
    ) -> None:
        import torch

        if (spec is None) == (model is None):
            raise ValueError("give a checkpoint spec or a model, not both or neither")
        if precision not in DTYPES:
            raise LBNetError(f"the torch backend runs {' or '.join(DTYPES)}, not {precision}")
        if threads:
            torch.set_num_threads(bounded_threads(threads))
        self._torch = torch
        self.device = torch.device(device)
        if spec is not None:
            from lbnet_deploy.model.checkpoint import load_model

            model, _ = load_model(spec)
        self.descriptor = model.descriptor
        self.ops, self.precision = ops, precision
        self.model = model.set_ops(ops).to(self.device, getattr(torch, DTYPES[precision])).eval()
        self.scale = self.descriptor.scale

    @property
    def model_facts(self) -> ModelFacts:
        return ModelFacts(self.descriptor, self.precision)

    def describe(self) -> dict[str, object]:
        name = "torch" if self.ops == "reference" else "torch-ours"  # bench's contender names
        return describe_facts(self.model_facts, name, device=str(self.device))

    @property
    def ieee_fp32(self) -> bool:
        """FP32 on a CUDA device: computed without TF32 (no_tf32)."""
        return self.device.type == "cuda" and self.precision == "fp32"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        dtype = getattr(torch, DTYPES[self.precision])
        x = torch.from_numpy(check_batch(batch, None)).to(self.device, dtype)
        with no_tf32(torch, self.ieee_fp32), torch.inference_mode():
            out = self.model(x)
        return out.float().cpu().numpy()

    def device_peak_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / 2**20

    def reset_device_peak(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.reset_peak_memory_stats(self.device)
