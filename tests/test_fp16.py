"""FP16 graph: FP16 weights with FP32 I/O, no Inf/NaN on worst-case inputs, close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lbnet_deploy.export.fp16 import (
    TensorRange,
    activation_ranges,
    keep_fp32_from_ranges,
    nonfinite_tensors,
    range_table,
    to_fp16,
    worst_case_inputs,
)

from .conftest import needs_weights, set5_lr

SIZE = (32, 32)
# measured on LBNet-T x4, baby x4 LR top-left 32x32: max |FP16 - FP32| = 0.166 (0..255 scale)
MAX_ABS_BOUND = 0.5


@pytest.fixture(scope="module")
def graphs(export_cache) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp32 = onnx.load(export_cache("LBNet-T_X4.pt", SIZE))
    return fp32, to_fp16(fp32, ["LayerNormalization"])


def _run(graph: onnx.ModelProto, img: np.ndarray) -> np.ndarray:
    from lbnet_deploy.calibration.session import GraphRunner

    return GraphRunner(graph).raw(img)


@needs_weights
def test_fp16_types_and_metadata(graphs) -> None:
    _, fp16 = graphs
    inits = fp16.graph.initializer
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in inits) > 100
    for value in [*fp16.graph.input, *fp16.graph.output]:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    props = {p.key: p.value for p in fp16.metadata_props}
    assert props["lbnet.precision"] == "fp16"
    assert props["lbnet.fp16_keep_ops"] == "LayerNormalization"
    kept = [n for n in fp16.graph.node if n.op_type == "LayerNormalization"]
    assert kept and all(n.input[0].endswith("fp32") or "cast" in n.input[0] for n in kept)


@needs_weights
def test_fp16_worst_case_is_finite(graphs) -> None:
    _, fp16 = graphs
    assert nonfinite_tensors(fp16, worst_case_inputs(SIZE)) == []


@needs_weights
def test_fp16_close_to_fp32_on_real_crop(graphs) -> None:
    fp32, fp16 = graphs
    crop = set5_lr(4, "baby")[:32, :32]
    diff = np.abs(_run(fp16, crop) - _run(fp32, crop))
    assert np.isfinite(diff).all()
    assert diff.max() < MAX_ABS_BOUND


@needs_weights
def test_range_report_flags_layernorm(graphs) -> None:
    """Measured (module fp16.py): LayerNorm inputs reach 422 > 255.9 on Set5 crops and the
    worst cases, nothing reaches 65504. Those are flagged, their LayerNorms kept FP32, and
    nothing else is flagged."""
    fp32, _ = graphs
    crops = [set5_lr(4, n)[:32, :32] for n in ("baby", "butterfly")] + worst_case_inputs(SIZE)
    ranges = activation_ranges(fp32, crops)
    assert {"residual", "layernorm-in", "attn-scores", "output"} <= {r.kind for r in ranges}
    assert all(r.max_abs < 65504 for r in ranges)  # measured: nothing overflows FP16
    square = [r for r in ranges if r.flag == "square-overflow"]
    assert square, "LayerNorm inputs above 255.9 are flagged"
    assert all(r.kind == "layernorm-in" and r.max_abs >= 255.9 for r in square)
    assert not [r for r in ranges if r.flag and r.flag != "square-overflow"]
    assert all(not r.flag for r in ranges if r.kind == "layernorm-in" and r.max_abs < 255.9)
    table = range_table(ranges)
    assert all(f"FLAG square-overflow: {r.node} " in table for r in square)
    assert table.count("FLAG") == len(square)
    keep = set(keep_fp32_from_ranges(fp32, ranges))
    flagged = {r.tensor for r in square}
    norms = {n.name for n in fp32.graph.node if n.op_type == "LayerNormalization"}
    consumers = {n.name for n in fp32.graph.node if set(n.input) & flagged}
    assert consumers and consumers <= keep and keep <= norms | consumers
    assert not {r.node for r in square} & keep, "a square-overflow keeps only the norm FP32"


@pytest.mark.parametrize(
    ("kind", "max_abs", "flag"),
    [
        ("layernorm-in", 300.0, "square-overflow"),
        ("layernorm-in", 200.0, ""),
        ("residual", 300.0, ""),  # FP16 spacing 0.25 at 300: fine for 0..255 data
        ("residual", 3000.0, "coarse"),  # spacing 2 loses integer-level detail
        ("attn-scores", 40.0, ""),  # spacing 1/32: the limit for exp()'s input
        ("attn-scores", 70.0, "coarse"),
        ("gate-in", 5000.0, ""),  # sigmoid saturates long before
        ("other", 70000.0, "overflow"),
        ("gate-in", float("inf"), "overflow"),
    ],
)
def test_range_flags_follow_fp16s_limits(kind: str, max_abs: float, flag: str) -> None:
    assert TensorRange("t", "n", "Op", kind, max_abs).flag == flag


def test_unknown_keep_name_is_an_error() -> None:
    from lbnet_deploy.errors import LBNetError

    graph = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )  # fmt: skip
    with pytest.raises(LBNetError, match="neither an op type nor a node"):
        to_fp16(graph, ["NoSuchOp"])
