"""One TransBlock's banded attention in ONNX Runtime CPU, three ways, same inputs, interleaved:
MatMul -> Softmax -> MatMul (what we export), ORT's fused com.microsoft.MultiHeadAttention
(its CPU flash-attention path) and ONNX's opset-23 Attention. Answers whether a fused kernel
would beat the exported form on this CPU (it is not TensorRT-parsable on TensorRT 10, so it
would be a CPU-only variant).

    python benchmarks/studies/attention_kernels.py [--runs 7] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import numpy as np
import onnx
from onnx import TensorProto, helper

from lbnet_deploy.benchmarks.machine import cpus_available
from lbnet_deploy.benchmarks.stats import summarize
from lbnet_deploy.benchmarks.timing import interleaved


def _model(nodes: list[onnx.NodeProto], shape: list[int], opsets: dict[str, int]) -> bytes:
    def info(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(nodes, "attention", [info("q"), info("k"), info("v")], [info("o")])
    opset_imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    # IR 10: what ONNX Runtime 1.2x reads (onnx >= 1.19 writes newer by default)
    return helper.make_model(graph, ir_version=10, opset_imports=opset_imports).SerializeToString()


def graphs(runs: int, heads: int, length: int, dim: int) -> dict[str, tuple[bytes, str]]:
    """name -> (model bytes, input layout); q is pre-scaled in all three (scale=1)."""
    bhld = [runs, heads, length, dim]
    exported = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    mha = helper.make_node(
        "MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft", num_heads=heads,
        scale=1.0,
    )  # fmt: skip
    attention = helper.make_node("Attention", ["q", "k", "v"], ["o"], scale=1.0)
    return {
        "MatMul-Softmax-MatMul (exported)": (_model(exported, bhld, {"": 20}), "bhld"),
        "com.microsoft.MultiHeadAttention": (
            _model([mha], [runs, length, heads * dim], {"": 20, "com.microsoft": 1}),
            "blhd",
        ),
        "ONNX Attention (opset 23)": (_model([attention], bhld, {"": 23}), "bhld"),
    }


def compare(size: int, heads: int, dim: int, runs: int) -> dict[str, dict[str, float]]:
    """name -> {median_s, gmacs_per_s, max_abs} for one TransBlock application at size x size."""
    import onnxruntime as ort

    length = max(size * size // 16, 1)  # 16 runs of N/16 tokens
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((16, heads, length, dim), np.float32) for _ in "qkv")
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpus_available()
    calls, outputs = {}, {}
    for name, (model, layout) in graphs(16, heads, length, dim).items():
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = {"q": q, "k": k, "v": v}
        if layout != "bhld":  # (runs, tokens, heads * dim), MultiHeadAttention's layout
            feeds = {n: t.transpose(0, 2, 1, 3).reshape(16, length, -1) for n, t in feeds.items()}
        out = session.run(None, feeds)[0]
        if layout != "bhld":
            out = out.reshape(16, length, heads, dim).transpose(0, 2, 1, 3)
        outputs[name] = out
        calls[name] = partial(session.run, None, feeds)
    times = interleaved(calls, 1, runs)
    ref = next(iter(outputs.values()))
    macs = 2 * 16 * heads * length * length * dim
    result = {}
    for name, samples in times.items():
        median = summarize(samples)["median_s"]
        result[name] = {
            "median_s": median,
            "gmacs_per_s": macs / 1e9 / median,
            "max_abs": float(np.abs(outputs[name] - ref).max()),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="LR side: N = size^2 tokens (128)")
    p.add_argument("--heads", type=int, default=6, help="6: LBNet-T")
    p.add_argument("--dim", type=int, default=27, help="head width (27: LBNet-T)")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    print(f"one TransBlock application at {args.size}x{args.size}: 16 runs x {args.heads} heads")
    for name, r in compare(args.size, args.heads, args.dim, args.runs).items():
        print(
            f"{name:36s} median {r['median_s'] * 1e3:7.1f} ms  {r['gmacs_per_s']:5.1f} GMAC/s  "
            f"max abs vs exported {r['max_abs']:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
