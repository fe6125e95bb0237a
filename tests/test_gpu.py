"""Checks that need a CUDA GPU: they run as-is on a user's GPU machine and skip here.

Each is gated on what it uses: the PyTorch and ONNX Runtime checks on torch.cuda (onnxruntime-gpu
lists CUDAExecutionProvider even without a GPU, so the provider list is checked on top), the
TensorRT checks on our own probes (`require_tensorrt`, the CUDA layer's `load_cuda`), so they run
where TensorRT and cuda-python or pycuda work even if the installed torch has no CUDA (a Jetson
with a CPU-only torch), and skip with the probe's one-line reason elsewhere.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner

from .conftest import needs_data, needs_weights, real_checkpoint, set5_lr

pytestmark = [pytest.mark.gpu, needs_weights, needs_data]
needs_torch_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def _tensorrt_missing() -> str | None:
    """Why the TensorRT path cannot run here (TensorRT, the CUDA layer, a device), or None."""
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.cuda_layer import load_cuda
    from lbnet_deploy.runtime.trt_common import require_tensorrt

    try:
        require_tensorrt()
        load_cuda()
    except LBNetError as exc:
        return str(exc)
    return None


def lr_batch() -> np.ndarray:
    img = set5_lr(4, "head")[:37, :29]  # H*W not a multiple of 16
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def cpu_reference(x: np.ndarray) -> np.ndarray:
    from lbnet_deploy.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(real_checkpoint("LBNet-T_X4.pt"))
    with torch.no_grad():
        return model.set_ops("reference")(torch.from_numpy(x)).numpy()


@needs_torch_cuda
def test_torch_cuda_fp32_and_fp16_match_cpu() -> None:
    from lbnet_deploy.model.checkpoint import load_checkpoint

    x = lr_batch()
    ref = cpu_reference(x)
    model, _ = load_checkpoint(real_checkpoint("LBNet-T_X4.pt"))
    model = model.set_ops("static").cuda()
    with torch.no_grad():
        fp32 = model(torch.from_numpy(x).cuda()).cpu().numpy()
        fp16 = model.half()(torch.from_numpy(x).cuda().half()).float().cpu().numpy()
    # Bounds not yet measured on a GPU (none in the session that wrote this): TF32 convolutions
    # may be on; the FP16 bound is 4x the worst uint8 change the FP16 graph shows on the CPU.
    assert np.abs(fp32 - ref).max() <= 0.05
    assert np.isfinite(fp16).all() and np.abs(fp16 - ref).max() <= 4.0


@needs_torch_cuda
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime without the CUDA provider",
)
def test_ort_cuda_matches_pytorch(export_cache) -> None:
    runner = OnnxRuntimeRunner(export_cache("LBNet-T_X4.pt", None), providers=("cuda",))
    x = lr_batch()
    assert np.abs(runner.infer(x) - cpu_reference(x)).max() <= 0.05


TENSORRT_MISSING = _tensorrt_missing()  # probed once, at collection


@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=str(TENSORRT_MISSING))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_passes_parity(export_cache, tmp_path, precision) -> None:
    """The user's path: build an engine from our export, then `parity` against PyTorch with the
    precision's tolerances (the CPU-measured ones; not yet run on a GPU by us)."""
    import onnx

    from lbnet_deploy.cli import main
    from lbnet_deploy.export.fp16 import to_fp16

    graph = export_cache("LBNet-T_X4.pt", (64, 64))
    if precision == "fp16":
        half = tmp_path / "fp16.onnx"
        onnx.save(to_fp16(onnx.load(graph), ["LayerNormalization"]), half)
        graph = half
    engine = tmp_path / f"{precision}.plan"
    assert main(["build", str(graph), "-o", str(engine)]) == 0
    ref = str(real_checkpoint("LBNet-T_X4.pt"))
    assert main(["parity", str(engine), "--reference", ref, "--backend", "tensorrt"]) == 0
