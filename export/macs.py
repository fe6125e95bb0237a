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


def node_key(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}"


def node_macs(
    graph: onnx.ModelProto | str | Path, input_shape: Sequence[int] | None = None
) -> tuple[dict[str, int], int]:
    """({Conv/MatMul/Gemm node: its MACs}, nodes whose shapes stay unknown); a node is keyed by
    its name (`node_key`: its index where it has none).

    `input_shape` (N, C, H, W) pins a dynamic graph's input first. Nodes whose shapes stay
    unknown are counted, not given MACs.
    """
    if not isinstance(graph, onnx.ModelProto):
        graph = onnx.load(str(graph))
    if input_shape is not None:
        graph = with_input_shape(graph, input_shape)
    else:
        graph = onnx.shape_inference.infer_shapes(graph, data_prop=True)
    shapes = _shapes(graph)
    macs, unknown = {}, 0
    for i, node in enumerate(graph.graph.node):
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        found = [shapes.get(name) for name in node.input[:2]]
        ins = [s for s in found if s is not None]
        out = shapes.get(node.output[0])
        if out is None or len(ins) < len(found) or min([*out, *ins[0], *ins[1]]) < 0:
            unknown += 1
            continue
        if node.op_type == "Conv":
            # every output element is a dot product over (C_in / groups) x kh x kw
            macs[node_key(node, i)] = math.prod(out) * math.prod(ins[1][1:])
        elif node.op_type == "MatMul":
            macs[node_key(node, i)] = math.prod(out) * ins[0][-1]
        else:
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            macs[node_key(node, i)] = math.prod(out) * (ins[0][0] if trans_a else ins[0][1])
    return macs, unknown


def count_macs(
    graph: onnx.ModelProto | str | Path, input_shape: Sequence[int] | None = None
) -> dict[str, int]:
    """{"Conv", "MatMul_weights", "MatMul_attention", "Gemm", "total", "unknown_nodes"} (see
    `node_macs`): a MatMul with no weight input is an attention product."""
    if not isinstance(graph, onnx.ModelProto):
        graph = onnx.load(str(graph))
    per_node, unknown = node_macs(graph, input_shape)
    weights = {t.name for t in graph.graph.initializer}
    weights |= {n.output[0] for n in graph.graph.node if n.op_type == "Constant"}
    counts = {"Conv": 0, "MatMul_weights": 0, "MatMul_attention": 0, "Gemm": 0}
    for i, node in enumerate(graph.graph.node):
        if node_key(node, i) not in per_node:
            continue
        key = node.op_type
        if key == "MatMul":
            key = "MatMul_weights" if set(node.input[:2]) & weights else "MatMul_attention"
        counts[key] += per_node[node_key(node, i)]
    counts["total"] = sum(counts.values())
    counts["unknown_nodes"] = unknown
    return counts
