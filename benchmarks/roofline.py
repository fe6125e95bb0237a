"""This CPU's measured FP32 peak, from large square MatMuls in numpy (BLAS) and ONNX Runtime."""

from __future__ import annotations

import time

import numpy as np

from .machine import cpus_available


def _best_rate(fn: object, macs: float, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return macs / best


def _ort_matmul(n: int, threads: int) -> object:
    from onnx import TensorProto, helper

    from lbnet_deploy.runtime.onnxrt import create_session

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    out = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "a"], ["c"])], "mm", [a], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    session = create_session(model.SerializeToString(), threads=threads)
    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    return lambda: session.run(None, {"a": x})


def measure_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float | str]:
    """Best-of-`repeats` multiply-adds per second of an n x n x n FP32 MatMul (n^3 MACs)."""
    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    macs = float(n) ** 3
    numpy_rate = _best_rate(lambda: x @ x, macs, repeats)
    ort_rate = _best_rate(_ort_matmul(n, threads), macs, repeats)
    # numpy's BLAS uses every CPU whatever `threads` says: it only counts when that is all
    use_numpy = threads >= cpus_available()
    peak = max(numpy_rate, ort_rate) if use_numpy else ort_rate
    source = "max of numpy (BLAS) and ORT CPU" if use_numpy else "ORT CPU (numpy's BLAS ignores"
    source += "" if use_numpy else " the thread count)"
    return {
        "numpy_gmacs": round(numpy_rate / 1e9, 2),
        "ort_gmacs": round(ort_rate / 1e9, 2),
        "peak_gmacs": round(peak / 1e9, 2),
        "threads": threads,
        "method": f"best of {repeats} FP32 {n}x{n}x{n} MatMuls, {source}, {threads} threads; "
        "1 MAC = 1 multiply-add = 2 FLOP",
    }
