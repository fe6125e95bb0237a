"""Regenerate benchmarks/RESULTS.md, its figure and JSON: every study, one command.

    python -m lbnet_deploy.benchmarks.report [extra args]

Extra arguments go to `bench` (e.g. --runs 2 --compare-size 32x32 for a quick dry run with
--out-dir elsewhere; --official-repo DIR adds the official code to the comparison). On 2
quiet cores the defaults take roughly 20-30 minutes (INT8 graphs are calibrated once each).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .cli import main as bench_main

HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = HERE
    if "--out-dir" in args:
        i = args.index("--out-dir")
        out = Path(args[i + 1])
        del args[i : i + 2]
        out.mkdir(parents=True, exist_ok=True)
    return bench_main(
        [
            "--model",
            "lbnet-t-x4",
            "--backend",
            # torch-ours: RESULTS' eager row, our ops; openvino: the other CPU runtime;
            # triton: serving through a local Triton against in-process upscale (Set5)
            "ort,openvino,torch-ours,ort-cuda,torch-cuda,triton",
            "--precision",
            "fp32,fp16,bf16,int8",
            "--sizes",
            "64x64,128x128",
            "--all",
            "--json",
            str(out / "results.json"),
            "--plot",
            str(out / "scaling.png"),
            "--markdown",
            str(out / "RESULTS.md"),
            *args,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
