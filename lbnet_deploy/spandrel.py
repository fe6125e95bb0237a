"""LBNet and LBNet-T as a spandrel architecture: `import lbnet_deploy.spandrel` adds it to
spandrel's MAIN_REGISTRY (spandrel reads no entry points; `install(registry)` adds it to another
registry, as spandrel_extra_arches does), and then `spandrel.ModelLoader().load_from_file(
"LBNet-T_X4.pt")` detects an LBNet checkpoint by its keys and reads every hyper-parameter off
the tensor shapes, through the descriptor the rest of lbnet-deploy uses
(`model.checkpoint.infer_descriptor`).

spandrel's images are 0..1 RGB (ImageModelDescriptor.__call__); LBNet's are 0..255 (rgb_range
255), so the call scales in and out (`call_fn`, as spandrel's own IPT does) and the module keeps
the checkpoint's weights as they are: its state dict saves back to the same checkpoint.

The module runs the reference ops (`LBNet.set_ops("reference")`: the official code's
semantics, one attention run at a time, any size from 1x1), the lighter on memory of our forms:
a W x H tile holds about heads x (W H / 16)^2 attention scores per run.
"""

from __future__ import annotations

import torch
from spandrel import (
    MAIN_REGISTRY,
    Architecture,
    ArchRegistry,
    ArchSupport,
    ImageModelDescriptor,
    ModelTiling,
    SizeRequirements,
    StateDict,
)
from spandrel.util import KeyCondition

from lbnet_deploy.model.checkpoint import build_model, infer_descriptor
from lbnet_deploy.model.lbnet import LBNet

# keys only LBNet's state dicts have together: the mean shifts, the symmetric CNN's first FRDAB,
# both recursive Transformer stages and the tail (LBNET.md's key prefixes)
KEYS = (
    "sub_mean.weight", "head.weight", "r1.b1.c1.weight", "r1.b1.sa.conv1.weight",
    "se1.conv_du.0.weight", "attention.atten.reduce.weight", "attention.atten.qkv.weight",
    "attention2.atten.proj.weight", "tail.0.weight", "add_mean.weight",
)  # fmt: skip

# Measured (benchmarks/studies/spandrel_precision.py): see README "spandrel"
SUPPORTS_HALF = True
SUPPORTS_BFLOAT16 = True


def _call(model: LBNet, image: torch.Tensor) -> torch.Tensor:
    """spandrel's 0..1 image through LBNet's 0..255 (the checkpoint's rgb_range)."""
    return model(image * 255.0) / 255.0


class LBNetArch(Architecture[LBNet]):
    """LBNet / LBNet-T at x2, x3, x4 (variant and scale from the shapes)."""

    def __init__(self) -> None:
        super().__init__(id="LBNet", detect=KeyCondition.has_all(*KEYS))

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[LBNet]:
        desc = infer_descriptor(state_dict, "this state dict")  # one-line LBNetError if not
        model = build_model(state_dict, desc, "this state dict").set_ops("reference")
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR",
            tags=[desc.variant, f"{desc.n_feats}nf", f"{desc.heads}h"],
            supports_half=SUPPORTS_HALF,
            supports_bfloat16=SUPPORTS_BFLOAT16,
            scale=desc.scale,
            input_channels=3,
            output_channels=3,
            # any size works (runs of one token below 16 pixels, where the official code fails)
            size_requirements=SizeRequirements(),
            # tiles of 96 px with 16 px overlap were within 0.003 dB of whole images on Set5
            # and 0.04 dB better on Set14 (README, Tiling): tiling is supported, and bounds
            # the attention's memory, which grows with the tile's pixels squared
            tiling=ModelTiling.SUPPORTED,
            call_fn=_call,
        )


def install(registry: ArchRegistry = MAIN_REGISTRY) -> list[ArchSupport]:
    """Add LBNet to `registry` (spandrel's main one by default); a second call adds nothing."""
    return registry.add(ArchSupport.from_architecture(LBNetArch()), ignore_duplicates=True)


install()
