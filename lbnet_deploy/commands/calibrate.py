"""`lbnet-deploy calibrate`: an FP32 export + photos -> an INT8 Q/DQ graph (+ a TensorRT cache)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import decibels, positive_int


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.calibration.run import METHODS, calibrate_file
    from lbnet_deploy.runtime.files import check_output_dir, refuse_inputs_as_outputs

    outputs = [args.output, *([args.trt_cache] if args.trt_cache else [])]
    photos = Path(args.images)
    inputs = [Path(args.model), *(photos.iterdir() if photos.is_dir() else [])]
    refuse_inputs_as_outputs(outputs, inputs)  # nor each other: -o x --trt-cache x
    for out in outputs:  # before a 10-minute calibration
        check_output_dir(Path(out).absolute().parent)

    report = calibrate_file(
        args.model, args.images, args.output, method=METHODS[args.method],
        samples=args.samples, max_psnr_drop=args.max_psnr_drop, seed=args.seed,
        trt_cache=args.trt_cache,
    )  # fmt: skip
    result = report.result
    print("most sensitive layers (output MSE on held-out crops when only that layer is INT8):")
    for layer, error in sorted(result.sensitivity.items(), key=lambda kv: -kv[1])[:12]:
        kept = "  kept float" if layer in result.float_layers else ""
        print(f"  {layer:<20} {error:9.4f}{kept}")
    floats = ", ".join(result.float_layers) or "none"
    print(
        f"wrote {report.path}: held-out PSNR drop {result.drop:.3f} dB (photos, or slides "
        "pooled where larger) "
        f"(limit {args.max_psnr_drop}); {result.int8_mac_share:.1%} of the conv and linear "
        f"multiply-adds INT8; float layers: {floats}"
    )
    if report.trt_cache:
        print(f"wrote TensorRT calibration cache {report.trt_cache}")
    if args.eval_dataset:
        from lbnet_deploy.evaluate import compare_with_float, table

        print(table(compare_with_float(report.path, args.model, args.eval_dataset)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="INT8 (Q/DQ) graph from an FP32 export and photos")
    p.add_argument("model", help="FP32 .onnx made by `lbnet-deploy export`")
    p.add_argument("--images", required=True, help="folder of photos (not an evaluation set)")
    p.add_argument("-o", "--output", required=True, help="output INT8 .onnx")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument(
        "--samples", type=positive_int, default=32, help="calibration crops (default 32)"
    )
    p.add_argument(
        "--max-psnr-drop",
        type=decibels,
        default=0.05,
        metavar="DB",
        help="keep the layers with the most error per multiply-add float until the drop on "
        "held-out crops is below this (default 0.05 dB)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trt-cache", help="also write a TensorRT 10.x calibration cache here")
    p.add_argument("--eval-dataset", help="report FP32 vs INT8 PSNR on this dataset afterwards")
    p.set_defaults(func=run)
