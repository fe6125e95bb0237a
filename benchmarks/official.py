"""The official LBNet code (github IVIPLab/LBNet) as a timing contender, from a user's checkout.

Nothing of it is vendored: `--official-repo DIR` points at a clone (it needs its `model/` and
`util/` folders), imported at run time. The issue's comparison is against that code in eager
mode and against a plain `torch.onnx.export(dynamo=True)` of it; our straightforward port
(`torch`, `ort-plain`) stands in for it when no checkout is given.
"""

from __future__ import annotations

import importlib
import logging
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from lbnet_deploy._version import __version__
from lbnet_deploy.descriptor import ModelDescriptor
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.onnx_io import save_atomic
from lbnet_deploy.metadata import to_metadata
from lbnet_deploy.model.checkpoint import load_model
from lbnet_deploy.weights import cache_root


def check_official_repo(repo: str | Path) -> None:
    """Fail early (before any timing) when `repo` is not a checkout of the official code."""
    repo = Path(repo)
    if not (repo / "model" / "lbnet.py").is_file() or not (repo / "util").is_dir():
        raise LBNetError(f"{repo} is not a checkout of IVIPLab/LBNet (no model/lbnet.py, util/)")


def _import_official(repo: Path) -> Any:
    check_official_repo(repo)
    sys.path.insert(0, str(repo))
    try:
        return importlib.import_module("model.lbnet")  # its package imports util.rlutrans
    finally:
        sys.path.remove(str(repo))


def load_official(repo: str | Path, spec: str) -> tuple[torch.nn.Module, ModelDescriptor]:
    """The official module for `spec` with the checkpoint loaded strictly, and our descriptor.

    The official constructor hard-codes the attention width A = D/2; LBNet-T's checkpoints
    have A = D, so Linear layers whose checkpoint shape differs are rebuilt at that shape
    before loading (strict loading then proves every other shape matches)."""
    lbnet = _import_official(Path(repo))
    ours, desc = load_model(spec)
    args = types.SimpleNamespace(
        scale=[desc.scale], n_feats=desc.n_feats, num_heads=desc.heads, rgb_range=255,
        n_colors=3,
    )  # fmt: skip
    model = lbnet.LBNet(args)
    # our module's state_dict has the checkpoint's keys and tensors (it loads strictly)
    state = ours.state_dict()
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if not isinstance(module, torch.nn.Linear) or weight is None:
            continue
        if tuple(weight.shape) != tuple(module.weight.shape):
            parent, _, attr = name.rpartition(".")
            new = torch.nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None)
            setattr(model.get_submodule(parent), attr, new)
    model.load_state_dict(state, strict=True)
    return model.eval(), desc


def export_official(model: torch.nn.Module, desc: ModelDescriptor, size: tuple[int, int]) -> Path:
    """A plain fixed-size export of the official module (cached), stamped with our metadata
    so the ORT runner reads its scale."""
    name = f"{desc.sha256[:16]}-{size[0]}x{size[1]}-official-v{__version__}.onnx"
    out = cache_root() / "bench" / name
    if out.is_file():
        return out
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "official.onnx"
        sample = torch.rand(1, 3, *size) * 255
        torch.onnx.export(model, (sample,), str(raw), dynamo=True, external_data=False)
        graph = onnx.load(str(raw))
    meta = to_metadata(desc, input_size="{}x{}".format(*size), batch=1, precision="fp32")
    onnx.helper.set_model_props(graph, meta)
    save_atomic(graph, out)
    return out


class OfficialEagerRunner:
    """The official module in eager PyTorch (CPU, FP32), behind `infer` like our runners."""

    def __init__(self, model: torch.nn.Module, threads: int | None = None) -> None:
        self.model = model
        if threads:
            torch.set_num_threads(threads)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()
