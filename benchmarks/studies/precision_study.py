"""FP16 and INT8 graphs of each checkpoint scored beside their FP32 graph on Set5/Set14.

    LBNET_WEIGHTS_DIR=../shared/weights python benchmarks/studies/precision_study.py \
        --models lbnet-t-x4,lbnet-x3 --datasets ../shared/data/Set5,../shared/data/Set14 \
        --images ../shared/data/SunHays80 --out-dir benchmarks

For each model: the dynamic FP32 graph (`export --dynamic`), its FP16 graph (`export
--precision fp16`, default FP32 islands) and its INT8 graph (`calibrate` with the defaults, on
the calibration photos only), each run through `eval`'s path (whole images within 75% of the
available memory, else tiled; the same plan for all three graphs, so drops compare like with
like). Every raw float output is checked for Inf/NaN before it is rounded to 8 bits.
Writes `precision.json` and `PRECISION.md`; one model at a time, so partial runs keep results.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from checkout import SHARED_DATA

from lbnet_deploy.evaluate import evaluate, load_samples
from lbnet_deploy.export.fp16 import write_fp16
from lbnet_deploy.resolve import model_file
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
from lbnet_deploy.runtime.upscaler import Upscaler, available_memory_mb

PRECISIONS = ("fp32", "fp16", "int8")
FP16_LIMIT_DB, INT8_LIMIT_DB = 0.01, 0.10  # issue 5's acceptance bounds


@dataclass
class FiniteCheck:
    """A Runner wrapper that counts non-finite values in the raw float output."""

    runner: Any
    nonfinite: int = 0
    calls: int = 0

    def __getattr__(self, name: str) -> Any:  # input_size, max_batch, scale, describe
        return getattr(self.runner, name)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.runner.infer(batch)
        self.nonfinite += int(out.size - np.isfinite(out).sum())
        self.calls += 1
        return out


def make_graphs(spec: str, images: Path, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The three graphs of `spec` (FP32 from the export cache) and what calibration chose."""
    from lbnet_deploy.calibration.run import calibrate_file

    fp32 = model_file(spec)  # dynamic FP32, exported on first use
    fp16 = work / f"{spec}.fp16.onnx"
    if not fp16.is_file():
        write_fp16(fp32, fp16)
    int8 = work / f"{spec}.int8.onnx"
    start = time.perf_counter()
    report = calibrate_file(fp32, images, int8)
    info = {
        "calibrate_seconds": round(time.perf_counter() - start, 1),
        "float_blocks": report.result.excluded,
        "held_out_drop_db": round(report.result.drop, 4),
        "sensitivity_db": {k: round(v, 4) for k, v in report.result.sensitivity.items()},
    }
    return {"fp32": fp32, "fp16": fp16, "int8": int8}, info


def score(graph: Path, dataset: Path, budget_mb: int) -> dict[str, Any]:
    runner = FiniteCheck(OnnxRuntimeRunner(graph))
    upscaler = Upscaler(runner, memory_budget_mb=budget_mb)  # type: ignore[arg-type]
    samples = load_samples(dataset, runner.scale)
    res = evaluate(
        upscaler, samples, model=str(graph), variant="", dataset=dataset.name, progress=True
    )
    return {
        "psnr": res.mean("psnr_y"),
        "ssim": res.mean("ssim_y"),
        "images": {i.name: i.psnr_y for i in res.images},
        "tiled": sorted(i.name for i in res.images if i.tiled),
        "nonfinite_values": runner.nonfinite,
        "seconds": round(res.seconds, 1),
    }


def study_model(
    spec: str, datasets: list[Path], images: Path, work: Path, budget_mb: int | None = None
) -> dict[str, Any]:
    graphs, calibration = make_graphs(spec, images, work)
    budget = budget_mb or available_memory_mb() * 3 // 4
    out: dict[str, Any] = {
        "model": spec, "calibration": calibration, "memory_budget_mb": budget, "datasets": {}
    }  # fmt: skip
    for dataset in datasets:
        rows = {}
        for precision in PRECISIONS:
            print(f"== {spec} {precision} {dataset.name}", file=sys.stderr, flush=True)
            rows[precision] = score(graphs[precision], dataset, budget)
        for precision in ("fp16", "int8"):
            ref, new = rows["fp32"]["images"], rows[precision]["images"]
            rows[precision]["drop_db"] = rows["fp32"]["psnr"] - rows[precision]["psnr"]
            rows[precision]["worst_image_drop_db"] = max(ref[k] - new[k] for k in ref)
        out["datasets"][dataset.name] = rows
    return out


def markdown(results: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "# FP16 and INT8 accuracy beside FP32 (ONNX Runtime CPU)",
        "",
        "Regenerate: `LBNET_WEIGHTS_DIR=../shared/weights python "
        "benchmarks/studies/precision_study.py --out-dir benchmarks` (hours on 2 cores).",
        "",
        f"Machine: {machine}. PSNR/SSIM on Y, paper protocol; INT8 calibrated on SunHays80 only "
        "(`calibrate` defaults); drop = FP32 - other, mean over the set; worst = the largest "
        f"per-image drop. Bounds: FP16 within {FP16_LIMIT_DB} dB, INT8 within {INT8_LIMIT_DB} dB.",
        "",
        "| model | set | FP32 PSNR | FP16 drop | FP16 worst | INT8 drop | INT8 worst "
        "| Inf/NaN values | tiled images | INT8 float blocks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, rows in r["datasets"].items():
            bad = sum(rows[p]["nonfinite_values"] for p in PRECISIONS)
            ok16 = abs(rows["fp16"]["drop_db"]) <= FP16_LIMIT_DB
            ok8 = rows["int8"]["drop_db"] <= INT8_LIMIT_DB
            lines.append(
                f"| {r['model']} | {name} | {rows['fp32']['psnr']:.4f} "
                f"| {rows['fp16']['drop_db']:+.4f}{'' if ok16 else ' (over)'} "
                f"| {rows['fp16']['worst_image_drop_db']:+.4f} "
                f"| {rows['int8']['drop_db']:+.4f}{'' if ok8 else ' (over)'} "
                f"| {rows['int8']['worst_image_drop_db']:+.4f} | {bad} "
                f"| {len(rows['fp32']['tiled'])} "
                f"| {', '.join(r['calibration']['float_blocks']) or 'none'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lbnet-t-x4,lbnet-t-x3,lbnet-x3,lbnet-t-x2,lbnet-x2")
    p.add_argument("--datasets", default=f"{SHARED_DATA / 'Set5'},{SHARED_DATA / 'Set14'}")
    p.add_argument("--images", default=str(SHARED_DATA / "SunHays80"))
    p.add_argument("--out-dir", default="benchmarks")
    p.add_argument("--work", default=None, help="where FP16/INT8 graphs go (default: out-dir)")
    p.add_argument(
        "--memory-budget", type=int, help="MB per inference (default: eval's, 75%% of available)"
    )
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    work = Path(args.work) if args.work else out
    work.mkdir(parents=True, exist_ok=True)
    json_path = out / "precision.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else []
    datasets = [Path(d) for d in args.datasets.split(",")]
    machine = f"{platform.processor() or platform.machine()}, {platform.platform()}"
    for spec in args.models.split(","):
        results = [r for r in results if r["model"] != spec]
        results.append(study_model(spec, datasets, Path(args.images), work, args.memory_budget))
        json_path.write_text(json.dumps(results, indent=1))
        (out / "PRECISION.md").write_text(markdown(results, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
