"""Checks that need a CUDA GPU: they run as-is on a user's GPU machine and skip here.

Each is gated on what it uses: the PyTorch and ONNX Runtime checks on torch.cuda (onnxruntime-gpu
lists CUDAExecutionProvider even without a GPU, so the provider list is checked on top), the
TensorRT checks on our own probes (`require_tensorrt`, the CUDA layer's `load_cuda`), so they run
where TensorRT and cuda-python or pycuda work even if the installed torch has no CUDA (a Jetson
with a CPU-only torch), and skip with the probe's one-line reason elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
from lbnet_deploy.runtime.trt_common import EngineLayer

from .conftest import DATA, needs_data, needs_photos, needs_weights, real_checkpoint, set5_lr

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
    """The torch backend on CUDA (our static ops) against the CPU reference. Bounds from the
    device check on an H200 (Set5 x4 whole images): FP32 0.0003 with TF32 off, which the
    runner ensures (0.21 with torch's default TF32 convolutions); FP16 0.90."""
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    x = lr_batch()
    ref = cpu_reference(x)
    torch.backends.cudnn.allow_tf32 = True  # torch's default: the runner must turn it off
    checkpoint = real_checkpoint("LBNet-T_X4.pt")
    fp32 = TorchRunner(checkpoint, device="cuda", ops="static").infer(x)
    fp16 = TorchRunner(checkpoint, device="cuda", ops="static", precision="fp16").infer(x)
    assert torch.backends.cudnn.allow_tf32  # put back after the call
    assert np.abs(fp32 - ref).max() <= 0.01
    assert np.isfinite(fp16).all() and np.abs(fp16 - ref).max() <= 2.0


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
needs_tensorrt = pytest.mark.skipif(TENSORRT_MISSING is not None, reason=str(TENSORRT_MISSING))


def graph_of(export_cache, tmp_path: Path, precision: str) -> Path:
    """Our 64x64 LBNet-T x4 graph in `precision`, made as a user makes it: `export` (the FP16
    conversion `--precision fp16` does), `calibrate` with its defaults on SunHays80 for INT8."""
    from lbnet_deploy.cli import main
    from lbnet_deploy.export.fp16 import write_fp16

    graph = export_cache("LBNet-T_X4.pt", (64, 64))
    out = tmp_path / f"{precision}.onnx"
    if precision == "fp16":
        write_fp16(graph, out)
    elif precision == "int8":
        assert (
            main(["calibrate", str(graph), "--images", str(DATA / "SunHays80"), "-o", str(out)])
            == 0
        )
    else:
        return graph
    return out


def engine_of(graph: Path, engine: Path) -> Path:
    from lbnet_deploy.cli import main

    assert main(["build", str(graph), "-o", str(engine)]) == 0
    return engine


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", pytest.param("int8", marks=needs_photos)])
def test_tensorrt_engine_passes_parity(export_cache, tmp_path, precision, caplog) -> None:
    """The user's path: build an engine from our export (FP16: converted; INT8: the calibrated
    Q/DQ graph), then `parity` against PyTorch with the precision's tolerances (the CPU-measured
    ones; not yet run on a GPU by us), with and without CUDA graphs: with them, the runner must
    replay captured graphs (a capture that fell back, with its warning, would pass parity
    enqueuing each batch and prove nothing about graphs)."""
    from lbnet_deploy.cli import main
    from lbnet_deploy.runtime.engine import TensorRTRunner

    engine = engine_of(graph_of(export_cache, tmp_path, precision), tmp_path / "e.plan")
    ref = str(real_checkpoint("LBNet-T_X4.pt"))
    for graphs in (True, False):
        runner = TensorRTRunner(engine, cuda_graph=graphs)
        try:
            assert runner.cuda_graph == graphs, caplog.text  # the fallback's warning, if any
        finally:
            runner.close()
        caplog.clear()
        options = [] if graphs else ["--no-cuda-graph"]
        with caplog.at_level(logging.WARNING, logger="lbnet_deploy"):
            argv = ["parity", str(engine), "--reference", ref, "--backend", "tensorrt", *options]
            assert main(argv) == 0
        assert "no CUDA graph" not in caplog.text


def layernorm_problems(layers: Iterable[EngineLayer], graph: onnx.ModelProto) -> list[str]:
    """Where an FP16 engine runs a LayerNormalization of `graph` below FP32: each one must be
    in some engine layer, and each layer holding it must read FP32, or hold the node that makes
    its FP32 input (the Cast of our FP16 graph, fused into the kernel by Myelin)."""
    producer = {out: node.name for node in graph.graph.node for out in node.output}
    norms = {
        n.name: producer.get(n.input[0])
        for n in graph.graph.node
        if n.op_type == "LayerNormalization"
    }
    problems = [] if norms else ["the graph has no LayerNormalization"]
    for norm, source in norms.items():
        holding = [layer for layer in layers if norm in layer.onnx_nodes]
        if not holding:
            problems.append(f"{norm}: in no engine layer")
        for layer in holding:
            if set(layer.inputs) != {"fp32"} and source not in layer.onnx_nodes:
                problems.append(f"{norm}: layer {layer.name!r} reads {layer.inputs}")
    return problems


def int8_conv_problems(layers: Iterable[EngineLayer], graph: onnx.ModelProto) -> list[str]:
    """Where an INT8 engine runs a quantized Conv of `graph` (data and weights through
    DequantizeLinear) other than in INT8: each one's engine layer must read INT8 data or hold
    INT8 weights."""
    producer = {out: node for node in graph.graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    convs = [
        n.name for n in graph.graph.node
        if n.op_type == "Conv" and dequantized(n.input[0]) and dequantized(n.input[1])
    ]  # fmt: skip
    problems = [] if convs else ["the graph has no quantized Conv"]
    for conv in convs:
        holding = [layer for layer in layers if conv in layer.onnx_nodes]
        if not holding:
            problems.append(f"{conv}: in no engine layer")
        for layer in holding:
            if "int8" not in layer.inputs and layer.weights != "int8":
                problems.append(
                    f"{conv}: layer {layer.name!r} reads {layer.inputs}, weights {layer.weights}"
                )
    return problems


@needs_tensorrt
@pytest.mark.parametrize(
    ("precision", "problems"),
    [("fp16", layernorm_problems), pytest.param("int8", int8_conv_problems, marks=needs_photos)],
)
def test_tensorrt_keeps_each_layer_in_the_graphs_precision(
    export_cache, tmp_path, precision, problems
) -> None:
    """TensorRT's engine inspector, layer by layer: in the FP16 engine the LayerNorms run in
    FP32 (the islands the FP16 graph keeps; TensorRT warns that FP16 LayerNorm overflows), in
    the INT8 engine the quantized convolutions run in INT8."""
    from lbnet_deploy.runtime.engine import TensorRTRunner

    graph = graph_of(export_cache, tmp_path, precision)
    runner = TensorRTRunner(engine_of(graph, tmp_path / "e.plan"), cuda_graph=False, streams=1)
    try:
        layers = runner.layers()
    finally:
        runner.close()
    found = problems(layers, onnx.load(graph))
    assert not found, "\n".join(found[:20])
