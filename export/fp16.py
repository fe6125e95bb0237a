"""FP32 ONNX graph -> FP16 graph (FP32 input/output, FP16 inside), with measured FP32 islands.

TensorRT 10.12+/11 builds strongly typed networks, so the precision has to live in the graph.
Which layers stay FP32 is decided by measurement, not taste:

- `activation_ranges` adds intermediate outputs to a copy of the FP32 graph and runs ONNX
  Runtime on real LR images; `range_table` flags tensors FP16 cannot hold (|x| >= 65504), whose
  square overflows inside a normalisation (|x| >= 256 at a LayerNorm input: TensorRT warns about
  exactly this) or whose FP16 spacing is too coarse (attention scores, large residuals).
- `nonfinite_tensors` runs any graph (the FP16 one) and names the tensors holding Inf/NaN.

ONNX Runtime's CPU provider runs many FP16 ops by casting to FP32 around an FP32 kernel, so an
FP16 graph that is clean in ORT can still overflow inside a TensorRT FP16 kernel: the range
check on FP32 activations is what guards against that, the ORT run guards the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.errors import LBNetError

FP16_MAX = 65504.0
# sqrt(65504): a normalisation computing mean(x^2) in FP16 overflows above this.
SQUARE_LIMIT = 255.9
# FP16 spacing limits: attention scores feed exp(), where a spacing of 1/32 is a 3% error in one
# weight; elsewhere a spacing above 1 loses integer-level detail of 0..255 pixel data.
SCORE_MAX_SPACING = 2.0**-5
OTHER_MAX_SPACING = 1.0

# Measured (activation_ranges on Set5 crops + worst cases, all five checkpoints): LayerNorm inputs
# reach 422 > 255.9 (mean(x^2) overflows in an FP16 norm kernel); nothing reaches 65504. With
# LayerNorm kept FP32, Set5/Set14 PSNR moved <= 0.001 dB per image (LBNet-T x4).
DEFAULT_KEEP_FP32: tuple[str, ...] = ("LayerNormalization",)


@dataclass(frozen=True)
class TensorRange:
    """Max |x| of one float tensor over all images measured, and what the tensor is."""

    tensor: str
    node: str
    op_type: str
    kind: str  # residual | layernorm-in | attn-scores | gate-in | output | other
    max_abs: float

    @property
    def fp16_spacing(self) -> float:
        """Distance between adjacent FP16 values at `max_abs` (normal range)."""
        if not np.isfinite(self.max_abs) or self.max_abs >= FP16_MAX:
            return float("inf")
        return float(np.spacing(np.float16(max(self.max_abs, 2.0**-14))))

    @property
    def flag(self) -> str:
        if not np.isfinite(self.max_abs) or self.max_abs >= FP16_MAX:
            return "overflow"
        if self.kind == "layernorm-in" and self.max_abs >= SQUARE_LIMIT:
            return "square-overflow"
        if self.kind == "gate-in":
            return ""  # sigmoid saturates long before FP16 spacing exceeds its slope's reach
        limit = SCORE_MAX_SPACING if self.kind == "attn-scores" else OTHER_MAX_SPACING
        return "coarse" if self.fp16_spacing > limit else ""


def _float_tensors(graph: onnx.ModelProto) -> dict[str, int]:
    """Name -> elem type of every float/float16 value in the graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(graph)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {
        v.name: v.type.tensor_type.elem_type
        for v in values
        if v.type.tensor_type.elem_type in floats
    }


def _with_outputs(graph: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `graph` that also returns the named intermediate tensors."""
    types = _float_tensors(graph)
    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return probe


def _outputs_per_image(
    graph: onnx.ModelProto, images: Iterable[np.ndarray]
) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """(output names, their values) for each image (0..255), through one CPU session; a unit
    graph (lbnet.io) is fed 0..1."""
    from lbnet_deploy.metadata import IO_PEAK, from_metadata, io_kind
    from lbnet_deploy.runtime.backend import to_range
    from lbnet_deploy.runtime.onnxrt import ArenaGuard, create_session

    raw = from_metadata({p.key: p.value for p in graph.metadata_props})
    peak = IO_PEAK[io_kind(raw, "graph")]
    sess, arena = create_session(graph.SerializeToString()), ArenaGuard()
    outs = [o.name for o in sess.get_outputs()]
    for img in images:
        x = to_range(_nchw(img), peak)
        yield outs, sess.run(outs, {sess.get_inputs()[0].name: x}, arena.run_options(x.shape))


def _nchw(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8/float RGB (0..255) -> 1x3xHxW float32, the graph's `lr` input."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))


def _classify(graph: onnx.ModelProto) -> dict[str, tuple[str, str, str]]:
    """Tensor name -> (producing node, op type, kind) for every node output."""
    consts = {i.name for i in graph.graph.initializer}
    producer = {o: n for n in graph.graph.node for o in n.output}
    kinds: dict[str, str] = {}
    for node in graph.graph.node:
        if node.op_type == "LayerNormalization":
            kinds[node.input[0]] = "layernorm-in"
        elif node.op_type == "Softmax":
            kinds[node.input[0]] = "attn-scores"
            # the raw q @ k^T product before an additive mask is a score tensor too
            src = producer.get(node.input[0])
            for name in src.input if src is not None and src.op_type == "Add" else ():
                if (p := producer.get(name)) is not None and p.op_type == "MatMul":
                    kinds[name] = "attn-scores"
        elif node.op_type == "Sigmoid":
            kinds[node.input[0]] = "gate-in"
    for node in graph.graph.node:
        if node.op_type == "Add" and not set(node.input) & consts:
            kinds.setdefault(node.output[0], "residual")  # two activations: a skip connection
    for out in graph.graph.output:
        kinds[out.name] = "output"
    return {
        o: (n.name, n.op_type, kinds.get(o, "other")) for n in graph.graph.node for o in n.output
    }


def activation_ranges(graph: onnx.ModelProto, images: Iterable[np.ndarray]) -> list[TensorRange]:
    """Max |x| of every float activation of `graph` over `images` (HxWx3 RGB, 0..255).

    Run it with a dynamic-size FP32 graph and LR images (or crops) of several sizes: the
    attention softmax and CA pooling see more tokens on larger inputs.
    """
    info = _classify(graph)
    names = [t for t in _float_tensors(graph) if t in info]
    probe = _with_outputs(graph, names)
    peak: dict[str, float] = {}
    seen = 0
    for outs, values in _outputs_per_image(probe, images):
        for name, value in zip(outs, values, strict=True):
            peak.setdefault(name, 0.0)
            if value.size:
                peak[name] = max(peak[name], float(np.max(np.abs(value.astype(np.float32)))))
        seen += 1
    if not seen:
        raise LBNetError("activation_ranges needs at least one image")
    return [TensorRange(t, *info[t], peak[t]) for t in peak if t in info]


def range_table(ranges: Sequence[TensorRange], top: int = 3) -> str:
    """Per kind: tensor count, the largest |x| seen (and where), flagged tensors."""
    lines = [
        f"{'kind':<13} {'tensors':>7} {'max |x|':>10} {'fp16 ulp':>9} {'flagged':>7}  largest at"
    ]
    for kind in ("residual", "layernorm-in", "attn-scores", "gate-in", "output", "other"):
        group = sorted((r for r in ranges if r.kind == kind), key=lambda r: -r.max_abs)
        if not group:
            continue
        flagged = sum(1 for r in group if r.flag)
        where = ", ".join(f"{r.node}={r.max_abs:.4g}" for r in group[:top])
        lines.append(
            f"{kind:<13} {len(group):>7} {group[0].max_abs:>10.4g} "
            f"{group[0].fp16_spacing:>9.3g} {flagged:>7}  {where}"
        )
    for r in ranges:
        if r.flag:
            lines.append(
                f"  FLAG {r.flag}: {r.node} ({r.op_type}, {r.kind}) max |x| {r.max_abs:.4g}"
            )
    return "\n".join(lines)


def keep_fp32_from_ranges(graph: onnx.ModelProto, ranges: Iterable[TensorRange]) -> list[str]:
    """Node names to keep in FP32 so no flagged tensor is ever held or squared in FP16.

    A square-overflow only hurts inside the normalisation: its consumers stay FP32. Any other
    flagged tensor keeps its producer and consumers FP32 (keeping only the producer would not
    help: the converter casts its output back to FP16 for an FP16 consumer).
    """
    flagged = {r.tensor: r for r in ranges if r.flag}
    keep = {r.node for r in flagged.values() if r.flag != "square-overflow"}
    keep.update(n.name for n in graph.graph.node for t in n.input if t in flagged)
    return sorted(keep)


def _masked_tensors(graph: onnx.ModelProto) -> set[str]:
    """Tensors that hold -inf by design: an attention mask built from a -inf constant, and the
    masked scores it is added to (Softmax turns -inf into exact zeros)."""
    infinite = {
        i.name for i in graph.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        and np.isinf(onnx.numpy_helper.to_array(i)).any()
    }  # fmt: skip
    masked: set[str] = set()
    for node in graph.graph.node:  # nodes are topologically sorted: one pass propagates
        if node.op_type in ("Where", "Add", "Cast") and set(node.input) & (infinite | masked):
            masked.update(node.output)
    return masked


def nonfinite_tensors(
    graph: onnx.ModelProto, images: Iterable[np.ndarray], intermediates: bool = True
) -> list[str]:
    """Names of tensors (graph outputs, and intermediates if asked) holding Inf or NaN, in
    graph order (the first is where it starts). A mask tensor only counts for NaN or +inf."""
    floats = _float_tensors(graph)
    names = [t for t in _classify(graph) if t in floats] if intermediates else []
    masked = _masked_tensors(graph)
    bad: set[str] = set()
    for outs, values in _outputs_per_image(_with_outputs(graph, names), images):
        for name, v in zip(outs, values, strict=True):
            broken = np.isnan(v) | np.isposinf(v) if name in masked else ~np.isfinite(v)
            if broken.any():
                bad.add(name)
    order = {n: i for i, n in enumerate(outs)}
    return sorted(bad, key=order.__getitem__)


def worst_case_inputs(size: tuple[int, int] = (48, 48)) -> list[np.ndarray]:
    """Saturated high-contrast LR patterns (0/255): the largest gradients an image can have."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    patterns = [
        (yy + xx) % 2,  # 1-px checkerboard
        (yy // 4 + xx // 4) % 2,  # 4-px checkerboard
        xx % 2,  # vertical 1-px stripes
        yy % 2,  # horizontal 1-px stripes
        (xx // 3) % 2,
        np.ones((h, w), dtype=np.int64),  # flat white
    ]
    out = [np.repeat((p * 255).astype(np.uint8)[..., None], 3, axis=2) for p in patterns]
    # colour extremes: red/cyan checkerboard saturates channels in opposite directions
    cb = ((yy + xx) % 2).astype(bool)
    rc = np.zeros((h, w, 3), np.uint8)
    rc[cb] = (255, 0, 0)
    rc[~cb] = (0, 255, 255)
    out.append(rc)
    return out


def _split_keep(graph: onnx.ModelProto, keep: Iterable[str]) -> tuple[list[str], list[str]]:
    ops = {n.op_type for n in graph.graph.node}
    names = {n.name for n in graph.graph.node}
    op_list, node_list = [], []
    for item in keep:
        if item in ops:
            op_list.append(item)
        elif item in names:
            node_list.append(item)
        else:
            raise LBNetError(f"keep_fp32: {item!r} is neither an op type nor a node of the graph")
    return op_list, node_list


def _drop_duplicate_casts(graph: onnx.ModelProto) -> None:
    """The converter emits one `<w>_cast_to_fp32` Cast per FP32-kept consumer of a shared weight
    (TransBlock norms are applied three times): keep the first, the graph must stay SSA."""
    seen: set[str] = set()
    keep = []
    for node in graph.graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        keep.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(keep)


def to_fp16(
    fp32_graph: onnx.ModelProto, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32
) -> onnx.ModelProto:
    """FP16 copy of an FP32 LBNet graph with FP32 `lr`/`sr`; `keep_fp32` op types or node names
    stay FP32 (casts are inserted around them). Sets `lbnet.precision=fp16` and records what was
    kept in `lbnet.fp16_keep_ops` / `lbnet.fp16_keep_nodes`."""
    # onnxruntime.transformers.float16 rather than onnxconverter-common: it is the maintained fork
    # of the same converter, ships with onnxruntime (no extra dependency), handles opset 20 and
    # LayerNormalization, and takes node_block_list. Both gave identical graphs numerically here.
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    op_list, node_list = _split_keep(fp32_graph, keep_fp32)
    source = onnx.ModelProto()
    source.CopyFrom(fp32_graph)
    graph = convert_float_to_float16(
        source,
        keep_io_types=True,
        # keep its default list: shape-computing ops (Range, Min, Max) have no FP16 benefit
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(op_list)),
        node_block_list=node_list,
    )
    _drop_duplicate_casts(graph)
    # the converter appends its input casts at the end; checkers and TensorRT want sorted nodes
    OnnxModel(graph).topological_sort()
    # its value_info keeps FP16 types for outputs of FP32-kept nodes: infer them afresh
    del graph.graph.value_info[:]
    graph = onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
    inits = graph.graph.initializer
    if not any(i.data_type == onnx.TensorProto.FLOAT16 for i in inits):
        raise LBNetError("FP16 conversion left no FP16 weights: is this an FP32 LBNet graph?")
    props = {p.key: p.value for p in fp32_graph.metadata_props}
    props.update(
        {
            "lbnet.precision": "fp16",
            "lbnet.fp16_keep_ops": ",".join(sorted(op_list)),
            "lbnet.fp16_keep_nodes": ",".join(sorted(node_list)),
        }
    )
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    onnx.checker.check_model(graph)
    return graph


def write_fp16(
    fp32_path: str | Path, out: str | Path, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32
) -> onnx.ModelProto:
    """The one way an FP16 file is made (`export --precision fp16`, `--precision fp16` on a
    model name, bench): convert, refuse a graph that gives Inf/NaN on saturated patterns,
    check it is TensorRT-parsable, write it whole."""
    from .onnx_io import save_atomic, tensor_dims
    from .trt_ops import check_trt_parsable

    graph = to_fp16(onnx.load(str(fp32_path)), keep_fp32=keep_fp32)
    h, w = tensor_dims(graph.graph.input[0])[2:]
    size = (h, w) if h and w else (48, 48)  # a fixed graph's own size, else a 48x48 pattern
    bad = nonfinite_tensors(graph, worst_case_inputs(size), intermediates=False)
    if bad:
        raise LBNetError(f"FP16 graph gives Inf/NaN on saturated patterns in {bad[:3]}")
    check_trt_parsable(graph)
    save_atomic(graph, Path(out))
    return graph
