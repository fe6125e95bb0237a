"""PyTorch reference backend: the eager model from a checkpoint or model name, any input size.

The only runtime module that imports torch, and only when a runner is created.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import AnySizeRunner, check_batch
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

    def describe(self) -> dict[str, object]:
        d = self.descriptor
        return {
            "backend": "torch",
            "device": str(self.device),
            "variant": d.variant,
            "scale": d.scale,
            "heads": d.heads,
            "n_feats": d.n_feats,
            "precision": "fp32",
            "input_size": None,
            "max_batch": None,
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, None)
        with self._torch.inference_mode():
            out = self.model(self._torch.from_numpy(batch).to(self.device))
        return out.cpu().numpy()
