"""Checkpoint -> descriptor -> module: the one place that turns a .pt file into a model.

Like spandrel, every hyper-parameter is read off tensor shapes, so a user only names a file.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import torch

from lbnet_deploy.descriptor import VARIANTS, ModelDescriptor, describe
from lbnet_deploy.errors import LBNetError

from .lbnet import LBNet

_SHAPE_KEYS = ("head.weight", "tail.0.weight", "attention.atten.reduce.weight")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LBNetError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses pickles that could run arbitrary code: we never fall back
        raise LBNetError(
            f"{path} holds pickled Python objects, not just tensors: refused (weights_only)"
        ) from None
    except Exception as exc:  # zip/pickle/EOF errors all mean the same thing to a user
        reason = str(exc).strip().split(".")[0][:100] or type(exc).__name__
        raise LBNetError(f"{path} is truncated or not a PyTorch checkpoint ({reason})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LBNetError(f"{path} is not an LBNet checkpoint: not a state_dict of tensors")
    return obj


def infer_descriptor(state: dict[str, torch.Tensor], source: str) -> ModelDescriptor:
    """Variant and scale from tensor shapes (LBNET.md): head is (F,3,3,3), tail (3s^2,F,3,3)."""
    missing = [k for k in _SHAPE_KEYS if k not in state]
    if missing:
        raise LBNetError(f"{source} is not an LBNet checkpoint: no {missing[0]!r} tensor")
    f = state["head.weight"].shape[0]
    variant = next((v for v, (nf, _, _) in VARIANTS.items() if nf == f), None)
    if variant is None:
        raise LBNetError(f"{source} is not an LBNet checkpoint: n_feats={f} matches no variant")
    scale = math.isqrt(state["tail.0.weight"].shape[0] // 3)
    if 3 * scale * scale != state["tail.0.weight"].shape[0]:
        raise LBNetError(f"{source} is not an LBNet checkpoint: tail has no s^2*3 channels")
    desc = describe(variant, scale)
    if tuple(state["attention.atten.reduce.weight"].shape) != (desc.attn_dim, desc.token_dim):
        raise LBNetError(f"{source} is not an LBNet checkpoint: attention width does not fit")
    return desc


def build_model(state: dict[str, torch.Tensor], desc: ModelDescriptor, source: str) -> LBNet:
    """The eval-mode model of `desc` with `state` loaded strictly: a tensor of another shape or
    a missing or unexpected key is one line naming `source`."""
    model = LBNet(desc)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape: torch lists every one, 27 lines
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        raise LBNetError(
            f"{source} does not match {desc.variant} x{desc.scale}: {detail[:160] or exc}"
        ) from None
    wrong = result.missing_keys + result.unexpected_keys
    if wrong:
        raise LBNetError(
            f"{source} does not match {desc.variant} x{desc.scale}: {len(wrong)} missing or "
            f"unexpected keys, e.g. {wrong[0]!r}"
        )
    return model.eval()


def load_checkpoint(
    path: str | Path, *, scale: int | None = None, variant: str | None = None
) -> tuple[LBNet, ModelDescriptor]:
    """Build the eval-mode model from a checkpoint; `scale`/`variant` are checked, not applied."""
    path = Path(path)
    state = _read_state_dict(path)
    desc = infer_descriptor(state, str(path))
    if scale is not None and scale != desc.scale:
        raise LBNetError(f"{path} is {desc.variant} x{desc.scale}, but scale {scale} was asked for")
    if variant is not None and variant.lower() != desc.variant.lower():
        raise LBNetError(f"{path} is {desc.variant} x{desc.scale}, but variant {variant} was asked")
    model = build_model(state, desc, str(path))
    params = sum(p.numel() for p in model.parameters())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    model.descriptor = desc = describe(desc.variant, desc.scale, params=params, sha256=sha)
    return model.eval(), desc


def load_model(
    spec: str | Path, *, scale: int | None = None, variant: str | None = None
) -> tuple[LBNet, ModelDescriptor]:
    """A model name (`lbnet-t-x4`) or a checkpoint path -> eval-mode model and descriptor."""
    from lbnet_deploy.weights import get_named_model, is_model_name, resolve_weights

    path = Path(spec)
    if is_model_name(spec):
        path = resolve_weights(get_named_model(str(spec)).name)
    return load_checkpoint(path, scale=scale, variant=variant)
