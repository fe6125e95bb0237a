"""Which Q/DQ patterns ONNX Runtime's CPU provider turns into integer kernels, and what each
buys on this CPU: one LBNet-sized Conv and one linear-layer MatMul, in FP32 and in three Q/DQ
placements, timed interleaved, with the kernels ORT actually ran (from its profiler).

    python benchmarks/studies/int8_kernels.py [--size 128] [--runs 7]

Placements: 'DQ->op' (inputs quantized, float output: what `calibrate` writes for TensorRT,
which fuses it); 'DQ->op->Q->DQ' (the output quantized too: the pattern ORT needs for
QLinearConv / QLinearMatMul).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from lbnet_deploy.benchmarks.machine import cpus_available
from lbnet_deploy.benchmarks.profile import kernel_events
from lbnet_deploy.benchmarks.stats import summarize
from lbnet_deploy.benchmarks.timing import interleaved


def _graph(op: str, x_shape: list[int], w: np.ndarray, y_shape: list[int], mode: str) -> bytes:
    """`op` (Conv or MatMul) on input x with weight w; mode fp32 | dq | dq-q."""
    nodes = []
    x, wt = "x", "w"
    if mode == "fp32":
        inits = [numpy_helper.from_array(w, "w")]
    else:
        # per output channel: Conv weights (O, I, kh, kw) on axis 0, MatMul (K, N) on axis 1
        axis = 0 if op == "Conv" else 1
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
        s_w = (np.abs(w).max(axis=reduce_axes, keepdims=True) / 127).astype(np.float32)
        q_w = np.round(w / s_w).astype(np.int8)
        s_w = s_w.reshape(-1)
        inits = [
            numpy_helper.from_array(q_w, "wq"),
            numpy_helper.from_array(s_w, "sw"),
            numpy_helper.from_array(np.zeros_like(s_w, np.int8), "zw"),
            numpy_helper.from_array(np.array(2.0, np.float32), "sx"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=axis),
        ]
        x, wt = "xd", "wd"
    out = "y" if mode != "dq-q" else "y0"
    node = helper.make_node(op, [x, wt], [out])
    if op == "Conv":
        node.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    nodes.append(node)
    if mode == "dq-q":
        nodes += [
            helper.make_node("QuantizeLinear", ["y0", "sx", "z"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "sx", "z"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 20)])
    return model.SerializeToString()


def _kernels(model: bytes, x: np.ndarray) -> list[str]:
    """Op types ORT ran for `model`, in order, from its profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "p")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return [op for _, op, _ in kernel_events(events)]


def compare(size: int, runs: int) -> dict[str, dict[str, Any]]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    n = size * size
    cases = {  # an FRDAB 3x3 conv (LBNet-T: 40 -> 24 channels) and the fused qkv projection
        "Conv 3x3 40->24": (
            "Conv", [1, 40, size, size], rng.standard_normal((24, 40, 3, 3), np.float32) * 0.05,
            [1, 24, size, size],
        ),
        "MatMul 162->486": (
            "MatMul", [n, 162], rng.standard_normal((162, 486), np.float32) * 0.05, [n, 486],
        ),
    }  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpus_available()
    result: dict[str, dict[str, Any]] = {}
    for case, (op, xs, w, ys) in cases.items():
        x = (rng.random(xs, np.float32) * 100).astype(np.float32)
        calls, kernels = {}, {}
        for mode in ("fp32", "dq", "dq-q"):
            model = _graph(op, xs, w, ys, mode)
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            calls[mode] = partial(session.run, None, {"x": x})
            kernels[mode] = _kernels(model, x)
        times = {m: summarize(t)["median_s"] for m, t in interleaved(calls, 1, runs).items()}
        for mode, t in times.items():
            result[f"{case} [{mode}]"] = {
                "median_s": t,
                "vs_fp32": times["fp32"] / t,
                "kernels": kernels[mode],
            }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="LR side (128)")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    for name, r in compare(args.size, args.runs).items():
        print(
            f"{name:28s} {r['median_s'] * 1e3:7.2f} ms  {r['vs_fp32']:.2f}x fp32  "
            f"kernels: {' '.join(r['kernels'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
