"""Export time, file size and operator histogram: our export vs a plain torch.onnx.export of
the straightforward port (nn.Unfold / nn.Fold, a Python loop over attention runs).

    python benchmarks/studies/export_report.py --model lbnet-t-x4 --input-size 128x128
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import torch

from lbnet_deploy.commands.options import parse_size
from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
from lbnet_deploy.export.trt_ops import BANNED_OPS, TRT10_SUPPORTED_OPS
from lbnet_deploy.model.checkpoint import load_model


def _trt_problems(ops: Counter[str]) -> str:
    bad = sorted(op for op in ops if op not in TRT10_SUPPORTED_OPS or op in BANNED_OPS)
    return ", ".join(bad) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbnet-t-x4")
    parser.add_argument("--input-size", type=parse_size, default=(128, 128))
    args = parser.parse_args()
    model, desc = load_model(args.model)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, plain in (
            ("plain port, torch.onnx.export", True),
            ("lbnet-deploy export", False),
        ):
            options = ExportOptions(input_size=args.input_size, reference_ops=plain)
            report = export_onnx(model, Path(tmp) / "m.onnx", options)
            rows[label] = (report, Counter(report.ops))
    print(
        f"{desc.variant} x{desc.scale}, LR input {args.input_size[0]}x{args.input_size[1]}, "
        f"torch {torch.__version__}, onnx {onnx.__version__}, {platform.processor() or 'cpu'}\n"
    )
    print("| export | time (s) | file (MB) | nodes | Softmax | MatMul | not TensorRT-parsable |")
    print("|---|---|---|---|---|---|---|")
    for label, (report, ops) in rows.items():
        print(
            f"| {label} | {report.seconds:.1f} | {report.file_bytes / 1e6:.2f} | "
            f"{sum(ops.values())} | {ops['Softmax']} | {ops['MatMul']} | {_trt_problems(ops)} |"
        )
    all_ops = sorted(set().union(*(ops for _, ops in rows.values())))
    print("\n| operator | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for op in all_ops:
        print(f"| {op} | " + " | ".join(str(ops[op]) for _, ops in rows.values()) + " |")


if __name__ == "__main__":
    main()
