"""FP16 graph: FP16 weights with FP32 I/O, no Inf/NaN on worst-case inputs, close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lbnet_deploy.export.fp16 import (
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
    fp32, _ = graphs
    crops = [set5_lr(4, n)[:32, :32] for n in ("baby", "butterfly")] + worst_case_inputs(SIZE)
    ranges = activation_ranges(fp32, crops)
    kinds = {r.kind for r in ranges}
    assert {"residual", "layernorm-in", "attn-scores", "output"} <= kinds
    assert all(r.max_abs < 65504 for r in ranges)  # measured: nothing overflows FP16
    table = range_table(ranges)
    assert "layernorm-in" in table
    keep = keep_fp32_from_ranges(fp32, ranges)
    assert set(keep) <= {n.name for n in fp32.graph.node}


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
