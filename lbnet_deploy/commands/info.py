"""`lbnet-deploy info`: what an exported file or engine is, read from the file alone."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES

    if args.file.endswith(ENGINE_SUFFIXES):  # the sidecar: readable without TensorRT
        from lbnet_deploy.runtime.trt_common import engine_info

        print(engine_info(args.file))
        if args.layers:
            print_layers(args.file)
        return 0
    if args.layers:
        raise LBNetError("--layers is for TensorRT engines (.plan, .engine, .trt)")
    from lbnet_deploy.export.onnx_io import describe_file

    print(describe_file(args.file))
    if args.ranges:
        from lbnet_deploy.parity import range_report

        print(range_report(args.file, args.images))
    return 0


def print_layers(engine: str) -> None:
    """The engine's layers as TensorRT's inspector reports them (needs TensorRT and the GPU)."""
    from lbnet_deploy.runtime.engine import TensorRTRunner
    from lbnet_deploy.runtime.trt_common import layer_table

    runner = TensorRTRunner(engine, cuda_graph=False, streams=1)
    try:
        print(layer_table(runner.layers()))
    finally:
        runner.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print an exported file's facts and operator histogram")
    p.add_argument("file", help=".onnx file or TensorRT engine (.plan, .engine, .trt)")
    p.add_argument(
        "--ranges",
        action="store_true",
        help="also measure activation ranges (FP16 safety) on real images",
    )
    p.add_argument("--images", help="photos for --ranges (default as for parity)")
    p.add_argument(
        "--layers",
        action="store_true",
        help="engines: each layer's types and ONNX nodes, from TensorRT's engine inspector "
        "(needs TensorRT and the GPU)",
    )
    p.set_defaults(func=run)
