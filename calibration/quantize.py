"""FP32 LBNet graph -> explicit-quantization (QDQ) INT8 graph that TensorRT builds as is.

`onnxruntime.quantization.quantize_static` is the engine: it calibrates, quantizes the weights
per channel and writes the Q/DQ pairs (QDQ format, symmetric S8S8). What is ours:

- **TensorRT's placement** (the TensorRT developer guide's Q/DQ placement recommendations,
  NVIDIA ModelOpt's ONNX PTQ): Q/DQ only on the inputs of the quantized Conv and linear-layer
  MatMul nodes. quantize_static also hands the pair's dequantized tensor to every other
  consumer of a quantized tensor (residual Adds, the dense Concats, LayerNorm, the token
  Transposes), so they received already-rounded values; `_int8_only` gives every node that
  is not an INT8 layer its float inputs back. Attention products, Softmax and LayerNorm stay
  float.
- **which layers**: each layer (one weight and all its applications: r1..r3 run twice, each
  TransBlock three times) is scored by the output error it alone adds on held-out crops of the
  photos and of synthetic slides (`data.graphic`); the layers with the most error per
  multiply-add stay float until the whole graph meets `max_psnr_drop` on both (`quantize_mixed`),
  which keeps most of the MACs INT8.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.macs import node_macs
from lbnet_deploy.runtime.upscaler import to_uint8

METHODS = ("MinMax", "Entropy", "Percentile")


def _weight_prefix(graph: onnx.ModelProto, node: onnx.NodeProto) -> str:
    inits = {i.name for i in graph.graph.initializer}
    inputs = node.input[:2] if node.op_type == "MatMul" else node.input[1:]
    return next((i for i in inputs if i in inits), "")


def quantizable_nodes(graph: onnx.ModelProto) -> list[str]:
    """Conv nodes and MatMuls with a constant weight on either side (linear layers; the
    batched form computes its keys as Wk @ u^T), in graph order."""
    inits = {i.name for i in graph.graph.initializer}
    return [
        n.name for n in graph.graph.node
        if n.op_type == "Conv" or (n.op_type == "MatMul" and set(n.input[:2]) & inits)
    ]  # fmt: skip


def blocks(graph: onnx.ModelProto) -> dict[str, list[str]]:
    """Block name -> its quantizable node names.

    Node names from the exporter do not carry module paths, so blocks are read off the weights:
    a Conv's weight initializer is named by its module (`r1.b2.c4.weight`); a linear MatMul's
    weight is not, so it belongs to the stage whose unfold convolution (`tokens.unfold_w`) came
    last before it in graph order. The stages run one after the other, so any topological order
    puts a stage's nodes between its unfold and its fold. (Not the LayerNorm weights' names:
    merging identical initializers can give both stages the first stage's norm weights.)
    """
    names = set(quantizable_nodes(graph))
    out: dict[str, list[str]] = {}
    stage = "attention"
    token_convs = 0
    for node in graph.graph.node:
        if node.name not in names:
            continue
        weight = _weight_prefix(graph, node)
        root = weight.split(".")[0]
        if node.op_type == "MatMul":
            block = stage
        elif root == "tokens":  # unfold, fold of stage 1, then of stage 2
            block = "attention" if token_convs < 2 else "attention2"
            token_convs += 1
            stage = "attention2" if token_convs >= 2 else "attention"
        elif root in ("sub_mean", "head"):
            block = "head"
        elif root in ("tail", "add_mean"):
            block = "tail"
        elif root in ("se1", "se2", "se3"):
            block = "se"
        elif root == "c2":
            block = "attention"
        elif root == "c3":
            block = "attention2"
        else:
            block = root  # r1, r2, r3, c1
        out.setdefault(block, []).append(node.name)
    if token_convs != 4:  # not our export's form: the stages cannot be told apart
        raise LBNetError(
            f"expected the 4 unfold/fold convolutions of an lbnet-deploy export, found "
            f"{token_convs}: calibrate a graph made by `lbnet-deploy export`"
        )
    return out


def layers(graph: onnx.ModelProto) -> dict[str, list[str]]:
    """Layer name -> its nodes: every application of one weight (r1..r3 run twice, each
    TransBlock stage three times). A Conv is named by its weight's module (`r1.b2.c4`); a
    linear MatMul's weight is not named by the exporter, so it is `<stage>.linear<k>`, k in
    the order the stage's weights first appear."""
    out: dict[str, list[str]] = {}
    weights: dict[str, str] = {}  # weight initializer -> layer name
    nodes = {n.name: n for n in graph.graph.node}
    for block, names in blocks(graph).items():
        for name in names:
            weight = _weight_prefix(graph, nodes[name])
            if weight not in weights:
                linear = sum(layer.startswith(f"{block}.linear") for layer in weights.values())
                module = weight.removesuffix(".weight").removesuffix("_w")
                if nodes[name].op_type == "MatMul":
                    weights[weight] = f"{block}.linear{linear}"
                else:  # tokens.unfold, tokens.fold: one-hot, shared by both stages
                    weights[weight] = module
            out.setdefault(weights[weight], []).append(name)
    return out


def layer_macs(
    graph: onnx.ModelProto, found: dict[str, list[str]], size: tuple[int, ...]
) -> dict[str, int]:
    """Multiply-adds per layer for one LR input of `size` (H, W). Shape inference sizes every
    Conv, also in a dynamic graph, but not a dynamic graph's token MatMuls (their shapes are
    computed at run time): a linear layer costs its weight's size once per token, and LBNet has
    one token per LR pixel."""
    h, w = size
    per_node, _ = node_macs(graph, (1, 3, h, w))
    nodes = {n.name: n for n in graph.graph.node}
    weights = {i.name: i for i in graph.graph.initializer}
    out = {}
    for layer, names in found.items():
        total = 0
        for name in names:
            if name in per_node:
                total += per_node[name]
            else:
                weight = weights[_weight_prefix(graph, nodes[name])]
                total += int(np.prod(weight.dims)) * h * w
        out[layer] = total
    return out


class _Reader:
    """onnxruntime CalibrationDataReader over an (N, 3, h, w) array, one crop per batch."""

    def __init__(self, crops: np.ndarray, input_name: str) -> None:
        self.crops, self.input_name, self.i = crops, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.crops):
            return None
        self.i += 1
        return {self.input_name: self.crops[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


@dataclass
class Quantizer:
    """Calibrates once and quantizes every layer once (cached in `workdir`); any choice of float
    layers is then a graph edit of that result (`quantize`)."""

    graph: onnx.ModelProto
    crops: np.ndarray
    method: str = "MinMax"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lbnet-int8-")))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LBNetError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        if self.crops.ndim != 4 or self.crops.shape[1] != 3 or not len(self.crops):
            raise LBNetError(f"calibration crops must be (N, 3, H, W), got {self.crops.shape}")
        self.blocks = blocks(self.graph)
        self.layers = layers(self.graph)
        self.macs = layer_macs(self.graph, self.layers, self.crops.shape[2:])
        # quantize_static given a ModelProto round-trips it through external data in a temp
        # folder it has already removed when it reads it back: hand it a file instead
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._source = self.workdir / "fp32.onnx"
        onnx.save(self.graph, self._source)
        self._all: onnx.ModelProto | None = None

    def mac_share(self, float_layers: Collection[str] = ()) -> float:
        """The share of the conv and linear multiply-adds that run INT8."""
        total = sum(self.macs.values())
        return sum(v for k, v in self.macs.items() if k not in float_layers) / max(total, 1)

    def quantize(self, float_layers: Collection[str] = ()) -> onnx.ModelProto:
        """QDQ INT8 graph with every layer but `float_layers` INT8; metadata records both."""
        unknown = sorted(set(float_layers) - set(self.layers))
        if unknown:
            raise LBNetError(f"unknown layers {unknown}; the graph has {sorted(self.layers)}")
        int8 = {n for k, ns in self.layers.items() if k not in float_layers for n in ns}
        model = _int8_only(self._quantize_all(), self.graph, int8)
        props = {p.key: p.value for p in self.graph.metadata_props}
        props.update(
            {
                "lbnet.precision": "int8",
                "lbnet.int8_method": self.method,
                "lbnet.int8_placement": "tensorrt",
                "lbnet.int8_float_layers": ",".join(sorted(float_layers)),
                "lbnet.int8_mac_share": f"{self.mac_share(float_layers):.4f}",
                "lbnet.int8_calibration_crops": "{}x{}x{}".format(
                    len(self.crops), *self.crops.shape[2:]
                ),
            }
        )
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        return model

    def _quantize_all(self) -> onnx.ModelProto:
        """Every quantizable node INT8 (calibrated once, cached)."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        if self._all is not None:
            return self._all
        out = self.workdir / "int8.onnx"
        cache = self.workdir / f"ranges-{self.method}.json"
        if self.method == "Entropy" and not cache.is_file():
            self._entropy_ranges(cache)
        quantize_static(
            self._source, out, _Reader(self.crops, self.graph.graph.input[0].name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "MatMul"],
            nodes_to_quantize=quantizable_nodes(self.graph), per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, self.method),
            extra_options={
                "ActivationSymmetric": True,  # TensorRT requires zero point 0 (DEPLOY.md)
                "WeightSymmetric": True,
                # TensorRT takes float biases; an int32 bias DQ is not an INT8 fusion it does
                "QuantizeBias": False,
                "CalibMovingAverage": False,
                # no Q/DQ on their outputs: the next op reads float (TensorRT's placement)
                "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul"],
            },
            calibration_cache_path=cache,
        )  # fmt: skip
        self._all = _weights_by_output_channel(onnx.load(out), self.graph)
        return self._all

    def activation_scales(self) -> dict[str, float]:
        """Tensor -> INT8 scale (amax / 127) of every tensor the calibration measured: the
        inputs and outputs of every Conv and MatMul, for a TensorRT implicit-INT8 cache, whose
        layers run INT8 only where all their tensors have a range (the Q/DQ graph holds scales
        for the INT8 layers' inputs alone)."""
        from onnxruntime.quantization.calibrate import load_tensors_data

        self._quantize_all()  # calibrated: the ranges are in the cache file
        ranges = load_tensors_data(self.workdir / f"ranges-{self.method}.json")
        amax = {name: float(np.max(np.abs(data.range_value))) for name, data in ranges.data.items()}
        # a tensor never seen non-zero gets onnxruntime's scale for it (1), as in the Q/DQ graph
        return {name: a / 127 if a > 0 else 1.0 for name, a in amax.items()}

    def _entropy_ranges(self, cache: Path) -> None:
        """KL-divergence thresholds from 2048-bin histograms (TensorRT's entropy calibrator).

        Written by hand around ORT's own EntropyCalibrater because quantize_static cannot pass
        it a bin count: its default of 128 bins equals the 128 quantized bins, so the threshold
        search has one candidate, the full range, and "Entropy" came out identical to MinMax
        (measured: all 234 scales of the LBNet-T x4 graph equal)."""
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

        calibrator = create_calibrator(
            self._source, ["Conv", "MatMul"],
            augmented_model_path=str(self.workdir / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True},
        )  # fmt: skip
        calibrator.collect_data(_Reader(self.crops, self.graph.graph.input[0].name))
        save_tensors_data(calibrator.compute_data(), cache)


def _int8_only(qdq: onnx.ModelProto, fp32: onnx.ModelProto, int8: set[str]) -> onnx.ModelProto:
    """`qdq` where only the nodes `int8` read through Q/DQ pairs: every other node of the FP32
    graph gets its FP32 inputs back (the float tensor for a residual Add, a Concat, a float
    layer), and what no node reads any more is removed. Written by hand: quantize_static has
    no option for it (its DedicatedQDQPair still routes every consumer through a pair)."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    source = {n.name: n for n in fp32.graph.node}
    floats = {i.name: i for i in fp32.graph.initializer}
    for node in out.graph.node:
        if node.name in source and node.name not in int8:
            del node.input[:]
            node.input.extend(source[node.name].input)
    have = {i.name for i in out.graph.initializer}
    needed = {name for n in out.graph.node for name in n.input}
    out.graph.initializer.extend(floats[n] for n in sorted(needed - have) if n in floats)
    while True:  # drop nodes nothing reads, then initializers nothing reads
        read = {name for n in out.graph.node for name in n.input}
        read |= {o.name for o in out.graph.output}
        dead = [n for n in out.graph.node if not set(n.output) & read]
        if not dead:
            break
        for node in dead:
            out.graph.node.remove(node)
    read = {name for n in out.graph.node for name in n.input}
    kept = [i for i in out.graph.initializer if i.name in read]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


def _weights_by_output_channel(qdq: onnx.ModelProto, fp32: onnx.ModelProto) -> onnx.ModelProto:
    """A MatMul whose weight comes first (Wk @ u^T) gets its scales per row, its output
    channels: quantize_static's per-channel axis for MatMul weights is the last one, which for
    a first input is the reduction axis (no INT8 GEMM applies such scales)."""
    inits = {i.name: i for i in qdq.graph.initializer}
    floats = {i.name: onnx.numpy_helper.to_array(i) for i in fp32.graph.initializer}
    source = {n.name: n for n in fp32.graph.node}
    made_by = {o: n for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:
        if node.op_type != "MatMul" or node.name not in source:
            continue
        weight = source[node.name].input[0]
        dq = made_by.get(node.input[0])
        if weight not in floats or dq is None or dq.op_type != "DequantizeLinear":
            continue
        w = floats[weight]
        scale = np.abs(w).max(axis=1) / 127
        scale[scale == 0] = 1.0  # a zero row: any scale gives zeros (onnxruntime uses 1 too)
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        values = (q, scale.astype(np.float32), np.zeros_like(q[:, 0]))
        for name, value in zip(dq.input, values, strict=True):
            inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
        del dq.attribute[:]  # per row: axis 0, whatever quantize_static wrote
        dq.attribute.append(onnx.helper.make_attribute("axis", 0))
    return qdq


def _rounded(raw: np.ndarray) -> np.ndarray:
    """A raw 3 x H x W output as the 8-bit H x W x 3 image it is scored as."""
    return to_uint8(raw.transpose(1, 2, 0))


def _sr(runner, lr: np.ndarray) -> np.ndarray:
    return _rounded(runner.raw(lr))


def _pooled_mse(
    outputs: list[np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]], scale: int
) -> float:
    """Mean squared Y error of several crops taken together (each shaved as the paper's
    protocol shaves an image). Pooled because a flat crop of a slide is near-lossless: its own
    PSNR (60 dB or more) swings by whole dB over errors no one sees, and a mean of such drops
    would too."""
    from lbnet_deploy.quality.metrics import shaved_y

    shaved = [shaved_y(out, hr, scale) for out, (hr, _) in zip(outputs, pairs, strict=True)]
    return float(np.mean(np.concatenate([((a - b) ** 2).ravel() for a, b in shaved])))


def _pooled_drop(reference: float, candidate: float) -> float:
    """PSNR(reference) - PSNR(candidate) in dB from their pooled MSEs; finite also where one is
    0 (a lossless crop set: its PSNR is infinite), so the search's comparisons hold."""
    floor = 1e-12  # far below one 8-bit step squared over any crop set
    return float(10 * np.log10(max(candidate, floor) / max(reference, floor)))


@dataclass
class _Scorer:
    """The FP32 graph's outputs on held-out (HR, LR) pairs, computed once; a candidate graph is
    scored by its output error against them and by its PSNR drop against HR. `graphics`
    (crops of synthetic slides, `data.graphics_pairs`) are scored besides the photo `pairs`."""

    graph: onnx.ModelProto
    pairs: list[tuple[np.ndarray, np.ndarray]]
    scale: int
    graphics: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from lbnet_deploy.quality.metrics import psnr_y

        from .session import GraphRunner

        ref = GraphRunner(self.graph)  # each crop through the FP32 graph once
        self.raw = [ref.raw(lr) for _, lr in self.pairs]
        self.graphics_raw = [ref.raw(lr) for _, lr in self.graphics]
        self.psnr = [
            psnr_y(_rounded(raw), hr, self.scale)
            for (hr, _), raw in zip(self.pairs, self.raw, strict=True)
        ]
        if self.graphics:
            outputs = [_rounded(raw) for raw in self.graphics_raw]
            self.graphics_mse = _pooled_mse(outputs, self.graphics, self.scale)

    def error(self, candidate: onnx.ModelProto, count: int) -> float:
        """Mean squared output difference to FP32 on the first `count` photo pairs and every
        graphics pair (0..255 scale)."""
        from .session import GraphRunner

        runner = GraphRunner(candidate)
        scored = [*zip(self.pairs[:count], self.raw, strict=False)]
        scored += zip(self.graphics, self.graphics_raw, strict=True)
        return float(np.mean([np.mean((runner.raw(lr) - ref) ** 2) for (_, lr), ref in scored]))

    def drop(self, candidate: onnx.ModelProto) -> float:
        """PSNR(FP32 vs HR) - PSNR(candidate vs HR) in dB: the mean over the photo pairs, or the
        pooled drop over the graphics pairs where that is larger."""
        from lbnet_deploy.quality.metrics import psnr_y

        from .session import GraphRunner

        runner = GraphRunner(candidate)
        drops = [
            ref - psnr_y(_sr(runner, lr), hr, self.scale)
            for (hr, lr), ref in zip(self.pairs, self.psnr, strict=True)
        ]
        photos = float(np.mean(drops))
        if not self.graphics:
            return photos
        outputs = [_sr(runner, lr) for _, lr in self.graphics]
        pooled = _pooled_mse(outputs, self.graphics, self.scale)
        return max(photos, _pooled_drop(self.graphics_mse, pooled))


@dataclass
class MixedResult:
    graph: onnx.ModelProto
    float_layers: list[str]
    sensitivity: dict[str, float]  # layer -> output MSE when only that layer is INT8
    drop: float  # PSNR drop of the returned graph on the held-out pairs
    int8_mac_share: float  # of the conv and linear multiply-adds


# how many held-out photo pairs score each layer alone, beside every graphics pair (all of them
# score the chosen graphs): the ranking needs an order, not the final number, and ~120 layers are
# scored
SENSITIVITY_PAIRS = 8


def quantize_mixed(
    quantizer: Quantizer,
    pairs,
    scale: int,
    max_psnr_drop: float = 0.05,
    progress: bool = True,
    graphics=(),
) -> MixedResult:
    """The most multiply-adds INT8 within `max_psnr_drop` on held-out (HR, LR) `pairs` (NOT
    used for calibration: `data.holdout_pairs`) and, pooled, on `graphics` pairs
    (`data.graphics_pairs`).

    Each layer is scored alone (only it INT8: the output error it adds); layers are then kept
    float in order of error per multiply-add (cheap, sensitive layers first: the image-range
    convolutions, head, tail, the one-hot token convolutions), and how many of that order stay
    float is found by bisection: the fewest that meet the limit where the measured drop grows
    with the INT8 layers added (it does, up to the noise of the held-out crops).
    """
    from tqdm import tqdm

    scorer = _Scorer(quantizer.graph, pairs, scale, list(graphics))
    every = quantizer.quantize()
    drop = scorer.drop(every)
    if drop <= max_psnr_drop:  # all INT8 already holds: nothing to rank
        return MixedResult(every, [], {}, drop, quantizer.mac_share())
    names = list(quantizer.layers)
    sensitivity = {}
    for name in tqdm(names, desc="INT8 sensitivity", unit="layer", disable=not progress):
        alone = quantizer.quantize([other for other in names if other != name])
        sensitivity[name] = scorer.error(alone, SENSITIVITY_PAIRS)
    order = sorted(names, key=lambda k: -sensitivity[k] / max(quantizer.macs[k], 1))
    # bisection for the fewest float layers that hold the limit: 0 does not, all float does
    tried = {0: (drop, every), len(order): (0.0, quantizer.quantize(order))}
    lo, hi = 0, len(order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        graph = quantizer.quantize(order[:mid])
        tried[mid] = (scorer.drop(graph), graph)
        lo, hi = (lo, mid) if tried[mid][0] <= max_psnr_drop else (mid, hi)
    drop, graph = tried[hi]
    return MixedResult(
        graph, sorted(order[:hi]), sensitivity, drop, quantizer.mac_share(order[:hi])
    )
