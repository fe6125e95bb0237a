"""Model resolver: whatever the user named (model name, .pt, .onnx) -> a model file to run.

A checkpoint is exported on first use into the user cache, keyed by what determines the graph
(checkpoint hash, input size, batch, precision, tool version), so the second run starts at once
and needs no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lbnet_deploy import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.weights import cache_root, get_named_model, resolve_weights, sha256_file

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def checkpoint_path(spec: str) -> Path:
    """A checkpoint file for a model name or path (names resolve through the weights lookup)."""
    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.is_file():
            raise LBNetError(f"checkpoint not found: {path}")
        return path
    return resolve_weights(get_named_model(spec).name)


def cached_onnx_path(sha256: str, size_label: str, batch: str, precision: str) -> Path:
    name = f"{sha256[:16]}-{size_label}-b{batch}-{precision}-v{__version__}.onnx"
    return cache_root() / "onnx" / name


def model_file(
    spec: str,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
    precision: str = "fp32",
) -> Path:
    """The ONNX file to run for `spec`; input_size/batch None = dynamic (used on export only)."""
    path = Path(spec)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise LBNetError(f"model file not found: {path}")
        return path
    if path.suffix in ENGINE_SUFFIXES:
        raise LBNetError(f"{path}: TensorRT engines need the TensorRT backend (not available yet)")
    ckpt = checkpoint_path(spec)
    size_label = "dynamic" if input_size is None else "{}x{}".format(*input_size)
    cached = cached_onnx_path(sha256_file(ckpt), size_label, str(batch or "dyn"), precision)
    if cached.is_file():
        return cached
    if precision != "fp32":
        raise LBNetError(f"precision {precision!r} is made with `lbnet-deploy export`/`calibrate`")
    # first use: torch is needed once, to export
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_checkpoint

    print(f"exporting {ckpt.name} ({size_label}) to {cached} (first use) ...", file=sys.stderr)
    model, _ = load_checkpoint(ckpt)
    export_onnx(model, cached, ExportOptions(input_size=input_size, batch=batch))
    return cached
