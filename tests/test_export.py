"""ONNX export: TensorRT-parsable form, self-description, and parity with PyTorch on real images."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.trt_ops import BANNED_OPS, TRT10_SUPPORTED_OPS, check_trt_parsable
from lbnet_deploy.model.checkpoint import load_checkpoint

from .conftest import CHECKPOINTS, WEIGHTS, needs_data, needs_weights, set5_lr

pytestmark = [needs_weights, needs_data]

# (name, crop): 48x48 has H*W % 16 == 0, 37x29 leaves a short run, 3x5 is below one run
CROPS = [("baby", (48, 48)), ("butterfly", (37, 29)), ("woman", (3, 5))]


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"lr": x})[0]


def reference(ckpt: str, x: np.ndarray) -> np.ndarray:
    """The straightforward port (nn.Unfold/Fold, loop over runs): the oracle for our rewrites."""
    model, _ = load_checkpoint(WEIGHTS / ckpt)
    with torch.no_grad():
        return model.set_ops("reference")(torch.from_numpy(x)).numpy()


def crop(scale: int, name: str, hw: tuple[int, int]) -> np.ndarray:
    img = set5_lr(scale, name)[: hw[0], : hw[1]]
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_dynamic_export_matches_pytorch_on_set5(ckpt: str, export_cache) -> None:
    path = export_cache(ckpt, None)
    scale = CHECKPOINTS[ckpt][1]
    for name, hw in CROPS:
        x = crop(scale, name, hw)
        out = run_onnx(path, x)
        assert out.shape == (1, 3, scale * hw[0], scale * hw[1])
        assert np.abs(out - reference(ckpt, x)).max() <= 0.01, (name, hw)


def test_dynamic_export_takes_a_batch(export_cache) -> None:
    x = np.concatenate([crop(4, "bird", (20, 24)), crop(4, "head", (20, 24))])
    out = run_onnx(export_cache("LBNet-T_X4.pt", None), x)
    assert np.abs(out - reference("LBNet-T_X4.pt", x)).max() <= 0.01


def test_full_set5_image_not_multiple_of_16(export_cache) -> None:
    """head x4 is 70x70: 4900 tokens, runs of 306 and a short run of 4."""
    x = crop(4, "head", (70, 70))
    out = run_onnx(export_cache("LBNet-T_X4.pt", None), x)
    assert np.abs(out - reference("LBNet-T_X4.pt", x)).max() <= 0.01


@pytest.mark.parametrize(("hw", "softmax"), [((64, 64), 6), ((37, 29), 12)])
def test_fixed_export_form(hw: tuple[int, int], softmax: int, export_cache) -> None:
    """One MatMul->Softmax->MatMul per TransBlock application when H*W % 16 == 0; one more
    (the short run) otherwise."""
    path = export_cache("LBNet-X2.pt", hw)
    graph = onnx.load(path)
    onnx.checker.check_model(graph, full_check=True)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Softmax") == softmax
    assert not set(ops) & (BANNED_OPS | {"Gather"}), "no control flow, no unfold gather chains"
    assert set(ops) <= TRT10_SUPPORTED_OPS
    stored = sum(onnx.numpy_helper.to_array(t).size for t in graph.graph.initializer)
    assert abs(stored / 731_264 - 1) <= 0.02, "TransBlock weights stored once"
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["lbnet.variant"] == "LBNet" and meta["lbnet.scale"] == "2"
    assert meta["lbnet.input_size"] == "{}x{}".format(*hw) and meta["lbnet.precision"] == "fp32"
    assert len(meta["lbnet.sha256"]) == 64 and meta["lbnet.tool_version"]
    x = crop(2, "bird", hw)
    assert np.abs(run_onnx(path, x) - reference("LBNet-X2.pt", x)).max() <= 0.01


def test_trt_check_rejects_unparsable_graphs() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 9, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    size = helper.make_tensor("size", onnx.TensorProto.INT64, [2], [4, 4])
    block = helper.make_tensor("block", onnx.TensorProto.INT64, [2], [3, 3])
    node = helper.make_node("Col2Im", ["x", "size", "block"], ["y"])
    graph = helper.make_graph([node], "g", [x], [y], [size, block])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(LBNetError, match="Col2Im"):
        check_trt_parsable(model)


@pytest.mark.parametrize(
    ("op", "index"), [("ReduceMean", 1), ("ReduceMax", 1), ("Squeeze", 1), ("Slice", 3)]
)
def test_trt_check_rejects_axes_that_are_not_constant(op: str, index: int) -> None:
    """The parser requires `axes` as an initializer for these ops (docs/operators.md)."""
    f, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    x = helper.make_tensor_value_info("x", f, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", f, None)
    fixed = [helper.make_tensor(n, i64, [1], [0]) for n in ("start", "end")]

    def graph_with(axes_is_input: bool) -> onnx.ModelProto:
        inputs = ["x", *(["start", "end"] if op == "Slice" else [])]
        inputs += ["axes"]
        axes_info = helper.make_tensor_value_info("axes", i64, [1])
        inits = [*fixed, *([] if axes_is_input else [helper.make_tensor("axes", i64, [1], [3])])]
        node = helper.make_node(op, inputs, ["y"])
        assert list(node.input).index("axes") == index
        graph = helper.make_graph(
            [node], "g", [x, *([axes_info] if axes_is_input else [])], [y], inits
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    check_trt_parsable(graph_with(axes_is_input=False))  # constant axes: fine
    with pytest.raises(LBNetError, match=f"{op} node .* non-constant axes"):
        check_trt_parsable(graph_with(axes_is_input=True))


def test_cli_export_and_info(tmp_path, capsys) -> None:
    out = tmp_path / "t4.onnx"
    assert main(["export", "lbnet-t-x4", "-o", str(out), "--input-size", "32x32"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LBNet-T x4" in text and "input_size: 32x32" in text
    assert "Softmax              6" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lbnet-t-x9"], "unknown model name"),
        ([str(WEIGHTS / "LBNet-X3.pt"), "--scale", "2"], "but scale 2"),
        (["/no/such/LBNet.pt"], "not found"),
    ],
)
def test_cli_export_errors(args: list[str], message: str, tmp_path, capsys) -> None:
    out = tmp_path / "x.onnx"
    assert main(["export", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
