"""PyTorch backend: the eager model from a checkpoint or model name (or an already built model,
for bench's variants), any input size, on the CPU or a CUDA device, FP32 or FP16.

The only runtime module that imports torch, and only when a runner is created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import AnySizeRunner, check_batch, describe_facts
from .onnxrt import bounded_threads

DTYPES = {"fp32": "float32", "fp16": "float16"}


@contextlib.contextmanager
def no_tf32(torch: Any, active: bool = True) -> Iterator[None]:
    """FP32 on CUDA means FP32, as in our engines: torch's default lets cuDNN convolve in TF32,
    which moved LBNet-T x4's Set5 output by up to 0.22 of 255 (H200, device check) against
    0.0003 without it. Set for the call and put back: the switches are process-wide."""
    if not active:
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        dtype = getattr(torch, DTYPES[self.precision])
        x = torch.from_numpy(check_batch(batch, None)).to(self.device, dtype)
        exact = self.device.type == "cuda" and self.precision == "fp32"
        with no_tf32(torch, exact), torch.inference_mode():
            out = self.model(x)
        return out.float().cpu().numpy()

    def device_peak_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated(self.device) / 2**20

    def reset_device_peak(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.reset_peak_memory_stats(self.device)
