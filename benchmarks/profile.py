"""The runtimes' own profiles of a graph: ONNX Runtime's, summarised as the op types that take
the time and the share spent in the attention core (Softmax and the two products around it),
and OpenVINO's per-node counters, which also name the kernel each node ran (its ISA and
library: `brgemm_avx512_bf16`, `jit_avx2`, ...)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Set
from pathlib import Path
from typing import Any

import numpy as np
import onnx

PRODUCTS = ("MatMul", "FusedMatMul")
# ops that may sit between q k^T and its Softmax in some export (an unfused scale, a reshape)
_PASS_THROUGH = ("Mul", "Div", "Add", "Reshape", "Transpose", "Cast")
_KERNEL = "_kernel_time"


def attention_core_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of each Softmax, the product feeding it (q k^T) and the ones consuming it (.v)."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    core: set[str] = set()
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        core.add(softmax.name)
        node = producer.get(softmax.input[0])
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in PRODUCTS:
            core.add(node.name)
        core.update(n.name for n in consumers[softmax.output[0]] if n.op_type in PRODUCTS)
    return core


def kernel_events(events: list[dict[str, Any]]) -> Iterator[tuple[str, str, float]]:
    """(node name, op type, seconds) of every kernel run in ORT's Chrome-trace JSON events."""
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith(_KERNEL):
            op = event.get("args", {}).get("op_name", "?")
            yield name[: -len(_KERNEL)], op, event.get("dur", 0) / 1e6


def summarize_profile(
    events: list[dict[str, Any]], runs: int, top: int = 10, core: Set[str] = frozenset()
) -> dict[str, Any]:
    """Top op types by kernel time per run, all kernels' time per run and the part of it spent
    in the `core` nodes, from ORT's Chrome-trace JSON events."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    core_s = 0.0
    for name, op, seconds in kernel_events(events):
        total[op] += seconds
        count[op] += 1
        if name in core:
            core_s += seconds
    return _top(total, count, runs, top) | {"attention_core_s": round(core_s / runs, 4)}


def _top(total: dict[str, float], count: dict[str, int], runs: int, top: int) -> dict[str, Any]:
    grand = sum(total.values()) or 1.0
    rows = sorted(total.items(), key=lambda kv: -kv[1])[:top]
    return {
        "top": [
            {
                "op": op,
                "seconds_per_run": round(sec / runs, 4),
                "share": round(sec / grand, 3),
                "nodes": count[op] // max(runs, 1),
            }
            for op, sec in rows
        ],
        "kernel_s": round(sum(total.values()) / runs, 4),
    }


def profile_onnx(path: str | Path, x: np.ndarray, threads: int, runs: int = 2) -> dict[str, Any]:
    """Run `path` runs + 1 times with ORT profiling on and summarise per run.

    The first (warm-up) run is in the trace too; averaging it in moves the shares very little,
    and ORT offers no way to start profiling after it. The attention core is found in the graph
    ORT actually ran (saved after its fusions), whose node names the profile uses."""
    from lbnet_deploy.runtime.onnxrt import create_session

    with tempfile.TemporaryDirectory() as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")
        session = create_session(
            Path(path), threads=threads, enable_profiling=True,
            profile_file_prefix=os.path.join(tmp, "ort"), optimized_model_filepath=optimized_path,
        )  # fmt: skip
        optimized = onnx.load(optimized_path, load_external_data=False)
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarize_profile(events, runs + 1, core=attention_core_nodes(optimized.graph))


def profile_openvino(
    path: str | Path, x: np.ndarray, threads: int, compute: str = "fp32", runs: int = 2
) -> dict[str, Any]:
    """OpenVINO's per-node counters (PERF_COUNT) of a fixed-size graph on the CPU, after one
    uncounted warm-up run: the top "node type (kernel)" pairs by time per run, where the kernel
    is OpenVINO's exec type (which ISA and library ran it)."""
    from lbnet_deploy.runtime.openvino import compile_config, core, set_compute

    ov_core = core()
    config = compile_config("CPU", threads, compute) | {"PERF_COUNT": True}
    model = ov_core.read_model(str(path))
    set_compute(model, compute, path)  # as the runner compiles it
    request = ov_core.compile_model(model, "CPU", config).create_infer_request()
    request.infer({0: x})
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for _ in range(runs):
        request.infer({0: x})  # the counters are the last run's
        for info in request.get_profiling_info():
            if info.status.name == "EXECUTED":
                key = f"{info.node_type} ({info.exec_type})"
                total[key] += info.real_time.total_seconds()
                count[key] += 1
    return _top(total, count, runs, top=10) | {"compute": compute}


def main(argv: list[str] | None = None) -> int:
    """Which kernel OpenVINO runs each node type of a fixed-size graph with, on this CPU. Under
    QEMU's CPU models it tells what another ISA would run (the times are then emulation's,
    not that CPU's), e.g. an AVX2-only CPU on any x86-64 machine:
    `qemu-x86_64 -cpu Haswell "$(command -v python3)" -m lbnet_deploy.benchmarks.profile G`."""
    import openvino as ov

    from lbnet_deploy.runtime.onnxrt import default_threads

    p = argparse.ArgumentParser(description=(main.__doc__ or "").split(".")[0])
    p.add_argument("graph", help="a fixed-size .onnx graph (export --input-size)")
    p.add_argument("--compute", default="fp32", choices=("fp32", "bf16", "bf16-attn"))
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.metadata import from_metadata
    from lbnet_deploy.runtime.openvino import check_device, core

    try:
        model = onnx.load(args.graph, load_external_data=False)
    except OSError as exc:
        raise SystemExit(f"{args.graph}: {exc}") from None
    except Exception as exc:  # protobuf's DecodeError: not an ONNX file
        raise SystemExit(f"{args.graph}: not a readable ONNX graph ({exc})") from None
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    shape = [d.dim_value for d in dims]
    if not shape or not all(shape):
        raise SystemExit(f"{args.graph}: not a fixed-size graph (its input is {shape})")
    own = from_metadata({m.key: m.value for m in model.metadata_props}).get("precision", "fp32")
    if args.compute != "fp32" and own != "fp32":  # as the runner refuses it
        raise SystemExit(f"{args.graph}: --compute {args.compute} needs an FP32 graph, not {own}")
    ov_core = core()
    try:
        check_device(ov_core, "CPU", args.compute)  # no BF16 (an AVX2 CPU): one line
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        threads = args.threads or default_threads()
        result = profile_openvino(args.graph, x, threads, args.compute, runs=1)
    except LBNetError as exc:  # e.g. bf16-attn over a graph with no attention (names the file)
        raise SystemExit(str(exc)) from None
    caps = ov_core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(f"OpenVINO {ov.get_version()}, CPU capabilities {', '.join(caps)}; {args.compute}:")
    for row in result["top"]:
        print(f"  {row['op']}: {100 * row['share']:.0f}% of the time, {row['nodes']} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
