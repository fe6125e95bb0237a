"""FP32 LBNet graph -> explicit-quantization (QDQ) INT8 graph that TensorRT builds as is.

Built on `onnxruntime.quantization.quantize_static` (QDQ format, symmetric S8S8, per-channel
weights): it calibrates, places Q/DQ pairs and folds weight scales; what is ours is *where*:

- only Conv and the linear-layer MatMuls (weight initializer as second input) are quantized:
  the pairs TensorRT fuses into INT8 kernels. Attention products (q @ k^T, softmax @ v),
  Softmax and LayerNormalization stay float: quantizing them needs TensorRT-specific placement
  and was not measured to be harmless.
- blocks (head, r1/r2/r3, channel attention, fusion c1, transformer stages, tail) are ranked by
  the PSNR each loses when quantized alone, and the most sensitive stay float until the whole
  graph meets `max_psnr_drop` on held-out crops of the calibration photos.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.errors import LBNetError

METHODS = ("MinMax", "Entropy", "Percentile")


def _weight_prefix(graph: onnx.ModelProto, node: onnx.NodeProto) -> str:
    inits = {i.name for i in graph.graph.initializer}
    return next((i for i in node.input[1:] if i in inits), "")


def quantizable_nodes(graph: onnx.ModelProto) -> list[str]:
    """Conv nodes and MatMuls with a constant weight (linear layers), in graph order."""
    inits = {i.name for i in graph.graph.initializer}
    return [
        n.name for n in graph.graph.node
        if n.op_type == "Conv" or (n.op_type == "MatMul" and n.input[1] in inits)
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
    """Calibrates once (ranges cached in `workdir`), then quantizes any subset of blocks."""

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
        # quantize_static given a ModelProto round-trips it through external data in a temp
        # folder it has already removed when it reads it back: hand it a file instead
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._source = self.workdir / "fp32.onnx"
        onnx.save(self.graph, self._source)

    def quantize(self, exclude: Sequence[str] = ()) -> onnx.ModelProto:
        """QDQ INT8 graph with every block but `exclude` quantized; metadata records both."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        unknown = sorted(set(exclude) - set(self.blocks))
        if unknown:
            raise LBNetError(f"unknown blocks {unknown}; the graph has {sorted(self.blocks)}")
        nodes = [n for b, ns in self.blocks.items() if b not in exclude for n in ns]
        out = self.workdir / "int8.onnx"
        cache = self.workdir / f"ranges-{self.method}.json"
        if self.method == "Entropy" and not cache.is_file():
            self._entropy_ranges(cache)
        quantize_static(
            self._source, out, _Reader(self.crops, self.graph.graph.input[0].name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "MatMul"],
            nodes_to_quantize=nodes, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, self.method),
            extra_options={
                "ActivationSymmetric": True,  # TensorRT requires zero point 0 (DEPLOY.md)
                "WeightSymmetric": True,
                # TensorRT takes float biases; an int32 bias DQ is not an INT8 fusion it does
                "QuantizeBias": False,
                "CalibMovingAverage": False,
            },
            calibration_cache_path=cache,
        )  # fmt: skip
        model = onnx.load(out)
        props = {p.key: p.value for p in self.graph.metadata_props}
        props.update(
            {
                "lbnet.precision": "int8",
                "lbnet.int8_method": self.method,
                "lbnet.int8_excluded": ",".join(sorted(exclude)),
                "lbnet.int8_calibration_crops": "{}x{}x{}".format(
                    len(self.crops), *self.crops.shape[2:]
                ),
            }
        )
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        return model

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


def _psnr_drop(reference: onnx.ModelProto, candidate: onnx.ModelProto, pairs, scale: int) -> float:
    """Mean PSNR(ref vs HR) - PSNR(candidate vs HR) over (HR, LR) pairs, in dB."""
    from lbnet_deploy.quality.metrics import psnr_y

    from .session import GraphRunner

    ref, cand = GraphRunner(reference), GraphRunner(candidate)
    drops = [psnr_y(ref(lr), hr, scale) - psnr_y(cand(lr), hr, scale) for hr, lr in pairs]
    return float(np.mean(drops))


@dataclass
class MixedResult:
    graph: onnx.ModelProto
    excluded: list[str]
    sensitivity: dict[str, float]  # block -> PSNR drop when only that block is quantized
    drop: float  # PSNR drop of the returned graph on the held-out pairs


def quantize_mixed(
    quantizer: Quantizer, pairs, scale: int, max_psnr_drop: float = 0.10
) -> MixedResult:
    """Quantize everything, then keep the most sensitive blocks float until the drop holds.

    `pairs` are (HR, LR) crops NOT used for calibration (`data.holdout_pairs`).
    """
    names = list(quantizer.blocks)
    sensitivity = {
        b: _psnr_drop(
            quantizer.graph, quantizer.quantize([o for o in names if o != b]), pairs, scale
        )
        for b in names
    }
    order = sorted(names, key=lambda b: -sensitivity[b])
    excluded: list[str] = []
    while True:
        graph = quantizer.quantize(excluded)
        drop = _psnr_drop(quantizer.graph, graph, pairs, scale)
        if drop <= max_psnr_drop or len(excluded) == len(names) - 1:
            return MixedResult(graph, excluded, sensitivity, drop)
        excluded.append(order[len(excluded)])
