"""`lbnet-deploy export`: a checkpoint or model name -> ONNX (fixed or dynamic size, FP32/FP16)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy.metadata import EXPORTED, FORMS, IO_FOR_TOOLS, IO_KINDS

from .options import parse_size, positive_int

if TYPE_CHECKING:
    from lbnet_deploy.export.onnx_export import ExportOptions
    from lbnet_deploy.model.lbnet import LBNet


RANGES = {"unit": "0..1", "255": "0..255"}


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_checkpoint
    from lbnet_deploy.resolve import checkpoint_path
    from lbnet_deploy.runtime.files import check_output_dir, refuse_inputs_as_outputs

    checkpoint = checkpoint_path(args.model, args.scale)  # a name: the file it resolves to
    refuse_inputs_as_outputs([args.output], [checkpoint])
    check_output_dir(Path(args.output).absolute().parent)  # fail before a 30 s export, not after
    model, desc = load_checkpoint(checkpoint, scale=args.scale, variant=args.variant)
    options = ExportOptions(
        input_size=None if args.dynamic else args.input_size,
        batch=None if args.dynamic_batch else args.batch,
        form=args.form,
        io=args.io,
    )
    if args.precision == "fp16":
        return export_fp16(model, args, options)
    report = export_onnx(model, args.output, options)
    print(
        f"exported {desc.variant} x{desc.scale} ({options.size_label}, batch "
        f"{options.batch or 'dynamic'}, fp32, {options.form} attention, {RANGES[options.io]} "
        f"I/O) to {report.path}: "
        f"{report.file_bytes / 1e6:.2f} MB, "
        f"{report.onnx_params:,} parameters, {report.ops.get('Softmax', 0)} Softmax nodes, "
        f"{report.seconds:.1f} s"
    )
    return 0


def export_fp16(model: LBNet, args: argparse.Namespace, options: ExportOptions) -> int:
    """FP32 export to a temporary file, then FP16 conversion with measured FP32 islands."""
    import tempfile

    from lbnet_deploy.export.fp16 import write_fp16
    from lbnet_deploy.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "fp32.onnx", options)
        write_fp16(report.path, args.output, keep_fp32=args.fp16_keep)
    kept = ", ".join(args.fp16_keep)
    print(
        f"exported FP16 graph ({RANGES[options.io]} I/O, FP32 kept: {kept}) to {args.output}; "
        "no Inf/NaN on test patterns"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint or named model to ONNX")
    p.add_argument("model", help="model name (e.g. lbnet-t-x4) or checkpoint path (.pt)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--input-size",
        type=parse_size,
        default=(128, 128),
        metavar="HxW",
        help="fixed LR input size (default 128x128, the engine/tile default)",
    )
    size.add_argument("--dynamic", action="store_true", help="dynamic height and width")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=positive_int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch size")
    p.add_argument(
        "--form",
        choices=FORMS,
        default="batched",
        help="the attention's layout: batched (default; TensorRT fuses it), flat (OpenVINO "
        "fuses it on a CPU), flat16 (flat, head dim padded to 16s: BF16/AMX); the same "
        "network in each, recorded as lbnet.form",
    )
    p.add_argument(
        "--io",
        choices=IO_KINDS,
        default=IO_FOR_TOOLS,
        help="pixel range of the graph's input and output: unit (0..1, default: what chaiNNer, "
        "vs-mlrt, ComfyUI and OpenModelDB files take) or 255 (0..255, the paper's); folded "
        f"into the first and last convolutions, recorded as lbnet.io (default {IO_FOR_TOOLS})",
    )
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="expected scale (checked)")
    p.add_argument("--variant", choices=("LBNet", "LBNet-T"), help="expected variant (checked)")
    p.add_argument(
        "--precision",
        choices=EXPORTED,
        default="fp32",
        help="fp16: FP16 graph with FP32 I/O (INT8: see `calibrate`)",
    )
    p.add_argument(
        "--fp16-keep",
        nargs="+",
        default=["LayerNormalization"],
        metavar="OP|NODE",
        help="op types or node names kept FP32 (default: LayerNormalization, whose "
        "inputs measure above sqrt(65504))",
    )
    p.set_defaults(func=run)
