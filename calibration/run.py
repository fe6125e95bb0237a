"""`lbnet-deploy calibrate`: FP32 ONNX + a folder of photos -> explicit-quantization INT8 ONNX.

Ranges from seeded LR crops of the photos; Q/DQ placed as TensorRT places them; the layers
with the most output error per multiply-add (measured on held-out crops of the same photos,
never on an evaluation set) stay float until `max_psnr_drop` holds; a TensorRT calibration
cache with the same ranges for 10.x users.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.onnx_io import load_onnx, save_atomic, tensor_names
from lbnet_deploy.metadata import from_metadata, model_facts
from lbnet_deploy.runtime.backend import to_range

from .data import calibration_crops, graphics_pairs, holdout_pairs
from .quantize import MixedResult, Quantizer, quantize_mixed
from .trt_cache import write_cache

DEFAULT_CROP = (64, 64)


@dataclass
class CalibrationReport:
    path: Path
    result: MixedResult
    trt_cache: Path | None


METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def calibrate_file(
    model: str | Path,
    images: str | Path,
    output: str | Path,
    *,
    method: str = "MinMax",
    samples: int = 32,
    max_psnr_drop: float = 0.05,
    seed: int = 0,
    trt_cache: str | Path | None = None,
    trt_version: str = "10.3.0",
) -> CalibrationReport:
    if not 0 <= max_psnr_drop < float("inf"):  # also NaN: all float holds any limit >= 0
        raise LBNetError(f"max_psnr_drop must be a number of dB >= 0, got {max_psnr_drop}")
    graph = load_onnx(model)
    facts = model_facts(from_metadata({p.key: p.value for p in graph.metadata_props}), str(model))
    if facts.precision != "fp32":
        raise LBNetError(
            f"{model} is not an lbnet-deploy FP32 graph ({facts.precision}): calibrate that"
        )
    scale = facts.scale
    crop = facts.input_size or DEFAULT_CROP
    # in the graph's own range: a unit graph (lbnet.io) is calibrated on 0..1 crops
    crops = to_range(calibration_crops(images, scale, crop, samples, seed), facts.peak)
    quantizer = Quantizer(graph, crops, method)
    # onnxruntime.quantization logs "consider pre-processing" through the root logger on every
    # call; our graphs are already shape-inferred and folded, so the advice does not apply
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        held_out = holdout_pairs(images, scale, size=crop, count=16, seed=seed + 1)
        graphics = graphics_pairs(scale, crop, count=8, seed=seed + 2)
        result = quantize_mixed(quantizer, held_out, scale, max_psnr_drop, graphics=graphics)
        # read from the calibration's range file, before the work folder holding it goes
        scales = quantizer.activation_scales() if trt_cache is not None else {}
    finally:
        root.setLevel(level)
        shutil.rmtree(quantizer.workdir, ignore_errors=True)
    onnx.checker.check_model(result.graph)
    save_atomic(result.graph, Path(output))
    cache = None
    if trt_cache is not None:
        cache = Path(trt_cache)
        # every range calibration measured (implicit INT8 runs a layer in INT8 only where all
        # its tensors have one), by the FP32 graph's names, which TensorRT matches the cache to
        # (names the Q/DQ rewrite made up, e.g. `sr_QuantizeLinear_Input`, would be ignored)
        fp32_names = tensor_names(graph)
        write_cache({k: v for k, v in scales.items() if k in fp32_names}, cache, trt_version)
    return CalibrationReport(Path(output), result, cache)
