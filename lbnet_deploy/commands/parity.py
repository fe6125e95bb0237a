"""`lbnet-deploy parity`: a model file on its backend vs the PyTorch reference, pass or fail."""

from __future__ import annotations

import argparse
from pathlib import Path

from lbnet_deploy.metadata import COMPUTE, EXPORTED
from lbnet_deploy.runtime.registry import DEFAULT, names

from .options import add_cuda_graph_option, add_url_option, parse_size, positive_int


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.parity import image_list, run_parity
    from lbnet_deploy.runtime.files import check_output_dir, refuse_inputs_as_outputs

    if args.json:
        check_output_dir(Path(args.json).absolute().parent)
        models = [Path(m) for m in (args.model_file, args.reference) if Path(m).exists()]
        refuse_inputs_as_outputs([args.json], models)

    runner = open_runner(
        args.model_file, args.backend, args.threads, tile=args.tile, precision=args.precision,
        cuda_graph=args.cuda_graph, url=args.url,
    )  # fmt: skip
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


def register(sub: argparse._SubParsersAction) -> None:
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
    # the model file's backends; the reference is the torch backend
    p.add_argument(
        "--backend", choices=names("onnx") + names("engine") + names("server"), default=DEFAULT
    )
    add_url_option(p)
    p.add_argument("--tile", type=int, help="engine size for --backend tensorrt (default 96)")
    p.add_argument(
        "--precision",
        choices=EXPORTED[1:] + COMPUTE,  # FP32 is the default
        help="for a model name or .pt: its FP16 graph; bf16: the FP32 graph computed in BF16 "
        "(--backend openvino); bf16-attn: only its Transformer's matrix products in BF16",
    )
    p.add_argument("--max-abs", type=float, help="override the precision's max abs tolerance")
    p.add_argument("--min-psnr", type=float, help="override the precision's PSNR tolerance")
    p.add_argument("--threads", type=positive_int)
    add_cuda_graph_option(p)
    p.add_argument("--json", help="write the report as JSON")
    p.set_defaults(func=run)
