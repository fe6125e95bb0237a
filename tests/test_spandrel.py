"""LBNet through spandrel (`lbnet_deploy.spandrel`): `spandrel.ModelLoader` detects every
checkpoint by its keys, reads variant and scale off the shapes, and its descriptor's call (0..1
in and out) gives our reference output / 255. Random-weight checkpoints always; the official
ones where ../shared has them.

spandrel imports torchvision when it is imported; where torchvision cannot be imported (torch's
CPU wheel here: PyPI's torchvision is a CUDA build) the two names it imports are stood in for
(tests/torchvision_stub.py): LBNet's architecture uses none of them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.runtime.torch_ref import TorchRunner

from .conftest import CHECKPOINTS, RANDOM, texture
from .torchvision_stub import stub_modules, torchvision_importable


@pytest.fixture(scope="module")
def spandrel():
    if not torchvision_importable():
        with pytest.MonkeyPatch.context() as patch:
            for name, module in stub_modules().items():
                patch.setitem(sys.modules, name, module)
            module = pytest.importorskip("spandrel", reason="spandrel is not installed")
    else:
        module = pytest.importorskip("spandrel", reason="spandrel is not installed")
    import lbnet_deploy.spandrel  # noqa: F401  (registers LBNet)

    return module


def _check_against_ours(spandrel, path: Path, variant: str, scale: int, size=(20, 24)) -> None:
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == "LBNet" and descriptor.purpose == "SR"
    assert (descriptor.scale, descriptor.input_channels, descriptor.output_channels) == (
        scale,
        3,
        3,
    )
    assert descriptor.tags[0] == variant
    assert descriptor.size_requirements.none  # any size, 1x1 included
    assert descriptor.tiling == spandrel.ModelTiling.SUPPORTED
    lr = texture(*size)
    x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    got = descriptor(x).numpy()[0] * 255  # spandrel's call: 0..1 in and out, clamped
    want = TorchRunner(path).infer(lr.transpose(2, 0, 1)[None].astype(np.float32))[0]
    assert np.abs(got - np.clip(want, 0, 255)).max() <= 1e-3
    # the module keeps the checkpoint's weights: saved back, it is the same checkpoint
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = descriptor.model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_checkpoints_load_and_match(spandrel, checkpoint, name: str) -> None:
    _check_against_ours(spandrel, checkpoint(name), *RANDOM[name])


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_official_checkpoints_load_and_match(spandrel, checkpoint, name: str) -> None:
    _check_against_ours(spandrel, checkpoint(name), *CHECKPOINTS[name])  # skips without them


def test_registered_once_and_not_claiming_other_models(spandrel, checkpoint) -> None:
    from lbnet_deploy.spandrel import install

    assert install() == []  # imported once already: a second install adds nothing
    assert "LBNet" in spandrel.MAIN_REGISTRY
    state = torch.load(checkpoint("random-LBNet-x2"), weights_only=True)
    detected = [a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures("detection")
                if a.detect(state)]  # fmt: skip
    assert detected == ["LBNet"]  # no other architecture takes an LBNet state dict
    del state["attention2.atten.proj.weight"]
    assert not spandrel.MAIN_REGISTRY["LBNet"].detect(state)  # a part missing: not LBNet


def test_a_state_dict_that_looks_like_lbnet_but_is_not_is_one_line(spandrel, checkpoint) -> None:
    state = torch.load(checkpoint("random-LBNet-T-x4"), weights_only=True)
    state["head.weight"] = torch.zeros(20, 3, 3, 3)  # 20 features: no variant has them
    with pytest.raises(LBNetError, match="n_feats=20 matches no variant"):
        spandrel.ModelLoader().load_from_state_dict(state)
    state = torch.load(checkpoint("random-LBNet-T-x4"), weights_only=True)
    state["c1.weight"] = torch.zeros(18, 18, 1, 1)  # the fusion conv of another shape
    with pytest.raises(LBNetError, match=r"does not match LBNet-T x4: .*c1\.weight"):
        spandrel.ModelLoader().load_from_state_dict(state)


def test_half_and_bfloat16_as_declared(spandrel, checkpoint) -> None:
    """What supports_half / supports_bfloat16 promise (measured on the official checkpoints:
    README, spandrel): the model runs in them, finite, close to FP32."""
    descriptor = spandrel.ModelLoader().load_from_file(checkpoint("random-LBNet-T-x4"))
    x = torch.from_numpy(texture(16, 16).transpose(2, 0, 1)[None].astype(np.float32) / 255)
    want = descriptor(x)
    for dtype in (torch.float16, torch.bfloat16):
        low = descriptor.to(dtype)  # spandrel refuses a dtype the descriptor does not support
        got = low(x.to(dtype)).float()
        assert torch.isfinite(got).all() and (got - want).abs().max() * 255 < 8
        descriptor = low.to(torch.float32)
