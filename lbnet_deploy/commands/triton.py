"""`lbnet-deploy triton`: an engine or ONNX graph -> a Triton Inference Server model folder."""

from __future__ import annotations

import argparse

from lbnet_deploy.errors import LBNetError


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.export.triton import model_io, write_repository

    io = model_io(Path(args.model))
    if args.cpu and io.platform == "tensorrt_plan":  # Triton would refuse to load it
        raise LBNetError("a TensorRT engine runs on GPUs only: drop --cpu, or serve the .onnx")
    facts = io.lbnet
    name = args.name or "{}_x{}_{}".format(
        facts.get("variant", "lbnet").lower().replace("-", "_"), facts["scale"],
        facts.get("precision", "fp32"),
    )  # fmt: skip
    target = write_repository(
        args.model, io, args.repository, name, version=args.version, max_batch=args.max_batch,
        instances=args.instances, kind="KIND_CPU" if args.cpu else "KIND_GPU",
    )  # fmt: skip
    print(f"wrote Triton model {target} ({io.platform}, version {args.version})")
    if io.platform == "tensorrt_plan":
        engine = io.engine
        assert engine is not None
        print(
            f"  the plan runs only in a Triton container with TensorRT {engine.tensorrt} on GPUs "
            f"of compute capability {engine.compute_capability} ({engine.gpu})"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="Triton Inference Server model folder for an engine or .onnx")
    p.add_argument("model", help="engine (.plan/.engine/.trt, with its sidecar) or .onnx")
    p.add_argument("--repository", required=True, help="Triton model repository folder")
    p.add_argument("--name", help="model name (default e.g. lbnet_t_x4_fp16)")
    p.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    p.add_argument(
        "--max-batch", type=int, default=8, help="for dynamic-batch graphs only (default 8)"
    )
    p.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    p.add_argument("--cpu", action="store_true", help="KIND_CPU (ONNX on CPU) instead of GPU")
    p.set_defaults(func=run)
