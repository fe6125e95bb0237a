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
# threads, two runners) share one save: the first in turns TF32 off, the last out restores it
_TF32_LOCK = threading.Lock()
_tf32_users = 0
_tf32_saved: tuple[Any, ...] = ()


def _tf32_switches(torch: Any) -> list[tuple[Any, str, Any]]:
    """(object, attribute, value without TF32) for cuDNN's convolutions and CUDA's matrix
    products: torch >= 2.9's fp32_precision where it exists (setting the legacy flags after a
    user set the new ones raises), the legacy allow_tf32 flags before."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"),
                (torch.backends.cuda.matmul, "fp32_precision", "ieee")]  # fmt: skip
    return [(torch.backends.cudnn, "allow_tf32", False),
            (torch.backends.cuda.matmul, "allow_tf32", False)]  # fmt: skip


@contextlib.contextmanager
def no_tf32(torch: Any, active: bool = True) -> Iterator[None]:
    """FP32 on CUDA means FP32, as in our engines: torch's default lets cuDNN convolve in TF32,
    which moved LBNet-T x4's Set5 output by up to 0.21 of 255 (H200, device check) against
    0.0003 without it. Set for the call and put back, as read, when the last call overlapping
    it ends; other torch work in the process meanwhile runs without TF32 too."""
    global _tf32_users, _tf32_saved
    if not active:
        yield
        return
    switches = _tf32_switches(torch)
    with _TF32_LOCK:
        if _tf32_users == 0:
            _tf32_saved = tuple(getattr(obj, name) for obj, name, _ in switches)
            for obj, name, off in switches:
                setattr(obj, name, off)
        _tf32_users += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_users -= 1
            if _tf32_users == 0:
                for (obj, name, _), value in zip(switches, _tf32_saved, strict=True):
                    setattr(obj, name, value)


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
