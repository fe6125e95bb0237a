"""The `lbnet-deploy` command: one sub-command per job, each a thin call into its package.

Heavy imports (torch, onnx, onnxruntime) happen inside the handlers, so `--help` is instant
and the runtime commands work without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from lbnet_deploy import __version__
from lbnet_deploy.errors import LBNetError


def parse_size(text: str) -> tuple[int, int]:
    """'128x96' -> (128, 96): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, got {text!r}")
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_model

    model, desc = load_model(args.model, scale=args.scale, variant=args.variant)
    options = ExportOptions(
        input_size=None if args.dynamic else args.input_size,
        batch=None if args.dynamic_batch else args.batch,
    )
    report = export_onnx(model, args.output, options)
    print(
        f"exported {desc.variant} x{desc.scale} ({options.size_label}, batch "
        f"{options.batch or 'dynamic'}, fp32) to {report.path}: {report.file_bytes / 1e6:.2f} MB, "
        f"{report.onnx_params:,} parameters, {report.ops.get('Softmax', 0)} Softmax nodes, "
        f"{report.seconds:.1f} s"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from lbnet_deploy.export.inspect import describe_file

    print(describe_file(args.file))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbnet-deploy", description="Export, verify and run LBNet super-resolution models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch size")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="expected scale (checked)")
    p.add_argument("--variant", choices=("LBNet", "LBNet-T"), help="expected variant (checked)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="print an exported file's facts and operator histogram")
    p.add_argument("file", help=".onnx file")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except LBNetError as exc:
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lbnet-deploy: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. an unwritable output folder: one line, not a traceback
        if os.environ.get("LBNET_DEBUG"):
            raise
        print(f"lbnet-deploy: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
