"""ONNX export: TensorRT-parsable form, self-description, and parity with the reference ops.

Weight-free: the graph form and parity do not depend on the weights, so random-weight models
stand in; parity of every official checkpoint on Set5 crops is in the slow tier."""

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

from .conftest import CHECKPOINTS, RANDOM_TOL, needs_data, needs_weights, set5_lr, texture

# (crop, what it exercises): H*W % 16 == 0, a short run, below one run
CROPS = [(48, 48), (37, 29), (3, 5)]
T4 = "random-LBNet-T-x4"


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"lr": x})[0]


def reference(ckpt, x: np.ndarray) -> np.ndarray:
    """The straightforward port (nn.Unfold/Fold, loop over runs): the oracle for our rewrites."""
    model, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        return model.set_ops("reference")(torch.from_numpy(x)).numpy()


def batch_of(*images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([i.transpose(2, 0, 1) for i in images]), np.float32)


def test_dynamic_export_matches_the_reference(export_cache, checkpoint) -> None:
    path = export_cache(T4)
    for hw in [*CROPS, (70, 70)]:  # 70x70: 4900 tokens, runs of 306 and a short run of 4
        x = batch_of(texture(*hw))
        out = run_onnx(path, x)
        assert out.shape == (1, 3, 4 * hw[0], 4 * hw[1])
        assert np.abs(out - reference(checkpoint(T4), x)).max() <= RANDOM_TOL, hw
    x = batch_of(texture(20, 24, seed=1), texture(20, 24, seed=2))  # a batch of two
    assert np.abs(run_onnx(path, x) - reference(checkpoint(T4), x)).max() <= RANDOM_TOL


@pytest.mark.slow  # five dynamic exports, ~40 s each on 2 cores
@needs_weights
@needs_data
@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_dynamic_export_of_every_checkpoint_matches_pytorch_on_set5(
    ckpt: str, export_cache, checkpoint
) -> None:
    path = export_cache(ckpt)
    scale = CHECKPOINTS[ckpt][1]
    for name, hw in zip(("baby", "butterfly", "woman"), CROPS, strict=True):
        x = batch_of(set5_lr(scale, name)[: hw[0], : hw[1]])
        out = run_onnx(path, x)
        assert out.shape == (1, 3, scale * hw[0], scale * hw[1])
        assert np.abs(out - reference(checkpoint(ckpt), x)).max() <= 0.01, (name, hw)


# stored / parameters: 1 for LBNet; LBNet-T stores its `reduce` folded into the q/k/v weights
@pytest.mark.parametrize(
    ("ckpt", "hw", "softmax", "stored_ratio"),
    [(T4, (16, 16), 6, 0.877), ("random-LBNet-x2", (37, 29), 12, 1.0)],
)
def test_fixed_export_form(
    ckpt: str, hw: tuple[int, int], softmax: int, stored_ratio: float, export_cache, checkpoint
) -> None:
    """One MatMul->Softmax->MatMul per TransBlock application when H*W % 16 == 0; one more
    (the short run) otherwise."""
    path = export_cache(ckpt, hw)
    graph = onnx.load(path)
    onnx.checker.check_model(graph, full_check=True)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Softmax") == softmax
    assert not set(ops) & (BANNED_OPS | {"Gather"}), "no control flow, no unfold gather chains"
    assert set(ops) <= TRT10_SUPPORTED_OPS
    _, desc = load_checkpoint(checkpoint(ckpt))
    stored = sum(onnx.numpy_helper.to_array(t).size for t in graph.graph.initializer)
    assert abs(stored / desc.params - stored_ratio) <= 0.01, "TransBlock weights stored once"
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["lbnet.variant"] == desc.variant and meta["lbnet.scale"] == str(desc.scale)
    assert meta["lbnet.input_size"] == "{}x{}".format(*hw) and meta["lbnet.precision"] == "fp32"
    assert meta["lbnet.sha256"] == desc.sha256 and meta["lbnet.tool_version"]
    x = batch_of(texture(*hw))
    assert np.abs(run_onnx(path, x) - reference(checkpoint(ckpt), x)).max() <= RANDOM_TOL


def _attention_shapes(graph: onnx.ModelProto) -> list[tuple[list, list]]:
    """(the shape of q, of the scores) for every Softmax: the MatMul before it (through the
    dynamic graph's mask Add) takes q; dims are ints or names of symbolic dims."""
    inferred = onnx.shape_inference.infer_shapes(graph)
    shapes = {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
    }
    made_by = {out: n for n in graph.graph.node for out in n.output}
    found = []
    for softmax in (n for n in graph.graph.node if n.op_type == "Softmax"):
        scores = made_by[softmax.input[0]]
        while scores.op_type != "MatMul":  # the dynamic graph adds its -inf mask first
            scores = made_by[scores.input[0]]
        found.append((shapes[scores.input[0]], shapes[softmax.input[0]]))
    return found


@pytest.mark.parametrize("form", ["flat", "flat16"])
def test_cpu_forms_compute_the_reference_and_say_so(form: str, export_cache, checkpoint) -> None:
    """The CPU layouts (runs as the batch, heads second, 4-D: OpenVINO fuses that attention and
    its transposes into one kernel; flat16 with LBNet-T's head dim 27 zero-padded to 32) are
    the same network: fixed and dynamic exports against the reference, with the form in the
    metadata."""
    fixed, dynamic = export_cache(T4, (37, 29), form=form), export_cache(T4, form=form)
    head_dim = 32 if form == "flat16" else 27
    for path, crops in ((fixed, [(37, 29)]), (dynamic, [(48, 48), (37, 29), (3, 5)])):
        graph = onnx.load(path)
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["lbnet.form"] == form
        for q, scores in _attention_shapes(graph):
            assert len(q) == len(scores) == 4 and q[-1] == head_dim, (q, scores)
        for hw in crops:
            x = batch_of(texture(*hw))
            assert np.abs(run_onnx(path, x) - reference(checkpoint(T4), x)).max() <= RANDOM_TOL
    # 37x29 = 1073 tokens: the 16 full runs of 67 as the batch, heads second (the standard
    # multi-head layout), and the short run of one token
    shapes = _attention_shapes(onnx.load(fixed))
    assert sorted(scores for _, scores in shapes)[-1] == [16, 6, 67, 67]


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


def test_cli_export_fp16_and_info(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "t4.onnx"
    args = ["export", str(checkpoint(T4)), "-o", str(out), "--input-size", "16x16"]
    assert main([*args, "--precision", "fp16"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LBNet-T x4" in text and "input_size: 16x16" in text
    assert "precision: fp16" in text and "fp16_keep_ops: LayerNormalization" in text
    assert "Softmax              6" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t4.onnx"]  # no temporaries left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lbnet-t-x9"], "unknown model name"),
        (["random-LBNet-x3", "--scale", "2"], "but scale 2"),
        (["/no/such/LBNet.pt"], "not found"),
    ],
)
def test_cli_export_errors(args: list[str], message: str, checkpoint, tmp_path, capsys) -> None:
    args = [str(checkpoint(a)) if a.startswith("random-") else a for a in args]
    out = tmp_path / "x.onnx"
    assert main(["export", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
