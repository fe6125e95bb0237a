"""A runner that is MATLAB bicubic interpolation: the paper's Bicubic row through every tool."""

from __future__ import annotations

import numpy as np

from lbnet_deploy.descriptor import ModelDescriptor
from lbnet_deploy.metadata import ModelFacts
from lbnet_deploy.quality.imresize import imresize

from .backend import AnySizeRunner, describe_facts
from .upscaler import to_uint8


class BicubicRunner(AnySizeRunner):
    """MATLAB `imresize(lr, s, 'bicubic')` on uint8, as the baseline rows are made; a batch of
    non-integer values (a 16-bit image on 0..255) is resized in float, unrounded, as a model
    would be fed it."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    @property
    def model_facts(self) -> ModelFacts:
        # one head, one feature: interpolation needs no attention memory, so it never tiles
        return ModelFacts(ModelDescriptor("bicubic", self.scale, 1, 1, 1), "fp64")

    def describe(self) -> dict[str, object]:
        return describe_facts(self.model_facts, "numpy")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        whole = bool(np.array_equal(batch, np.rint(batch)))
        images = (to_uint8(batch) if whole else batch.astype(np.float64)).transpose(0, 2, 3, 1)
        out = [imresize(img, self.scale).astype(np.float32) for img in images]
        return np.stack(out).transpose(0, 3, 1, 2)
