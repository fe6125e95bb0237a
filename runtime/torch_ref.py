"""PyTorch reference backend: the eager model from a checkpoint or model name, any input size.

The only runtime module that imports torch, and only when a runner is created.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbnet_deploy.metadata import ModelFacts

from .backend import AnySizeRunner, check_batch, describe_facts
from .onnxrt import bounded_threads


class TorchRunner(AnySizeRunner):
    """Runner over `load_model(spec)` on CPU (or `device`); dynamic size and batch."""

    def __init__(self, spec: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from lbnet_deploy.model.checkpoint import load_model

        if threads:
            torch.set_num_threads(bounded_threads(threads))
        self._torch = torch
        self.device = torch.device(device)
        self.model, self.descriptor = load_model(spec)
        # the straightforward port (nn.Unfold/Fold, one attention run at a time): the official
        # code's semantics, the oracle for parity, and light on memory for full-image evaluation
        self.model.set_ops("reference")
        self.model.to(self.device)
        self.scale = self.descriptor.scale

    @property
    def model_facts(self) -> ModelFacts:
        return ModelFacts(self.descriptor, "fp32")

    def describe(self) -> dict[str, object]:
        return describe_facts(self.model_facts, "torch", device=str(self.device))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, None)
        with self._torch.inference_mode():
            out = self.model(self._torch.from_numpy(batch).to(self.device))
        return out.cpu().numpy()
