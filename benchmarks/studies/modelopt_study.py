"""NVIDIA ModelOpt's ONNX INT8 PTQ beside `lbnet-deploy calibrate`, on the same FP32 graph and
the same calibration crops: Set5 PSNR drop, Q/DQ placement, zero points, ORT CPU latency.

    pip install "nvidia-modelopt[onnx]"   # optional; pulls its own onnx/onnxruntime pins
    LBNET_WEIGHTS_DIR=../shared/weights python benchmarks/studies/modelopt_study.py \
        --fp32 F32.onnx --ours I8.onnx --images ../shared/data/SunHays80 \
        --dataset ../shared/data/Set5 --out-dir /tmp/modelopt

ModelOpt is asked for INT8 with FP32 kept where it does not quantize (`high_precision_dtype
fp32`), so the comparison isolates quantization; its default would also cast the rest to FP16.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from lbnet_deploy.benchmarks.timing import interleaved
from lbnet_deploy.calibration.data import calibration_crops
from lbnet_deploy.evaluate import evaluate, load_samples
from lbnet_deploy.export.onnx_io import save_atomic
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
from lbnet_deploy.runtime.upscaler import Upscaler


def qdq_summary(path: Path) -> dict[str, object]:
    """How many Q/DQ pairs, which ops they feed, and whether every zero point is int8 0."""
    graph = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.graph.initializer}
    consumers: Counter[str] = Counter()
    by_input = {i: n.op_type for n in graph.graph.node for i in n.input}
    zero_points_ok = True
    for node in graph.graph.node:
        if node.op_type == "DequantizeLinear":
            consumers[by_input.get(node.output[0], "output")] += 1
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            zero_points_ok &= zp is not None and zp.dtype == np.int8 and not zp.any()
    return {
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in graph.graph.node),
        "dq_feeds": dict(consumers.most_common()),
        "zero_points_int8_zero": bool(zero_points_ok),
    }


def modelopt_int8(fp32: Path, crops: np.ndarray, out: Path, method: str) -> Path:
    from modelopt.onnx.quantization import quantize

    source = onnx.load(str(fp32))
    quantize(
        str(fp32), quantize_mode="int8", calibration_data={source.graph.input[0].name: crops},
        calibration_method=method, calibration_eps=["cpu"], high_precision_dtype="fp32",
        output_path=str(out), log_level="WARNING",
    )  # fmt: skip
    # ModelOpt drops metadata_props; our runner reads the scale from them
    graph = onnx.load(str(out))
    props = {p.key: p.value for p in source.metadata_props}
    props |= {"lbnet.precision": "int8", "lbnet.int8_method": f"modelopt-{method}"}
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    save_atomic(graph, out)
    return out


def set_psnr(path: Path, dataset: Path) -> dict[str, float]:
    up = Upscaler(OnnxRuntimeRunner(path))
    res = evaluate(
        up, load_samples(dataset, up.runner.scale), model=str(path), variant="",
        dataset=dataset.name, progress=False,
    )  # fmt: skip
    return {i.name: i.psnr_y for i in res.images}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", required=True, type=Path)
    p.add_argument("--ours", required=True, type=Path, help="`calibrate` output of --fp32")
    p.add_argument("--images", required=True)
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--methods", default="max,entropy")
    p.add_argument("--time-size", default="64x64", help="LR size for the latency comparison")
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    scale = int({m.key: m.value for m in onnx.load(str(args.fp32)).metadata_props}["lbnet.scale"])
    crops = calibration_crops(args.images, scale, size=(64, 64), count=32, seed=0)
    graphs = {"fp32": args.fp32, "ours int8": args.ours}
    for method in args.methods.split(","):
        out = args.out_dir / f"modelopt-{method}.onnx"
        graphs[f"modelopt int8 ({method})"] = modelopt_int8(args.fp32, crops, out, method)
    scores = {k: set_psnr(v, args.dataset) for k, v in graphs.items()}
    h, w = (int(v) for v in args.time_size.split("x"))
    x = (np.random.default_rng(0).random((1, 3, h, w)) * 255).astype(np.float32)
    runners = {k: OnnxRuntimeRunner(v) for k, v in graphs.items()}
    times = interleaved({k: partial(r.infer, x) for k, r in runners.items()}, 1, 5)
    report = {}
    for k, v in graphs.items():
        ref = scores["fp32"]
        report[k] = {
            "psnr": float(np.mean(list(scores[k].values()))),
            "drop_db": float(np.mean([ref[i] - scores[k][i] for i in ref])),
            "worst_image_drop_db": float(max(ref[i] - scores[k][i] for i in ref)),
            "median_ms": float(np.median(times[k]) * 1000),
            **qdq_summary(v),
        }
        print(k, json.dumps(report[k]))
    (args.out_dir / "modelopt.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
