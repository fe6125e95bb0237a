"""Model resolver: whatever the user named (model name, .pt, .onnx) -> a model file to run.

A checkpoint is exported on first use into the user cache, keyed by what determines the graph
(checkpoint hash, input size, batch, precision, attention form, tool version), so the second
run starts at once and needs no torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import Form
from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES
from lbnet_deploy.weights import (
    cache_root,
    get_named_model,
    is_model_name,
    resolve_weights,
    sha256_file,
)

log = logging.getLogger("lbnet_deploy")


def checkpoint_path(spec: str, scale: int | None = None) -> Path:
    """A checkpoint file for a model name or path (names resolve through the weights lookup).
    `scale`, where given, is checked against a name before anything is downloaded."""
    path = Path(spec)
    if not is_model_name(spec):
        if not path.is_file():
            raise LBNetError(f"checkpoint not found: {path}")
        return path
    named = get_named_model(spec)
    if scale is not None and scale != named.scale:
        raise LBNetError(f"{spec} is a x{named.scale} model, but --scale {scale} was given")
    return resolve_weights(named.name)


def cached_onnx_path(
    sha256: str, size_label: str, batch: str, precision: str, form: Form = "batched"
) -> Path:
    name = f"{sha256[:16]}-{size_label}-b{batch}-{precision}-{form}-v{__version__}.onnx"
    return cache_root() / "onnx" / name


def model_file(
    spec: str,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
    precision: str = "fp32",
    scale: int | None = None,
    form: Form = "batched",
) -> Path:
    """The ONNX file to run for `spec`; input_size/batch None = dynamic (used on export only).
    `scale` (the user's --scale) is checked before a first-use export, not after it; `form`
    is the attention layout a checkpoint is exported in (a file has its own)."""
    path = Path(spec)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise LBNetError(f"model file not found: {path}")
        return path
    if path.suffix in ENGINE_SUFFIXES:
        raise LBNetError(
            f"{path}: TensorRT engines run on the tensorrt backend (--backend tensorrt)"
        )
    ckpt = checkpoint_path(spec, scale)
    size_label = "dynamic" if input_size is None else "{}x{}".format(*input_size)
    cached = cached_onnx_path(sha256_file(ckpt), size_label, str(batch or "dyn"), precision, form)
    if cached.is_file():
        return cached
    if precision == "fp16":  # the FP32 graph (cached too), then `export --precision fp16`'s way
        from lbnet_deploy.export.fp16 import write_fp16

        fp32 = model_file(spec, input_size=input_size, batch=batch, scale=scale, form=form)
        log.info("converting %s to FP16 into %s (first use) ...", fp32.name, cached)
        write_fp16(fp32, cached)
        return cached
    if precision != "fp32":
        raise LBNetError(f"precision {precision!r} is made with `lbnet-deploy calibrate`")
    # first use: torch is needed once, to export
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_checkpoint

    log.info("exporting %s (%s, %s) to %s (first use) ...", ckpt.name, size_label, form, cached)
    model, _ = load_checkpoint(ckpt, scale=scale)  # checked before the export, not after
    export_onnx(model, cached, ExportOptions(input_size=input_size, batch=batch, form=form))
    return cached


def engine_file(
    spec: str, *, tile: int, batch: int, precision: str = "fp32", scale: int | None = None
) -> Path:
    """The TensorRT engine to run for `spec`: an engine file as given, else one built on first
    use from `spec`'s ONNX graph (a model name or checkpoint is exported at tile x tile first)
    and cached, keyed by the graph's hash, shape, TensorRT version and GPU architecture."""
    path = Path(spec)
    if path.suffix in ENGINE_SUFFIXES:
        return path
    from lbnet_deploy.export.engine_build import BuildOptions, build_engine, engine_shape
    from lbnet_deploy.export.onnx_io import graph_facts
    from lbnet_deploy.runtime.cuda_layer import load_cuda
    from lbnet_deploy.runtime.trt_common import require_tensorrt

    trt_version, gpu = require_tensorrt(), load_cuda().facts(0)  # before a download or export
    onnx = model_file(spec, input_size=(tile, tile), batch=batch, precision=precision, scale=scale)
    dims = graph_facts(onnx).dims
    # a fixed graph keeps its own shape; a dynamic one is built at tile x tile, batch `batch`
    options = BuildOptions(
        input_size=(tile, tile) if None in dims[2:] else None,
        batch=batch if dims[0] is None else None,
    )
    shape = "x".join(str(d) for d in engine_shape(dims, options))
    # our version too: a change to how we build must not reuse an engine built the old way
    key = f"{sha256_file(onnx)[:16]}-{shape}-trt{trt_version}-v{__version__}"
    cached = cache_root() / "engines" / f"{key}-sm{gpu.compute_capability}.plan"
    if not cached.is_file():
        log.info("building a TensorRT engine for %s into %s (first use) ...", onnx.name, cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        build_engine(onnx, cached, options)
    return cached
