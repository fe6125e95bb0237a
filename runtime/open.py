"""Backend choice -> runner: the one place that maps `--backend` names to runner classes."""

from __future__ import annotations

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.resolve import ENGINE_SUFFIXES, engine_file, model_file

from .backend import Runner
from .onnxrt import OnnxRuntimeRunner

# --backend name -> onnxruntime providers (None: the PyTorch reference)
BACKENDS: dict[str, tuple[str, ...] | None] = {
    "ort": ("cpu",),
    "ort-cuda": ("cuda",),
    "ort-tensorrt": ("tensorrt", "cuda"),
    "torch": None,
    "tensorrt": None,  # native engines: runtime/engine.py
}


def open_runner(
    spec: str,
    backend: str = "ort",
    threads: int | None = None,
    *,
    tile: int | None = None,
    batch: int = 1,
    precision: str | None = None,
    scale: int | None = None,
) -> Runner:
    """A runner for a model name, checkpoint, .onnx or engine file on the chosen backend.

    Checkpoints run on ONNX Runtime through a dynamic-size graph exported on first use and
    cached; the runtime itself never needs torch unless `backend="torch"`. On "tensorrt"
    (chosen by itself for engine files) names, checkpoints and .onnx files become a fixed
    `tile` x `tile`, batch `batch` engine, built on first use and cached. `precision` ("fp16")
    picks the graph made from a name or checkpoint; a file has its own.
    """
    if spec.startswith("bicubic"):  # "bicubic-x4": the interpolation baseline
        from .bicubic import BicubicRunner

        factor = spec.rpartition("x")[2]
        if not factor.isdigit():
            raise LBNetError(f"name the bicubic baseline's scale, e.g. bicubic-x4, not {spec!r}")
        return BicubicRunner(int(factor))
    if backend not in BACKENDS:
        raise LBNetError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if spec.endswith(ENGINE_SUFFIXES) and backend == "ort":
        backend = "tensorrt"  # the default backend cannot run an engine; the user meant this
    if precision is not None:
        if spec.endswith((".onnx", *ENGINE_SUFFIXES)):
            raise LBNetError(f"{spec} has its own precision: --precision is for names and .pt")
        if precision not in ("fp32", "fp16"):
            raise LBNetError(f"precision must be fp32 or fp16 (INT8: `calibrate`), not {precision}")
        if backend == "torch" and precision != "fp32":
            raise LBNetError("the torch backend is the FP32 reference")
    precision = precision or "fp32"
    if backend == "tensorrt":
        if (tile is not None and tile < 1) or batch < 1:
            raise LBNetError(f"tile and batch must be at least 1, got {tile} and {batch}")
        from .engine import TensorRTRunner
        from .upscaler import DEFAULT_TILE

        engine = engine_file(
            spec, tile=tile or DEFAULT_TILE, batch=batch, precision=precision, scale=scale
        )
        return TensorRTRunner(engine)
    providers = BACKENDS[backend]
    if providers is None:
        from .torch_ref import TorchRunner

        if spec.endswith(".onnx"):
            raise LBNetError("the torch backend runs checkpoints or model names, not .onnx files")
        return TorchRunner(spec, threads=threads)
    graph = model_file(spec, precision=precision, scale=scale)
    return OnnxRuntimeRunner(graph, providers=providers, threads=threads)
