"""Models and runners to time: our export, the plain export, eager PyTorch, CUDA variants.

Backends (names used by `bench --backend`):
  ort              our fixed-size export (`export --input-size HxW`) on ONNX Runtime CPU
  ort-plain        the straightforward port (nn.Unfold/Fold + loop over runs) exported with a
                   plain `torch.onnx.export(dynamo=True)`: stand-in for exporting the official code
  torch            our module in eager PyTorch (static ops), CPU
  torch-reference  the straightforward port in eager PyTorch, CPU: stand-in for the official code
  ort-cuda         our export on ONNX Runtime's CUDA provider (GPU only)
  torch-cuda       the straightforward port in eager PyTorch on CUDA (GPU only), FP32 or FP16
  tensorrt         our export built into a fixed-size TensorRT engine (cached), any precision
                   (GPU with TensorRT only)

`recursions` other than the trained 3 is for timing the paper's TM-k rows only (TM-k applies each
TransBlock k+1 times); 0 removes the recursive transformer entirely (the paper's "without
transformer" row), not just its blocks: unfold -> fold alone is not the identity (it sums 9
entries per pixel), so keeping it would time a different network. The 3x3 convs c2/c3 that
follow each stage stay (the paper does not say it removed them; they are ~1% of the MACs).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts
from lbnet_deploy.runtime.backend import check_batch, describe_facts
from lbnet_deploy.weights import cache_root

BACKENDS = ("ort", "ort-plain", "torch", "torch-reference", "ort-cuda", "torch-cuda", "tensorrt")
CUDA_BACKENDS = ("ort-cuda", "torch-cuda")
TRAINED_RECURSIONS = 3
# LR sizes of the scaling curve; whole-image 384 and 512 show where memory (and time) runs out
SCALING_WHOLE = (32, 48, 64, 96, 128, 160, 192, 256, 384, 512)
SCALING_TILED = (128, 192, 256, 384, 512)


def data_dir() -> Path:
    """Where bench finds its default images (Set5) and calibration photos (SunHays80):
    $LBNET_DATA_DIR, else ./data. Installed code never assumes a checkout's layout."""
    return Path(os.environ.get("LBNET_DATA_DIR", "data"))


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def skip_reason(backend: str, precision: str) -> str | None:
    """Why a (backend, precision) cannot run here, or None when it can."""
    if backend not in BACKENDS:
        raise LBNetError(f"unknown bench backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend in CUDA_BACKENDS and not cuda_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if backend == "tensorrt":
        from lbnet_deploy.runtime.cuda_layer import load_cuda
        from lbnet_deploy.runtime.trt_common import require_tensorrt

        try:
            require_tensorrt()
            load_cuda()
        except LBNetError as exc:
            return str(exc)
    if backend == "ort-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider"
    if precision == "fp16" and backend in ("torch", "torch-reference"):
        return "eager FP16 is timed on CUDA only (CPU PyTorch has no fast FP16 path)"
    if precision != "fp32" and backend == "ort-plain":
        return "the plain export is a comparison point in FP32 only"
    if precision == "int8" and not backend.startswith(("ort", "tensorrt")):
        return "INT8 is a Q/DQ ONNX graph: timed on ONNX Runtime and TensorRT only"
    if precision == "int8" and not calibration_images().is_dir():
        return f"no calibration photos at {calibration_images()} (set LBNET_CALIB_DIR)"
    return None


def calibration_images() -> Path:
    """Photos `calibrate` uses for bench's INT8 graphs: $LBNET_CALIB_DIR, else SunHays80 in
    `data_dir()` (never an evaluation set)."""
    return Path(os.environ.get("LBNET_CALIB_DIR", data_dir() / "SunHays80"))


def build_model(spec: str, recursions: int | None = None, random_weights: bool = False) -> Any:
    """Eval-mode LBNet for `spec`, with `recursions` TransBlock applications per stage.

    random_weights builds the variant untrained (timing only, for checkpoints we lack).
    """
    from torch import Tensor

    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.blocks import TransBlock
    from lbnet_deploy.model.checkpoint import load_model
    from lbnet_deploy.model.lbnet import LBNet

    class TimingLBNet(LBNet):
        """LBNet whose transformer stages vanish at recursions=0 (the paper's ablation)."""

        def transformer(self, block: TransBlock, x: Tensor) -> Tensor:
            if self.descriptor.recursions == 0:
                return x
            return super().transformer(block, x)

    if random_weights:
        from lbnet_deploy.weights import get_named_model

        named = get_named_model(spec)
        desc = describe(named.variant, named.scale, sha256=f"random-{named.name}")
        state = None
    else:
        trained, desc = load_model(spec)
        state = trained.state_dict()
    if recursions is not None:
        if recursions < 0:
            raise LBNetError(f"recursions must be >= 0, got {recursions}")
        desc = dataclasses.replace(desc, recursions=recursions)
    model = TimingLBNet(desc)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def _bench_cache() -> Path:
    return cache_root() / "bench"


def bench_onnx(
    spec: str,
    size: tuple[int, int],
    batch: int = 1,
    recursions: int = TRAINED_RECURSIONS,
    plain: bool = False,
    precision: str = "fp32",
    random_weights: bool = False,
) -> Path:
    """A fixed-size ONNX file for one configuration, exported once and cached.

    The shipped configuration (recursions 3, our ops, fp32) is the same file `upscale` and
    `export` use (resolve.model_file's cache); the others live in `<cache>/bench/`.
    """

    from lbnet_deploy.resolve import checkpoint_path, model_file
    from lbnet_deploy.weights import sha256_file

    if precision not in ("fp32", "fp16", "int8"):
        raise LBNetError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    shipped = recursions == TRAINED_RECURSIONS and not plain and not random_weights
    if precision != "fp32":
        # made from the FP32 graph as a user would: `export --precision fp16`'s conversion,
        # `calibrate`'s defaults on the calibration photos
        fp32 = bench_onnx(spec, size, batch, recursions, plain, "fp32", random_weights)
        out = fp32.with_name(f"{fp32.stem}-{precision}.onnx")
        if out.is_file():
            return out
        if precision == "fp16":
            from lbnet_deploy.export.fp16 import write_fp16

            write_fp16(fp32, out)
        else:
            from lbnet_deploy.calibration.run import calibrate_file

            calibrate_file(fp32, calibration_images(), out)
        return out
    if shipped:
        return model_file(spec, input_size=size, batch=batch)
    key = f"random-{spec}" if random_weights else sha256_file(checkpoint_path(spec))[:16]
    ops = "plain" if plain else "ours"
    name = f"{key}-{size[0]}x{size[1]}-b{batch}-r{recursions}-{ops}-v{__version__}.onnx"
    out = _bench_cache() / name
    if not out.is_file():
        from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx

        model = build_model(spec, recursions, random_weights)
        export_onnx(model, out, ExportOptions(input_size=size, batch=batch, reference_ops=plain))
    return out


class TorchTimingRunner:
    """Eager PyTorch on CPU or CUDA in FP32/FP16; `infer` returns after the device is done."""

    def __init__(
        self,
        model: Any,
        ops: str,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        import torch

        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.set_ops(ops).to(self.device, self.dtype).eval()
        self.descriptor = model.descriptor
        self.ops, self.precision = ops, precision

    input_size = property(lambda self: None)
    max_batch = property(lambda self: None)
    scale = property(lambda self: self.descriptor.scale)

    @property
    def model_facts(self) -> ModelFacts:
        return ModelFacts(self.descriptor, self.precision)

    def describe(self) -> dict[str, object]:
        return describe_facts(self.model_facts, f"torch-{self.ops}", device=str(self.device))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(check_batch(batch, None)).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out.float().cpu().numpy()

    def device_peak_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated() / 2**20

    def reset_device_peak(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.reset_peak_memory_stats()


def open_bench_runner(
    backend: str,
    spec: str,
    size: tuple[int, int],
    *,
    batch: int = 1,
    precision: str = "fp32",
    recursions: int = TRAINED_RECURSIONS,
    threads: int | None = None,
    random_weights: bool = False,
) -> tuple[Any, Path | None]:
    """(runner, the ONNX file it runs or None for torch) for one configuration.

    The product's backends (`runtime.registry`: ort, ort-cuda, tensorrt) are opened by their
    registry entry, as `upscale` opens them, on the graph of this configuration (an engine built
    from it for tensorrt); the plain export and eager PyTorch are comparison points of bench."""
    from lbnet_deploy.runtime.registry import BACKENDS as PRODUCT

    reason = skip_reason(backend, precision)
    if reason:
        raise LBNetError(f"{backend} {precision}: {reason}")
    if backend in PRODUCT and PRODUCT[backend].artifact != "checkpoint":
        entry = PRODUCT[backend]
        path = bench_onnx(spec, size, batch, recursions, False, precision, random_weights)
        if entry.artifact == "engine":
            from lbnet_deploy.resolve import engine_file

            return entry.open(engine_file(str(path), tile=size[0], batch=batch), threads), path
        return entry.open(path, threads), path
    if backend == "ort-plain":
        path = bench_onnx(spec, size, batch, recursions, True, precision, random_weights)
        return PRODUCT["ort"].open(path, threads), path
    model = build_model(spec, recursions, random_weights)
    ops = "static" if backend == "torch" else "reference"
    device = "cuda" if backend == "torch-cuda" else "cpu"
    return TorchTimingRunner(model, ops, device, precision, threads), None


def threads_default() -> int:
    from .machine import cpus_available

    return int(os.environ.get("LBNET_BENCH_THREADS", 0)) or cpus_available()
