"""Backend choice -> runner: the one place that maps `--backend` names to runner classes."""

from __future__ import annotations

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.resolve import model_file

from .backend import Runner
from .onnxrt import OnnxRuntimeRunner

# --backend name -> onnxruntime providers (None: the PyTorch reference)
BACKENDS: dict[str, tuple[str, ...] | None] = {
    "ort": ("cpu",),
    "ort-cuda": ("cuda",),
    "ort-tensorrt": ("tensorrt", "cuda"),
    "torch": None,
    # "tensorrt": a native engine runner (runtime/tensorrt.py) slots in here in a later issue
}


def open_runner(spec: str, backend: str = "ort", threads: int | None = None) -> Runner:
    """A runner for a model name, checkpoint or .onnx file on the chosen backend.

    Checkpoints run on ONNX Runtime through a dynamic-size graph exported on first use and
    cached; the runtime itself never needs torch unless `backend="torch"`.
    """
    if spec.startswith("bicubic"):  # "bicubic-x4": the interpolation baseline
        from .bicubic import BicubicRunner

        scale = spec.rpartition("x")[2]
        if not scale.isdigit():
            raise LBNetError(f"name the bicubic baseline's scale, e.g. bicubic-x4, not {spec!r}")
        return BicubicRunner(int(scale))
    if backend not in BACKENDS:
        raise LBNetError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    providers = BACKENDS[backend]
    if providers is None:
        from .torch_ref import TorchRunner

        if spec.endswith(".onnx"):
            raise LBNetError("the torch backend runs checkpoints or model names, not .onnx files")
        return TorchRunner(spec, threads=threads)
    return OnnxRuntimeRunner(model_file(spec), providers=providers, threads=threads)
