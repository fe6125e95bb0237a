"""`lbnet-deploy upscale`: image files, folders and globs -> PNGs, tiled within a memory budget."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.runtime.images import DEFAULT_QUALITY, FORMATS
from lbnet_deploy.runtime.registry import AUTO

from .options import add_runtime_options, check_scale

if TYPE_CHECKING:
    from lbnet_deploy.runtime.backend import Runner
    from lbnet_deploy.runtime.upscaler import Upscaler


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.runtime.files import (
        check_output_dir,
        expand_inputs,
        output_paths,
        upscale_files,
    )
    from lbnet_deploy.runtime.images import OutputFormat

    output = OutputFormat(args.format, args.quality)  # a bad --quality: before any work
    inputs = expand_inputs(args.inputs)
    out_dir = Path(args.output)
    # an output that is an input (or another output): refused before any export
    outputs = output_paths(inputs, out_dir, output, args.suffix)
    check_output_dir(out_dir)
    upscaler, where = upscaler_for(args, args.model, args.precision)
    summary = upscale_files(upscaler, inputs, out_dir, not args.quiet, outputs, output)
    print(f"{summary.line()} on {where}")
    return 1 if summary.failed else 0


def describe_where(runner: Runner, backend: str, model: str) -> str:
    """Which backend really ran, as its registry entry reports it (bicubic: numpy)."""
    from lbnet_deploy.runtime.registry import BACKENDS
    from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES

    if model.startswith("bicubic"):
        return "numpy (bicubic)"
    name = "tensorrt" if model.endswith(ENGINE_SUFFIXES) else backend
    return f"{name} ({BACKENDS[name].where(runner)})"


def upscaler_for(
    args: argparse.Namespace, model: str, precision: str | None = None
) -> tuple[Upscaler, str]:
    """The Upscaler the options ask for, and where it runs (for the summary line; with
    `--backend auto`, also which backend was chosen and why)."""
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES
    from lbnet_deploy.runtime.upscaler import Upscaler

    backend, why = args.backend, ""
    if backend == AUTO:
        from lbnet_deploy.benchmarks.choose import open_auto

        if not args.cuda_graph and not model.endswith(ENGINE_SUFFIXES):  # auto picks a CPU
            raise LBNetError("--no-cuda-graph is for TensorRT engines: add --backend tensorrt")
        runner, choice = open_auto(
            model, args.threads, precision=precision, scale=args.scale, tile=args.tile,
            batch=args.batch, cuda_graph=args.cuda_graph,
        )  # fmt: skip
        backend, why = choice.backend, f"; {choice.note()}"
    else:
        runner = open_runner(
            model, backend, args.threads, tile=args.tile, batch=args.batch,
            precision=precision, scale=args.scale, cuda_graph=args.cuda_graph, url=args.url,
        )  # fmt: skip
    check_scale(runner.scale, args.scale, model)
    upscaler = Upscaler(
        runner, tile=args.tile, overlap=args.overlap, memory_budget_mb=args.memory_budget,
        batch=args.batch, merge=args.merge,
    )  # fmt: skip
    return upscaler, describe_where(runner, backend, model) + why


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="super-resolve image files, folders or globs")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, help="output folder (same base names)")
    p.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="png",
        help="output file format (default png: 16 bits per channel for 16-bit inputs; jpg, "
        "webp and tiff are 8-bit); the input's ICC profile is carried over",
    )
    p.add_argument(
        "--quality",
        type=int,
        metavar="1..100",
        help=f"jpg and webp quality (default {DEFAULT_QUALITY})",
    )
    p.add_argument(
        "--suffix",
        default="",
        help="added to each output's base name (e.g. _x4: photo.jpg -> photo_x4.png), so "
        "outputs can sit beside their inputs",
    )
    p.add_argument("--model", default="lbnet-t-x4", help="name, .pt or .onnx (default lbnet-t-x4)")
    add_runtime_options(p, backend=AUTO)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
