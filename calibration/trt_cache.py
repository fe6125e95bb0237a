"""TensorRT calibration cache (the text file `IInt8EntropyCalibrator2` reads and writes).

Only for TensorRT < 10.12 builds from the FP32 graph with the INT8 flag (implicit quantization;
DEPLOY.md): the QDQ graph is the main path. Format, as TensorRT writes it and as NVIDIA's TAO /
pytorch-quantization exporters emit it:

    TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2
    <tensor name>: <8 hex digits: the float32 scale, big-endian>

where NV_TENSORRT_VERSION is major*1000+minor*100+patch before 10 and major*10000+minor*100+patch
from 10 on (8.6.1 -> 8601, 10.3.0 -> 100300); the scale is amax / 127. Written by hand because
no installable package writes it without TensorRT itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.errors import LBNetError

ALGORITHM = "EntropyCalibration2"


def trt_version_number(version: str) -> int:
    """'10.3.0' -> 100300, '8.6.1' -> 8601 (TensorRT's NV_TENSORRT_VERSION)."""
    try:
        major, minor, patch = (int(p) for p in ([*version.split("."), "0", "0"])[:3])
    except ValueError:
        raise LBNetError(f"TensorRT version must look like 10.3.0, got {version!r}") from None
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def activation_scales(qdq_graph: onnx.ModelProto) -> dict[str, float]:
    """FP32 tensor name -> INT8 scale, from every QuantizeLinear with a per-tensor scale."""
    inits = {i.name: i for i in qdq_graph.graph.initializer}
    scales: dict[str, float] = {}
    for node in qdq_graph.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        if scale.size == 1:
            scales[node.input[0]] = float(scale.reshape(()))
    return scales


def write_cache(scales: dict[str, float], path: str | Path, trt_version: str = "10.3.0") -> None:
    """Write `scales` (tensor -> scale) as a TensorRT calibration cache."""
    Path(path).write_text(cache_text(scales, trt_version), encoding="ascii")


def cache_text(scales: dict[str, float], trt_version: str) -> str:
    """The cache's text for `trt_version`: TensorRT skips a cache whose header names another
    version (NVIDIA/TensorRT#1378, #3612), so an engine build restamps ours with its own."""
    lines = [f"TRT-{trt_version_number(trt_version)}-{ALGORITHM}"]
    for name, scale in scales.items():
        if not np.isfinite(scale) or scale <= 0:
            raise LBNetError(f"calibration scale of {name!r} is {scale}: must be positive")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def read_cache(path: str | Path) -> tuple[int, dict[str, float]]:
    """(TensorRT version number, tensor -> scale) from a calibration cache."""
    lines = Path(path).read_text(encoding="ascii").splitlines()
    head = lines[0].split("-") if lines else []
    if len(head) != 3 or head[0] != "TRT" or not head[1].isdigit():
        raise LBNetError(f"{path} is not a TensorRT calibration cache (header {lines[:1]})")
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        if not name or len(value) != 8:
            raise LBNetError(f"{path}: malformed cache line {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return int(head[1]), scales
