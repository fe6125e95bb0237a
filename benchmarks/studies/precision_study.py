"""FP16, INT8 and BF16 of each checkpoint scored beside FP32 on Set5/Set14.

    LBNET_WEIGHTS_DIR=../shared/weights python benchmarks/studies/precision_study.py \
        --models lbnet-t-x4,lbnet-x3 --datasets ../shared/data/Set5,../shared/data/Set14 \
        --images ../shared/data/SunHays80 --out-dir benchmarks

For each model: the dynamic FP32 graph (`export --dynamic`), its FP16 graph (`export
--precision fp16`, default FP32 islands) and its INT8 graph (`calibrate` with the defaults, on
the calibration photos only), each run through `eval`'s path (whole images within 75% of the
available memory, else tiled; the same plan for all three graphs, so drops compare like with
like). BF16 (`--parts bf16`, a CPU with AVX512-BF16 or AMX): the FP32 graph computed in BF16
by OpenVINO, beside the same graph in OpenVINO FP32, same plan; bf16-attn (`--parts bf16-attn`,
after bf16: a run of bf16 alone drops its rows): only the Transformer's matrix products
(attention and linear layers) in BF16, beside those FP32
rows (`--backend auto` reads these rows: benchmarks/accuracy.py). Every raw float output is
checked for Inf/NaN before it is rounded to 8 bits. Writes `precision.json` and `PRECISION.md`;
one model at a time, so partial runs keep results, and a run of one part keeps the other's.
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

from lbnet_deploy.benchmarks.machine import cpu_flags, cpu_model
from lbnet_deploy.evaluate import evaluate, load_samples
from lbnet_deploy.export.fp16 import write_fp16
from lbnet_deploy.resolve import model_file
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
from lbnet_deploy.runtime.upscaler import Upscaler, available_memory_mb

PRECISIONS = ("fp32", "fp16", "int8")
FP16_LIMIT_DB, INT8_LIMIT_DB = 0.01, 0.10  # issue 5's acceptance bounds
BF16_LIMIT_DB = 0.01  # BF16 may be a default only within this of FP32 on every checkpoint
OPENVINO = ("openvino-fp32", "openvino-bf16")  # the BF16 part's two runs, same FP32 graph
ATTN = "openvino-bf16-attn"  # the bf16-attn part: scored beside the BF16 part's FP32 rows


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
    return {"fp32": fp32, "fp16": fp16, "int8": int8}, _calibration(report, start)


def _calibration(report: Any, start: float) -> dict[str, Any]:
    result = report.result
    return {
        "calibrate_seconds": round(time.perf_counter() - start, 1),
        "float_layers": result.float_layers,
        "int8_mac_share": round(result.int8_mac_share, 4),
        "held_out_drop_db": round(result.drop, 4),
        "sensitivity_mse": {k: round(v, 5) for k, v in result.sensitivity.items()},
    }


def study_int8(
    spec: str, datasets: list[Path], images: Path, work: Path, kept: dict[str, Any],
    budget_mb: int,
) -> dict[str, Any]:  # fmt: skip
    """INT8 calibrated again (`calibrate`'s defaults) and scored against the FP32 rows `kept`
    (same budget, so the same plan: each image tiled or whole as FP32 was, checked); the INT8
    rows and calibration they replace stay as `int8_before` / `calibration_before`."""
    from lbnet_deploy.calibration.run import calibrate_file

    int8 = work / f"{spec}.int8.onnx"
    start = time.perf_counter()
    report = calibrate_file(model_file(spec), images, int8)
    if "calibration_before" not in kept:
        kept["calibration_before"] = kept["calibration"]
    kept["calibration"] = _calibration(report, start)
    for dataset in datasets:
        rows = kept["datasets"][dataset.name]
        print(f"== {spec} int8 {dataset.name}", file=sys.stderr, flush=True)
        rows.setdefault("int8_before", rows["int8"])
        rows["int8"] = score(int8, dataset, budget_mb, "ort")
        if rows["int8"]["tiled"] != rows["fp32"]["tiled"]:
            raise SystemExit(f"{spec} {dataset.name}: not FP32's tiling plan: set --memory-budget")
        _drops(rows, "fp32", ("int8",))
    kept["int8_memory_budget_mb"] = budget_mb
    return kept


def score(graph: Path, dataset: Path, budget_mb: int, run: str = "ort") -> dict[str, Any]:
    """eval's path on one graph; `run`: ONNX Runtime, or "openvino-fp32"/"openvino-bf16"."""
    if run == "ort":
        opened: Any = OnnxRuntimeRunner(graph)
    else:
        from lbnet_deploy.runtime.openvino import OpenVINORunner

        opened = OpenVINORunner(graph, compute=run.removeprefix("openvino-"))
    runner = FiniteCheck(opened)
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


def _drops(rows: dict[str, Any], ref: str, others: tuple[str, ...]) -> None:
    for name in others:
        before, after = rows[ref]["images"], rows[name]["images"]
        rows[name]["drop_db"] = rows[ref]["psnr"] - rows[name]["psnr"]
        rows[name]["worst_image_drop_db"] = max(before[k] - after[k] for k in before)


def _score_sets(
    spec: str, datasets: list[Path], runs: dict[str, tuple[Path, str]], budget: int
) -> dict[str, Any]:
    """Every dataset scored by each named (graph, runtime) of `runs`; drops against the first."""
    names = list(runs)
    out = {}
    for dataset in datasets:
        rows = {}
        for name, (graph, runtime) in runs.items():
            print(f"== {spec} {name} {dataset.name}", file=sys.stderr, flush=True)
            rows[name] = score(graph, dataset, budget, runtime)
        _drops(rows, names[0], tuple(names[1:]))
        out[dataset.name] = rows
    return out


def study_model(
    spec: str, datasets: list[Path], images: Path, work: Path, budget_mb: int | None = None
) -> dict[str, Any]:
    graphs, calibration = make_graphs(spec, images, work)
    budget = budget_mb or available_memory_mb() * 3 // 4
    runs = {p: (graphs[p], "ort") for p in PRECISIONS}
    return {
        "model": spec, "calibration": calibration, "memory_budget_mb": budget,
        "machine": f"{cpu_model()}, {platform.platform()}",
        "datasets": _score_sets(spec, datasets, runs, budget),
    }  # fmt: skip


def study_bf16(spec: str, datasets: list[Path], budget_mb: int | None = None) -> dict[str, Any]:
    """OpenVINO BF16 beside OpenVINO FP32 on the dynamic FP32 graph `--precision bf16` runs
    (in the attention form OpenVINO is given for BF16), same plan per image."""
    import openvino as ov

    from lbnet_deploy.runtime.registry import BACKENDS

    form = BACKENDS["openvino"].form("bf16")
    graph = model_file(spec, form=form)
    budget = budget_mb or available_memory_mb() * 3 // 4
    return {
        "openvino": ov.get_version(), "cpu": cpu_model(), "cpu_flags": cpu_flags(),
        "memory_budget_mb": budget, "form": form,
        "datasets": _score_sets(spec, datasets, {r: (graph, r) for r in OPENVINO}, budget),
    }  # fmt: skip


def study_bf16_attn(spec: str, datasets: list[Path], kept: dict[str, Any]) -> None:
    """`--precision bf16-attn` (the Transformer's products in BF16) on its graph, scored
    against the BF16 part's OpenVINO FP32 rows `kept` with their budget (so their plan,
    checked); the same OpenVINO release and CPU flags, or it refuses."""
    import openvino as ov

    from lbnet_deploy.runtime.registry import BACKENDS

    bf16 = kept.get("bf16")
    if not bf16 or bf16["openvino"] != ov.get_version() or bf16["cpu_flags"] != cpu_flags():
        raise SystemExit(f"{spec}: run --parts bf16 first, on this OpenVINO and this CPU")
    form = BACKENDS["openvino"].form("bf16-attn")
    graph = model_file(spec, form=form)
    for dataset in datasets:
        rows = bf16["datasets"][dataset.name]
        print(f"== {spec} {ATTN} {dataset.name}", file=sys.stderr, flush=True)
        rows[ATTN] = score(graph, dataset, bf16["memory_budget_mb"], ATTN)
        if rows[ATTN]["tiled"] != rows[OPENVINO[0]]["tiled"]:
            raise SystemExit(f"{spec} {dataset.name}: not the FP32 rows' tiling plan")
        _drops(rows, OPENVINO[0], (ATTN,))
    bf16["attn_form"] = form


def markdown(results: list[dict[str, Any]]) -> str:
    machines = sorted({r.get("machine", "not recorded") for r in results if "datasets" in r})
    lines = [
        "# FP16, INT8 and BF16 accuracy beside FP32",
        "",
        "Regenerate: `LBNET_WEIGHTS_DIR=../shared/weights python "
        "benchmarks/studies/precision_study.py --out-dir benchmarks` (hours on 2 cores; "
        "`--parts fp16-int8` or `--parts bf16,bf16-attn` for one table, keeping the other's "
        "results).",
        "",
        "## FP16 and INT8 (ONNX Runtime CPU)",
        "",
        f"Machine: {'; '.join(machines)}. PSNR/SSIM on Y, paper protocol; INT8 calibrated on "
        "SunHays80 only (`calibrate` defaults: Q/DQ placed as TensorRT places them, the layers "
        "with the most error per multiply-add kept float within 0.05 dB on held-out crops of "
        "the photos and, pooled, on crops of synthetic slides); "
        "drop = FP32 - other, mean over the set; worst = the largest per-image drop; INT8 MACs = "
        "the share of the conv and linear multiply-adds in INT8. Before: the previous "
        "`calibrate` (onnxruntime's default Q/DQ placement, whole blocks kept float)."
        f" Bounds: FP16 within {FP16_LIMIT_DB} dB, INT8 within {INT8_LIMIT_DB} dB.",
        "",
        "| model | set | FP32 PSNR | FP16 drop | FP16 worst | INT8 drop | INT8 worst "
        "| INT8 MACs | Inf/NaN values | tiled images | INT8 before: drop / worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, rows in r.get("datasets", {}).items():
            bad = sum(rows[p]["nonfinite_values"] for p in PRECISIONS)
            ok16 = abs(rows["fp16"]["drop_db"]) <= FP16_LIMIT_DB
            ok8 = rows["int8"]["drop_db"] <= INT8_LIMIT_DB
            before = rows.get("int8_before")
            share = r["calibration"].get("int8_mac_share")
            lines.append(
                f"| {r['model']} | {name} | {rows['fp32']['psnr']:.4f} "
                f"| {rows['fp16']['drop_db']:+.4f}{'' if ok16 else ' (over)'} "
                f"| {rows['fp16']['worst_image_drop_db']:+.4f} "
                f"| {rows['int8']['drop_db']:+.4f}{'' if ok8 else ' (over)'} "
                f"| {rows['int8']['worst_image_drop_db']:+.4f} "
                f"| {'—' if share is None else f'{share:.1%}'} | {bad} "
                f"| {len(rows['fp32']['tiled'])} "
                + (
                    f"| {before['drop_db']:+.4f} / {before['worst_image_drop_db']:+.4f} |"
                    if before
                    else "| — |"
                )
            )
    lines += ["", *int8_goals(results)]
    bf16 = [r for r in results if "bf16" in r]
    if bf16:
        lines += bf16_markdown(bf16)
    return "\n".join(lines) + "\n"


# issue 17's goals: per checkpoint, on images never used in calibration
INT8_GOAL_DB, INT8_GOAL_WORST_DB, INT8_GOAL_MACS = 0.05, 0.15, 0.90


def int8_goals(results: list[dict[str, Any]]) -> list[str]:
    """The INT8 goals judged per checkpoint, and which layers stayed float."""
    lines = [
        f"INT8 goals: mean drop <= {INT8_GOAL_DB} dB on Set5 and Set14, worst image <= "
        f"{INT8_GOAL_WORST_DB} dB, every checkpoint; LBNet-T x4 >= {INT8_GOAL_MACS:.0%} of its "
        "conv and linear multiply-adds INT8.",
        "",
        "| model | mean drops | worst image | INT8 MACs | goals | float layers |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows = r.get("datasets", {})
        if not rows:
            continue
        drops = [v["int8"]["drop_db"] for v in rows.values()]
        worst = max(v["int8"]["worst_image_drop_db"] for v in rows.values())
        cal = r["calibration"]
        share = cal.get("int8_mac_share")
        met = max(drops) <= INT8_GOAL_DB and worst <= INT8_GOAL_WORST_DB
        if r["model"] == "lbnet-t-x4":
            met = met and share is not None and share >= INT8_GOAL_MACS
        floats = cal.get("float_layers", cal.get("float_blocks", []))
        lines.append(
            f"| {r['model']} | {', '.join(f'{d:+.4f}' for d in drops)} | {worst:+.4f} "
            f"| {'—' if share is None else f'{share:.1%}'} | {'met' if met else '**missed**'} "
            f"| {', '.join(floats) or 'none'} |"
        )
    return lines


def _verdict(drops: list[float], what: str, opt_in: str) -> str:
    over = sum(abs(d) > BF16_LIMIT_DB for d in drops)
    if not over:
        return f"{what} within {BF16_LIMIT_DB} dB on every row: it may run by default"
    return f"{what} over {BF16_LIMIT_DB} dB on {over} of {len(drops)} rows: opt-in (`{opt_in}`)"


def bf16_markdown(results: list[dict[str, Any]]) -> list[str]:
    rows = [(r, name, row) for r in results for name, row in r["bf16"]["datasets"].items()]
    verdict = _verdict(
        [row[OPENVINO[1]]["drop_db"] for _, _, row in rows], "BF16", "--precision bf16"
    )
    attn = [row[ATTN]["drop_db"] for _, _, row in rows if ATTN in row]
    if attn:
        verdict += "; " + _verdict(attn, "bf16-attn", "--precision bf16-attn")
        if len(attn) < len(rows):
            verdict += f" (measured on {len(attn)} of {len(rows)} rows)"
    first = results[0]["bf16"]
    lines = [
        "",
        f"## BF16 (OpenVINO {first['openvino']}) beside FP32",
        "",
        "`--precision bf16 --backend openvino`: the FP32 graph (attention form "
        f"`{first.get('form', 'batched')}`) computed in BF16 by OpenVINO's CPU "
        "plugin, beside the same graph in OpenVINO FP32 (same tiling plan), on "
        f"{first['cpu']} (flags {', '.join(first['cpu_flags'])}). `--precision bf16-attn`: "
        "only the Transformer's matrix products in BF16 (each MatMul, Softmax, MatMul chain and "
        "the linear layers; everything else FP32), "
        f"on its graph (form `{first.get('attn_form', 'flat')}`), beside the same FP32 rows. "
        f"Drop = FP32 - other; worst = the largest per-image drop. Verdict: {verdict}.",
        "",
        "| model | set | OpenVINO FP32 PSNR | BF16 PSNR | BF16 drop | BF16 worst "
        "| bf16-attn drop | bf16-attn worst | Inf/NaN values | tiled images |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, name, row in rows:
        fp32, bf16, mixed = row[OPENVINO[0]], row[OPENVINO[1]], row.get(ATTN)
        bad = sum(row[k]["nonfinite_values"] for k in (*OPENVINO, ATTN) if k in row)
        worst = f"{mixed['worst_image_drop_db']:+.4f}" if mixed else "—"
        lines.append(
            f"| {r['model']} | {name} | {fp32['psnr']:.4f} | {bf16['psnr']:.4f} "
            f"| {_drop(bf16['drop_db'])} | {bf16['worst_image_drop_db']:+.4f} "
            f"| {_drop(mixed['drop_db']) if mixed else '—'} "
            f"| {worst} "
            f"| {bad} | {len(fp32['tiled'])} |"
        )
    return lines


def _drop(db: float) -> str:
    return f"{db:+.4f}{'' if abs(db) <= BF16_LIMIT_DB else ' (over)'}"


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
    p.add_argument(
        "--parts",
        default="fp16-int8,bf16,bf16-attn",
        help="fp16-int8 (ONNX Runtime), int8 (INT8 again beside the FP32 rows kept), bf16 "
        "(OpenVINO), bf16-attn (OpenVINO, beside the bf16 part's FP32 rows)",
    )
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    work = Path(args.work) if args.work else out
    work.mkdir(parents=True, exist_ok=True)
    json_path = out / "precision.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else []
    datasets = [Path(d) for d in args.datasets.split(",")]
    parts = set(args.parts.split(","))
    for spec in args.models.split(","):
        kept = next((r for r in results if r["model"] == spec), {"model": spec})
        results = [r for r in results if r["model"] != spec]
        if "fp16-int8" in parts:
            new = study_model(spec, datasets, Path(args.images), work, args.memory_budget)
            kept = new | ({"bf16": kept["bf16"]} if "bf16" in kept else {})
        if "int8" in parts:  # INT8 again beside the FP32 rows kept
            budget = args.memory_budget or available_memory_mb() * 3 // 4
            kept = study_int8(spec, datasets, Path(args.images), work, kept, budget)
        if "bf16" in parts:
            kept["bf16"] = study_bf16(spec, datasets, args.memory_budget)
        if "bf16-attn" in parts:
            study_bf16_attn(spec, datasets, kept)
        results.append(kept)
        json_path.write_text(json.dumps(results, indent=1))
        (out / "PRECISION.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
