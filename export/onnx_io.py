"""ONNX files in and out, torch-free: reading (one-line errors), writing whole-or-nothing, the
facts of an exported graph, and `lbnet-deploy info`'s description of a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import from_metadata, model_facts
from lbnet_deploy.runtime.atomic import write_bytes_atomic

from .trt_ops import op_histogram


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """onnx.load with one-line errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise LBNetError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise LBNetError(f"{path} is empty (0 bytes)")
    try:
        graph = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise LBNetError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    if not graph.graph.input or not graph.graph.output:  # protobuf parses much that is not ONNX
        raise LBNetError(f"{path} is not an ONNX model (a graph with no inputs or outputs)")
    return graph


def save_atomic(graph: onnx.ModelProto, path: Path) -> None:
    """Never a half-written model (runtime.atomic); our graphs are far below protobuf's 2 GB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, graph.SerializeToString())


def tensor_names(graph: onnx.ModelProto) -> set[str]:
    """Every tensor name of a graph (node inputs and outputs, graph inputs): what a TensorRT
    calibration cache may name."""
    names = {t for n in graph.graph.node for t in (*n.input, *n.output)}
    return names | {i.name for i in graph.graph.input}


def lbnet_facts(graph: onnx.ModelProto, path: str | Path) -> dict[str, str]:
    """The graph's lbnet.* metadata, checked (`metadata.model_facts`): a one-line error if it
    was not exported by us or its facts are not LBNet's."""
    facts = from_metadata({p.key: p.value for p in graph.metadata_props})
    model_facts(facts, str(path))
    return facts


def tensor_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """A graph input's or output's dims, None where symbolic."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def tensor_dtype(value: onnx.ValueInfoProto) -> str:
    """Its element type as a numpy name ("float32", "float16")."""
    elem = value.type.tensor_type.elem_type
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))


@dataclass(frozen=True)
class GraphFacts:
    """What engine builds and Triton folders need to know of an exported graph."""

    lbnet: dict[str, str]  # lbnet.* metadata, prefix dropped
    input_name: str
    output_name: str
    dims: list[int | None]  # the input's, None where symbolic
    output_dims: list[int | None]
    dtypes: tuple[str, str]  # input's and output's numpy names: float32 (or float16)


def graph_facts(path: str | Path) -> GraphFacts:
    graph = load_onnx(path)
    inp, out = graph.graph.input[0], graph.graph.output[0]
    return GraphFacts(
        lbnet_facts(graph, path), inp.name, out.name, tensor_dims(inp), tensor_dims(out),
        (tensor_dtype(inp), tensor_dtype(out)),
    )  # fmt: skip


def _shape(value: onnx.ValueInfoProto) -> str:
    dims = value.type.tensor_type.shape.dim
    return "x".join(d.dim_param or str(d.dim_value) for d in dims)


def _shown(key: str, value: str) -> str:
    """A metadata value as `info` prints it: the INT8 facts in words."""
    if key == "int8_mac_share":
        try:
            return f"{float(value):.1%} of the conv and linear multiply-adds run INT8"
        except ValueError:
            return value
    if key == "int8_float_layers":
        return value.replace(",", ", ") or "none (every conv and linear layer INT8)"
    return value


def describe_file(path: str | Path) -> str:
    graph = load_onnx(path)
    facts = from_metadata({p.key: p.value for p in graph.metadata_props})
    lines = [f"{path}: {Path(path).stat().st_size / 1e6:.2f} MB"]
    if facts:
        lines.append(f"  model: {facts.get('variant')} x{facts.get('scale')}")
        shown = [(k, v) for k, v in facts.items() if k not in ("variant", "scale")]
        lines += [f"  {k}: {_shown(k, v)}" for k, v in shown]
    else:
        lines.append("  (no lbnet-deploy metadata: not exported by this tool)")
    params = sum(int(onnx.numpy_helper.to_array(t).size) for t in graph.graph.initializer)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)
    lines.append(f"  opset: {opset}, stored parameters: {params:,}")
    for kind, values in (("input", graph.graph.input), ("output", graph.graph.output)):
        lines += [f"  {kind} {v.name}: {_shape(v)}" for v in values]
    hist = op_histogram(graph)
    lines.append(f"  operators ({sum(hist.values())} nodes):")
    lines += [f"    {op:<20} {n}" for op, n in hist.most_common()]
    return "\n".join(lines)
