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

from pathlib import Path

# the cache format itself is the runtime's (the engine builder restamps caches with it)
from lbnet_deploy.runtime.trt_common import cache_text, read_cache, trt_version_number


def write_cache(scales: dict[str, float], path: str | Path, trt_version: str = "10.3.0") -> None:
    """Write `scales` (tensor -> scale) as a TensorRT calibration cache."""
    Path(path).write_text(cache_text(scales, trt_version), encoding="ascii")


__all__ = ["cache_text", "read_cache", "trt_version_number", "write_cache"]
