"""The `lbnet-deploy` command: one sub-command per job, each a thin call into its package.

Heavy imports (torch, onnx, onnxruntime) happen inside the handlers, so `--help` is instant
and the runtime commands work without torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy import __version__
from lbnet_deploy.errors import LBNetError

if TYPE_CHECKING:
    from lbnet_deploy.export.onnx_export import ExportOptions
    from lbnet_deploy.model.lbnet import LBNet
    from lbnet_deploy.runtime.upscaler import Upscaler


def parse_size(text: str) -> tuple[int, int]:
    """'128x96' -> (128, 96): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, got {text!r}")
    return h, w


def positive_int(text: str) -> int:
    """An option that counts something (batch, tile, threads): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_model
    from lbnet_deploy.runtime.files import check_output_dir, refuse_inputs_as_outputs

    refuse_inputs_as_outputs([args.output], [args.model])
    check_output_dir(Path(args.output).absolute().parent)  # fail before a 30 s export, not after
    model, desc = load_model(args.model, scale=args.scale, variant=args.variant)
    options = ExportOptions(
        input_size=None if args.dynamic else args.input_size,
        batch=None if args.dynamic_batch else args.batch,
    )
    if args.precision == "fp16":
        return export_fp16(model, args, options)
    report = export_onnx(model, args.output, options)
    print(
        f"exported {desc.variant} x{desc.scale} ({options.size_label}, batch "
        f"{options.batch or 'dynamic'}, fp32) to {report.path}: {report.file_bytes / 1e6:.2f} MB, "
        f"{report.onnx_params:,} parameters, {report.ops.get('Softmax', 0)} Softmax nodes, "
        f"{report.seconds:.1f} s"
    )
    return 0


def export_fp16(model: LBNet, args: argparse.Namespace, options: ExportOptions) -> int:
    """FP32 export to a temporary file, then FP16 conversion with measured FP32 islands."""
    import tempfile
    from pathlib import Path

    from lbnet_deploy.export.fp16 import write_fp16
    from lbnet_deploy.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "fp32.onnx", options)
        write_fp16(report.path, args.output, keep_fp32=args.fp16_keep)
    kept = ", ".join(args.fp16_keep)
    print(f"exported FP16 graph (FP32 kept: {kept}) to {args.output}; no Inf/NaN on test patterns")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from lbnet_deploy.resolve import ENGINE_SUFFIXES

    if args.file.endswith(ENGINE_SUFFIXES):  # the sidecar: readable without TensorRT
        from lbnet_deploy.runtime.engine import engine_info

        print(engine_info(args.file))
        return 0
    from lbnet_deploy.export.inspect import describe_file

    print(describe_file(args.file))
    if args.ranges:
        from lbnet_deploy.export.fp16 import activation_ranges, range_table
        from lbnet_deploy.export.inspect import lbnet_facts, load_onnx
        from lbnet_deploy.parity import image_list, lr_crops
        from lbnet_deploy.runtime.images import read_image

        graph = load_onnx(args.file)
        scale = int(lbnet_facts(graph, args.file)["scale"])  # checked: a foreign graph is 1 line
        sizes = [(32, 32), (48, 40), (64, 64)]
        images = [
            c for p in image_list(args.images) for c in lr_crops(read_image(p).rgb, scale, sizes)
        ]
        print(range_table(activation_ranges(graph, images)))
    return 0


METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.calibration.run import calibrate_file
    from lbnet_deploy.runtime.files import check_output_dir, refuse_inputs_as_outputs

    outputs = [args.output, *([args.trt_cache] if args.trt_cache else [])]
    refuse_inputs_as_outputs(outputs, [args.model])
    for out in outputs:  # before a 10-minute calibration
        check_output_dir(Path(out).absolute().parent)

    report = calibrate_file(
        args.model, args.images, args.output, method=METHOD_NAMES[args.method],
        samples=args.samples, max_psnr_drop=args.max_psnr_drop, seed=args.seed,
        trt_cache=args.trt_cache,
    )  # fmt: skip
    result = report.result
    print("block sensitivity (PSNR drop on held-out crops when only that block is INT8):")
    for block, drop in sorted(result.sensitivity.items(), key=lambda kv: -kv[1]):
        kept = "  kept float" if block in result.excluded else ""
        print(f"  {block:<12} {drop:+.3f} dB{kept}")
    floats = ", ".join(result.excluded) or "none"
    print(
        f"wrote {report.path}: held-out PSNR drop {result.drop:.3f} dB "
        f"(limit {args.max_psnr_drop}); float blocks: {floats}"
    )
    if report.trt_cache:
        print(f"wrote TensorRT calibration cache {report.trt_cache}")
    if args.eval_dataset:
        from lbnet_deploy.evaluate import evaluate, load_samples, table
        from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
        from lbnet_deploy.runtime.upscaler import Upscaler

        q, f = Upscaler(OnnxRuntimeRunner(report.path)), Upscaler(OnnxRuntimeRunner(args.model))
        samples = load_samples(Path(args.eval_dataset), q.runner.scale)
        res = evaluate(
            q, samples, model=str(report.path), variant="int8", dataset=args.eval_dataset,
            baseline=f, baseline_name=str(args.model),
        )  # fmt: skip
        print(table(res))
    return 0


BACKENDS = ("ort", "ort-cuda", "ort-tensorrt", "tensorrt", "torch")


def add_runtime_options(p: argparse.ArgumentParser, budget_mb: int | None = 2048) -> None:
    """Options every command that runs a model shares (budget None: decided by the command)."""
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="expected scale (checked)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="ort",
        help="default: ort (CPU); tensorrt builds a --tile x --tile engine on first use "
        "(engine files choose it by themselves)",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        help="LR tile size (default: whole image if it fits the budget, else 96)",
    )
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in LR pixels (16)")
    p.add_argument("--merge", choices=("feather", "crop"), default="feather")
    p.add_argument(
        "--memory-budget",
        type=int,
        default=budget_mb,
        metavar="MB",
        help="peak inference memory to plan tiles for (default: "
        + (f"{budget_mb} MB)" if budget_mb else "75%% of available memory)"),
    )
    p.add_argument("--batch", type=positive_int, default=1, help="tiles per inference call")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        help="for a model name or .pt: the FP32 (default) or FP16 graph, converted once and "
        "cached (fp16 is the fast path on GPUs: tensorrt, ort-cuda)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads (default and most: CPUs available)"
    )


def check_scale(actual: int, asked: int | None, model: str) -> None:
    if asked is not None and asked != actual:
        raise LBNetError(f"{model} is a x{actual} model, but --scale {asked} was given")


def cmd_upscale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.runtime.files import (
        check_output_dir,
        expand_inputs,
        output_paths,
        upscale_files,
    )

    inputs = expand_inputs(args.inputs)
    out_dir = Path(args.output)
    output_paths(inputs, out_dir)  # an output that is an input: refused before any export
    check_output_dir(out_dir)
    upscaler = _upscaler(args, args.model, args.precision)
    summary = upscale_files(upscaler, inputs, out_dir, progress=not args.quiet)
    print(summary.line())
    return 1 if summary.failed else 0


def cmd_parity(args: argparse.Namespace) -> int:

    from lbnet_deploy.parity import image_list, run_parity
    from lbnet_deploy.runtime.files import check_output_dir
    from lbnet_deploy.runtime.open import open_runner

    if args.json:
        check_output_dir(Path(args.json).absolute().parent)

    runner = open_runner(args.model_file, args.backend, args.threads, tile=args.tile)
    precision = str(runner.describe().get("precision", "fp32"))
    reference = open_runner(args.reference, "torch", args.threads)
    print(f"parity: {args.model_file} ({precision}, {args.backend}) vs PyTorch {args.reference}")
    report = run_parity(
        runner, reference, model_name=args.model_file, reference_name=args.reference,
        images=image_list(args.images), sizes=args.sizes, precision=precision,
        max_abs=args.max_abs, min_psnr=args.min_psnr,
    )  # fmt: skip
    verdict = "PASS" if report.passed else "FAIL"
    print(
        f"{verdict}: max abs {report.max_abs:.5f} (tolerance {report.max_abs_tolerance}), "
        f"min PSNR {report.min_psnr:.1f} dB (tolerance {report.min_psnr_tolerance}) "
        f"over {len(report.cases)} case(s)"
    )
    if args.json:
        from lbnet_deploy.runtime.atomic import write_json_atomic

        write_json_atomic(args.json, report.to_dict())
    return 0 if report.passed else 1


def _upscaler(args: argparse.Namespace, model: str, precision: str | None = None) -> Upscaler:
    from lbnet_deploy.runtime.open import open_runner
    from lbnet_deploy.runtime.upscaler import Upscaler

    runner = open_runner(
        model, args.backend, args.threads, tile=args.tile, batch=args.batch,
        precision=precision, scale=args.scale,
    )  # fmt: skip
    check_scale(runner.scale, args.scale, model)
    return Upscaler(
        runner, tile=args.tile, overlap=args.overlap, memory_budget_mb=args.memory_budget,
        batch=args.batch, merge=args.merge,
    )  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.evaluate import evaluate, find_hr_images, load_samples, table, write_json
    from lbnet_deploy.runtime.files import (
        check_output_dir,
        prepare_output_dir,
        refuse_inputs_as_outputs,
    )

    dataset = Path(args.dataset)
    hr_paths = find_hr_images(dataset)
    # before minutes of work: where the report and the SR images go, and that no SR image
    # would replace one of the dataset's own files
    if args.json:
        check_output_dir(Path(args.json).absolute().parent)
        refuse_inputs_as_outputs([args.json], hr_paths)
    if args.save_sr:
        check_output_dir(args.save_sr)
        lr_dir = dataset / "LR_bicubic"
        lr_files = [p for p in lr_dir.rglob("*") if p.is_file()] if lr_dir.is_dir() else []
        sr_paths = [Path(args.save_sr) / f"{p.stem}.png" for p in hr_paths]
        refuse_inputs_as_outputs(sr_paths, hr_paths + lr_files)

    model = (
        f"bicubic-x{args.scale}" if args.model.startswith("bicubic") and args.scale else args.model
    )
    # memory budget None: scores are compared with whole-image results (the paper, the official
    # code), so every image runs whole that this machine can hold (75% of available memory,
    # re-read per image)
    upscaler = _upscaler(args, model, args.precision)
    baseline = _upscaler(args, args.baseline) if args.baseline else None  # as it is
    failed: list[LBNetError] = []

    def skip(exc: LBNetError) -> None:  # one line per bad image; the others are scored
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        failed.append(exc)

    samples = load_samples(
        dataset, upscaler.runner.scale, lr_from_hr=args.lr_from_hr, on_error=skip
    )
    if not samples:
        raise LBNetError(f"no image of {dataset} could be read")
    save_sr = prepare_output_dir(args.save_sr) if args.save_sr else None
    variant = str(upscaler.runner.describe().get("variant", "?"))
    result = evaluate(
        upscaler, samples, model=model, variant=variant,
        dataset=dataset.resolve().name, ensemble=args.self_ensemble, baseline=baseline,
        baseline_name=args.baseline, save_sr=save_sr, progress=not args.quiet,
    )  # fmt: skip
    print(table(result))
    if failed:
        print(f"scored {len(samples)} of {len(samples) + len(failed)} images", file=sys.stderr)
    if args.json:
        write_json(result, args.json)
    return 1 if failed else 0


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
    batch.add_argument("--batch", type=positive_int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch size")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="expected scale (checked)")
    p.add_argument("--variant", choices=("LBNet", "LBNet-T"), help="expected variant (checked)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="INT8 (Q/DQ) graph from an FP32 export and photos")
    p.add_argument("model", help="FP32 .onnx made by `lbnet-deploy export`")
    p.add_argument("--images", required=True, help="folder of photos (not an evaluation set)")
    p.add_argument("-o", "--output", required=True, help="output INT8 .onnx")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--samples", type=int, default=32, help="calibration crops (default 32)")
    p.add_argument(
        "--max-psnr-drop",
        type=float,
        default=0.05,
        metavar="DB",
        help="keep the most sensitive blocks float until the drop on held-out crops is below "
        "this (default 0.05: half the 0.10 dB promise, a margin for images unlike the photos)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trt-cache", help="also write a TensorRT 10.x calibration cache here")
    p.add_argument("--eval-dataset", help="report FP32 vs INT8 PSNR on this dataset afterwards")
    p.set_defaults(func=cmd_calibrate)

    from lbnet_deploy.export.serve_cli import add_serving_parsers

    add_serving_parsers(sub)  # `build`, `triton`: engines and serving

    p = sub.add_parser("upscale", help="super-resolve image files, folders or globs to PNG")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, help="output folder (PNG, same base names)")
    p.add_argument("--model", default="lbnet-t-x4", help="name, .pt or .onnx (default lbnet-t-x4)")
    add_runtime_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("eval", help="PSNR/SSIM on a dataset with the paper's protocol")
    p.add_argument("--model", required=True, help="name, .pt, .onnx, or bicubic (with --scale)")
    p.add_argument("--dataset", required=True, help="EDSR layout (HR/ + LR_bicubic/) or HR images")
    add_runtime_options(p, budget_mb=None)
    p.add_argument(
        "--lr-from-hr",
        action="store_true",
        help="make LR with our MATLAB bicubic even where LR files exist",
    )
    p.add_argument("--self-ensemble", action="store_true", help="also score the x8 ensemble")
    p.add_argument("--baseline", help="a second model to compare with (e.g. FP32 vs INT8)")
    p.add_argument("--save-sr", help="folder for the SR images (<HR name>.png)")
    p.add_argument("--json", help="write per-image and mean scores as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-image progress")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("parity", help="compare a model file's output with the PyTorch reference")
    p.add_argument("model_file", help=".onnx file (or a model name / .pt for a self-check)")
    p.add_argument("--reference", required=True, help="checkpoint or model name")
    p.add_argument(
        "--images",
        help="folder of photos (default: Set5 under $LBNET_DATA_DIR, "
        "else matplotlib's sample photo)",
    )
    p.add_argument(
        "--sizes",
        type=lambda t: [parse_size(v) for v in t.split(",")],
        help="LR sizes, e.g. 48x48,37x29 (dynamic models only)",
    )
    p.add_argument("--backend", choices=BACKENDS[:4], default="ort")
    p.add_argument("--tile", type=int, help="engine size for --backend tensorrt (default 96)")
    p.add_argument("--max-abs", type=float, help="override the precision's max abs tolerance")
    p.add_argument("--min-psnr", type=float, help="override the precision's PSNR tolerance")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--json", help="write the report as JSON")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("info", help="print an exported file's facts and operator histogram")
    p.add_argument("file", help=".onnx file or TensorRT engine (.plan, .engine, .trt)")
    p.add_argument(
        "--ranges",
        action="store_true",
        help="also measure activation ranges (FP16 safety) on real images",
    )
    p.add_argument("--images", help="photos for --ranges (default as for parity)")
    p.set_defaults(func=cmd_info)

    from lbnet_deploy.benchmarks.cli import add_bench_parser

    add_bench_parser(sub)  # `bench`: its options live with the benchmarks
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a container stopping), raised like Ctrl-C so every `finally` and context
    manager removes its temporaries; without a handler Python dies at once, leaving them."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    logging.basicConfig(format="lbnet-deploy: %(message)s", level=logging.WARNING)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return handler(args)
    except LBNetError as exc:
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("lbnet-deploy: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:  # e.g. an unwritable output folder: one line, not a traceback
        if os.environ.get("LBNET_DEBUG"):
            raise
        print(f"lbnet-deploy: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
