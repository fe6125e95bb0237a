"""One TransBlock's banded attention in ONNX Runtime CPU, three ways, same inputs, interleaved:
MatMul -> Softmax -> MatMul (what we export), ORT's fused com.microsoft.MultiHeadAttention
(its CPU flash-attention path) and ONNX's opset-23 Attention. Answers whether a fused kernel
would beat the exported form on this CPU (it is not TensorRT-parsable on TensorRT 10, so it
would be a CPU-only variant).

`--openvino`: the same attention in OpenVINO's CPU plugin, which fuses it into one kernel (its
Snippets MHA, a `Subgraph` node), timed at several head widths in FP32 and BF16 (where the CPU
has it). The products grow with the head width, the softmax does not (one exp per score): a
time that hardly moves with the width is bound by the per-score work, not by the products.

    python benchmarks/studies/attention_kernels.py [--runs 7] [--size 128] [--openvino]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

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


def openvino_widths(
    size: int, heads: int, widths: tuple[int, ...], runs: int
) -> dict[str, dict[int, dict[str, Any]]]:
    """precision -> head width -> {median_s, gmacs_per_s, ns_per_score, kernels} of OpenVINO's
    fused attention over 16 runs of N/16 tokens (FP32; BF16 where the CPU computes it)."""
    import openvino as ov
    import openvino.opset13 as ops

    from lbnet_deploy.runtime.openvino import compile_config

    core = ov.Core()
    precisions = ["fp32"]
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        precisions.append("bf16")
    length = max(size * size // 16, 1)
    scores = 16 * heads * length * length
    rng = np.random.default_rng(0)
    calls, kernels = {}, {}
    for precision in precisions:
        for width in widths:
            shape = [16, heads, length, width]
            q, k, v = (ops.parameter(shape, np.float32, name=n) for n in "qkv")
            out = ops.matmul(ops.softmax(ops.matmul(q, k, False, True), -1), v, False, False)
            config = compile_config("CPU", cpus_available(), precision) | {"PERF_COUNT": True}
            compiled = core.compile_model(ov.Model([out], [q, k, v]), "CPU", config)
            request = compiled.create_infer_request()
            feeds = [rng.standard_normal(shape, np.float32) for _ in "qkv"]
            request.infer(feeds)
            kernels[f"{precision}/{width}"] = sorted(
                {f"{p.node_type} ({p.exec_type})" for p in request.profiling_info
                 if p.real_time.total_seconds() > 0}
            )  # fmt: skip
            calls[f"{precision}/{width}"] = partial(request.infer, feeds)
    times = interleaved(calls, 1, runs)
    result: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in precisions}
    for key, samples in times.items():
        precision, width = key.split("/")[0], int(key.split("/")[1])
        median = summarize(samples)["median_s"]
        result[precision][width] = {
            "median_s": median,
            "gmacs_per_s": 2 * scores * width / 1e9 / median,
            "ns_per_score": median / scores * 1e9,
            "kernels": kernels[key],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="LR side: N = size^2 tokens (128)")
    p.add_argument("--heads", type=int, default=6, help="6: LBNet-T")
    p.add_argument("--dim", type=int, default=27, help="head width (27: LBNet-T)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--openvino", action="store_true", help="OpenVINO's fused attention by width")
    args = p.parse_args(argv)
    if args.openvino:
        widths = tuple(sorted({8, args.dim, -(-args.dim // 16) * 16, 64}))
        print(f"OpenVINO, one TransBlock's attention at {args.size}x{args.size}, by head width")
        for precision, rows in openvino_widths(args.size, args.heads, widths, args.runs).items():
            for width, row in rows.items():
                print(
                    f"{precision:5s} width {width:3d}: median {row['median_s'] * 1e3:6.1f} ms  "
                    f"{row['gmacs_per_s']:6.1f} GMAC/s  {row['ns_per_score']:.3f} ns per score  "
                    f"{', '.join(row['kernels'])}"
                )
        return 0
    print(f"one TransBlock application at {args.size}x{args.size}: 16 runs x {args.heads} heads")
    for name, r in compare(args.size, args.heads, args.dim, args.runs).items():
        print(
            f"{name:36s} median {r['median_s'] * 1e3:7.1f} ms  {r['gmacs_per_s']:5.1f} GMAC/s  "
            f"max abs vs exported {r['max_abs']:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
