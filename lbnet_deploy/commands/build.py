"""`lbnet-deploy build`: an exported ONNX graph -> a fixed-size TensorRT engine + its sidecar."""

from __future__ import annotations

import argparse

from lbnet_deploy.errors import LBNetError

from .options import parse_size


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from lbnet_deploy.export.engine_build import BuildOptions, build_engine
    from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES

    if not args.output.endswith(ENGINE_SUFFIXES):
        raise LBNetError(f"name the engine file {', '.join(ENGINE_SUFFIXES)}, not {args.output}")
    options = BuildOptions(
        input_size=args.input_size, batch=args.batch, workspace_mb=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        calibration_cache=Path(args.calibration_cache) if args.calibration_cache else None,
        tf32=args.tf32, weakly_typed=args.weakly_typed, dla_core=args.dla_core,
    )  # fmt: skip
    start = time.perf_counter()
    facts = build_engine(args.model, args.output, options)
    flags = ", ".join(facts.builder_flags) or "none"
    typing = "strongly typed" if facts.strongly_typed else f"weakly typed, flags {flags}"
    if facts.dla_core is not None:
        typing += f", DLA core {facts.dla_core} with GPU fallback"
    print(
        f"built {facts.precision} engine {args.output} for {facts.input_shape} with TensorRT "
        f"{facts.tensorrt} on {facts.gpu} ({typing}) in {time.perf_counter() - start:.0f} s"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="TensorRT engine from an exported ONNX graph (needs a GPU)")
    p.add_argument("model", help=".onnx made by `export` (fp32, fp16) or `calibrate` (int8)")
    p.add_argument("-o", "--output", required=True, help="engine file (.plan, .engine or .trt)")
    p.add_argument(
        "--input-size",
        type=parse_size,
        metavar="HxW",
        help="engine input size, for dynamic-size graphs (engines are fixed-size; default: "
        "the graph's own)",
    )
    p.add_argument("--batch", type=int, help="engine batch, for dynamic-batch graphs (default 1)")
    p.add_argument("--workspace", type=int, default=2048, metavar="MB", help="(default 2048)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file: read if present, updated")
    p.add_argument(
        "--calibration-cache",
        help="implicit INT8 from an FP32 graph with `calibrate --trt-cache`'s cache (TensorRT "
        "10.x only; the Q/DQ graph is the main INT8 path)",
    )
    p.add_argument(
        "--tf32",
        action="store_true",
        help="let FP32 layers run in TF32 (faster; a 10-bit mantissa; off by default so an "
        "fp32 engine matches its graph)",
    )
    p.add_argument(
        "--weakly-typed",
        action="store_true",
        help="TensorRT 10.x fallback: precision flags (FP16 / INT8) instead of strong typing; "
        "TensorRT may then run layers in lower precision than the graph says",
    )
    p.add_argument(
        "--dla-core",
        type=int,
        metavar="N",
        help="Jetson: run on DLA core N with GPU fallback (fp16/int8 graphs; attention and "
        "LayerNorm fall back to the GPU)",
    )
    p.set_defaults(func=run)
