"""This CPU's measured matrix-multiply peak per precision, with the libraries that run the model.

FP32: numpy (BLAS), ONNX Runtime and OpenVINO; BF16: OpenVINO with its BF16 hint (CPUs with
AVX512-BF16 or AMX); INT8: one Q/DQ MatMul graph (an activation QuantizeLinear ->
DequantizeLinear, int8 weights -> DequantizeLinear, MatMul), the pattern our INT8 graphs hand
both runtimes, which they fuse into an integer matrix product (VNNI/AMX where the CPU has it).
A run's fraction of peak is taken against the peak of the precision it computes in.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lbnet_deploy.errors import LBNetError

from .machine import cpus_available


def _best_rate(fn: Callable[[], object], macs: float, repeats: int) -> float:
    fn()  # warm-up: first-run allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return macs / best


def matmul_graph(n: int, int8: bool = False) -> bytes:
    """An n x n activation times an n x n constant, FP32 or as a Q/DQ INT8 pattern."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    node, inits = helper.make_node, []
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    out = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    if int8:
        w = rng.integers(-127, 128, (n, n), dtype=np.int8)
        inits = [
            numpy_helper.from_array(w, "w_q"),
            numpy_helper.from_array(np.array(0.01, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes = [
            node("QuantizeLinear", ["a", "s", "z"], ["a_q"]),
            node("DequantizeLinear", ["a_q", "s", "z"], ["a_dq"]),
            node("DequantizeLinear", ["w_q", "s", "z"], ["w"]),
            node("MatMul", ["a_dq", "w"], ["c"]),
        ]
    else:
        inits = [numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "w")]
        nodes = [node("MatMul", ["a", "w"], ["c"])]
    graph = helper.make_graph(nodes, "mm", [a], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _ort(graph: bytes, x: np.ndarray, threads: int) -> Callable[[], object]:
    from lbnet_deploy.runtime.onnxrt import create_session

    session = create_session(graph, threads=threads)
    return lambda: session.run(None, {"a": x})


def _openvino(graph: bytes, x: np.ndarray, threads: int, compute: str) -> Callable[[], object]:
    from lbnet_deploy.runtime.openvino import compile_config, core

    ov_core = core()
    with tempfile.TemporaryDirectory() as tmp:  # the ONNX frontend reads files
        path = Path(tmp) / "mm.onnx"
        path.write_bytes(graph)
        model = ov_core.read_model(str(path))
    compiled = ov_core.compile_model(model, "CPU", compile_config("CPU", threads, compute))
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def _library_rates(n: int, threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """GMAC/s per precision and library; a library or precision this machine lacks is absent."""
    import importlib.util

    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    macs = float(n) ** 3
    fp32, int8 = matmul_graph(n), matmul_graph(n, int8=True)
    w = np.random.default_rng(1).random((n, n), dtype=np.float32)
    rates: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}, "int8": {}}
    # numpy's BLAS uses every CPU whatever `threads` says: it only counts when that is all
    if threads >= cpus_available():
        rates["fp32"]["numpy"] = _best_rate(lambda: x @ w, macs, repeats)
    rates["fp32"]["onnxruntime"] = _best_rate(_ort(fp32, x, threads), macs, repeats)
    rates["int8"]["onnxruntime"] = _best_rate(_ort(int8, x, threads), macs, repeats)
    if importlib.util.find_spec("openvino"):
        from lbnet_deploy.runtime.openvino import check_device, core

        rates["fp32"]["openvino"] = _best_rate(_openvino(fp32, x, threads, "fp32"), macs, repeats)
        rates["int8"]["openvino"] = _best_rate(_openvino(int8, x, threads, "fp32"), macs, repeats)
        try:
            check_device(core(), "CPU", "bf16")
        except LBNetError:
            pass  # no BF16 on this CPU: no BF16 peak
        else:
            run = _openvino(fp32, x, threads, "bf16")
            rates["bf16"]["openvino"] = _best_rate(run, macs, repeats)
    return {p: {k: round(v / 1e9, 2) for k, v in r.items()} for p, r in rates.items() if r}


def measure_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, object]:
    """Best-of-`repeats` multiply-adds per second of an n x n x n MatMul (n^3 MACs) in each
    precision and library; each precision's peak is its fastest library."""
    rates = _library_rates(n, threads, repeats)
    peaks = {p: max(r.values()) for p, r in rates.items()}
    return {
        "peak_gmacs": peaks["fp32"],  # FP32: what the CPU-bound comparisons are judged by
        "peaks_gmacs": peaks,
        "rates_gmacs": rates,
        "threads": threads,
        "method": f"best of {repeats} {n}x{n}x{n} MatMuls per precision and library "
        f"(numpy only when it may use every CPU), {threads} threads; INT8 as a Q/DQ graph; "
        "1 MAC = 1 multiply-add = 2 FLOP",
    }


def peak_for(peaks: dict[str, float] | None, precision: str, gpu: bool) -> float | None:
    """The CPU peak a run in `precision` is measured against (None: a GPU run, or unmeasured).
    An FP16 graph on a CPU runs FP32 kernels (ONNX Runtime casts around its FP16 nodes)."""
    if not peaks or gpu:
        return None
    return peaks.get("fp32" if precision == "fp16" else precision)
