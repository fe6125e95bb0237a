"""Multiply-adds of an ONNX graph, counted from Conv/MatMul/Gemm shapes after shape inference.

Counted from the graph rather than from a formula so that everything the backend executes is
in: the attention products (which the paper's Mult-Adds leave out) and the one-hot unfold/fold
convolutions (data movement expressed as MACs). MatMuls with no weight input are the attention
products (q k^T and scores @ v); they are reported separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import onnx


def _shapes(graph: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every tensor the inferred graph knows (symbolic dims -> -1)."""
    out: dict[str, list[int]] = {}
    g = graph.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    for init in g.initializer:
        out[init.name] = list(init.dims)
    return out


def with_input_shape(graph: onnx.ModelProto, shape: Sequence[int]) -> onnx.ModelProto:
    """A copy whose first input has `shape` (NCHW), shapes re-inferred (for dynamic graphs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    dims = copy.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    del copy.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(copy, data_prop=True)


def count_macs(
    graph: onnx.ModelProto | str | Path, input_shape: Sequence[int] | None = None
) -> dict[str, int]:
    """{"Conv", "MatMul_weights", "MatMul_attention", "Gemm", "total", "unknown_nodes"}.

    `input_shape` (N, C, H, W) pins a dynamic graph's input first. Nodes whose shapes stay
    unknown are counted in `unknown_nodes` (their MACs are not in the total).
    """
    if not isinstance(graph, onnx.ModelProto):
        graph = onnx.load(str(graph))
    if input_shape is not None:
        graph = with_input_shape(graph, input_shape)
    else:
        graph = onnx.shape_inference.infer_shapes(graph, data_prop=True)
    shapes = _shapes(graph)
    weights = {t.name for t in graph.graph.initializer}
    weights |= {n.output[0] for n in graph.graph.node if n.op_type == "Constant"}
    counts = {"Conv": 0, "MatMul_weights": 0, "MatMul_attention": 0, "Gemm": 0, "unknown_nodes": 0}
    for node in graph.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        found = [shapes.get(name) for name in node.input[:2]]
        ins = [s for s in found if s is not None]
        out = shapes.get(node.output[0])
        if out is None or len(ins) < len(found) or min([*out, *ins[0], *ins[1]]) < 0:
            counts["unknown_nodes"] += 1
            continue
        if node.op_type == "Conv":
            # every output element is a dot product over (C_in / groups) x kh x kw
            counts["Conv"] += math.prod(out) * math.prod(ins[1][1:])
        elif node.op_type == "MatMul":
            k = ins[0][-1]
            key = "MatMul_attention" if not set(node.input[:2]) & weights else "MatMul_weights"
            counts[key] += math.prod(out) * k
        else:
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            k = ins[0][0] if trans_a else ins[0][1]
            counts["Gemm"] += math.prod(out) * k
    counts["total"] = sum(v for key, v in counts.items() if key != "unknown_nodes")
    return counts
