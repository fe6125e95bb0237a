"""Which ONNX operators TensorRT's ONNX parser accepts, checked on every exported graph.

Source: onnx/onnx-tensorrt, docs/operators.md at commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c
("TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"): every row
marked "Y". Kept by hand because no package ships this list.
"""

from __future__ import annotations

from collections import Counter

import onnx

from lbnet_deploy.errors import LBNetError

TRT10_OPSET_RANGE = (9, 20)
TRT10_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish
    Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu
    Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool
    Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
    Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
    Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()  # noqa: SIM905 (kept in the source document's wrapped form)
)
# The parser's restriction "`axes` must be an initializer" (docs/operators.md), by the input
# that holds the axes (Pad, Slice: 4th; ReduceMax/ReduceMean from opset 18, Squeeze: 2nd)
CONSTANT_AXES_INPUT = {"Pad": 3, "Slice": 3, "ReduceMax": 1, "ReduceMean": 1, "Squeeze": 1}
# Parsable, but control flow defeats engine optimisation and fixed-shape builds: we never emit it.
BANNED_OPS = frozenset({"Loop", "If", "Scan", "Col2Im"})


def op_histogram(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def check_trt_parsable(model: onnx.ModelProto) -> None:
    """Raise if the graph holds an operator or form TensorRT 10's parser rejects."""
    ops = set(op_histogram(model))
    bad = sorted(op for op in ops if op not in TRT10_SUPPORTED_OPS or op in BANNED_OPS)
    bad += sorted(op for op in ops if op.startswith("Sequence"))
    if bad:
        raise LBNetError(f"graph is not TensorRT-parsable: operators {', '.join(sorted(set(bad)))}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not TRT10_OPSET_RANGE[0] <= opset <= TRT10_OPSET_RANGE[1]:
        raise LBNetError(f"graph uses opset {opset}; TensorRT 10 parses {TRT10_OPSET_RANGE}")
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in model.graph.node:
        index = CONSTANT_AXES_INPUT.get(node.op_type)
        axes = node.input[index] if index is not None and len(node.input) > index else ""
        if axes and axes not in consts:
            raise LBNetError(
                f"{node.op_type} node {node.name!r} has non-constant axes (TensorRT rejects)"
            )
