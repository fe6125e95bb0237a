"""PyTorch reference backend: the eager model from a checkpoint or model name, any input size.

The only runtime module that imports torch, and only when a runner is created.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import check_batch


class TorchRunner:
    """Runner over `load_model(spec)` on CPU (or `device`); dynamic size and batch."""

    def __init__(self, spec: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from lbnet_deploy.model.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        self.model, self.descriptor = load_model(spec)
        self.model.to(self.device)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    @property
    def max_batch(self) -> int | None:
        return None

    @property
    def scale(self) -> int:
        return self.descriptor.scale

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
