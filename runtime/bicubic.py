"""A runner that is MATLAB bicubic interpolation: the paper's Bicubic row through every tool."""

from __future__ import annotations

import numpy as np

from lbnet_deploy.quality.imresize import imresize

from .backend import AnySizeRunner
from .upscaler import to_uint8


class BicubicRunner(AnySizeRunner):
    """MATLAB `imresize(lr, s, 'bicubic')` on uint8, as the baseline rows are made."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def describe(self) -> dict[str, object]:
        # tiny heads/feats: interpolation needs no attention memory, so never tile
        return {"variant": "bicubic", "scale": self.scale, "heads": 1, "n_feats": 1,
                "precision": "fp64", "backend": "numpy"}  # fmt: skip

    def infer(self, batch: np.ndarray) -> np.ndarray:
        images = to_uint8(batch).transpose(0, 2, 3, 1)
        out = [imresize(img, self.scale).astype(np.float32) for img in images]
        return np.stack(out).transpose(0, 3, 1, 2)
