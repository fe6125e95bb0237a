"""INT8 against FP32 and BF16 where it can be measured without a GPU: the graph `calibrate`
makes with its defaults (TensorRT's Q/DQ placement, most multiply-adds INT8), in ONNX Runtime and
in OpenVINO, each on the attention form the registry gives that runtime, interleaved, repeated
runs at each size (as tiles run).

    python benchmarks/studies/int8_speed.py --model lbnet-t-x4 --sizes 64,128 --runs 5

The INT8 graphs are calibrated once per form from the dynamic FP32 graph (SunHays80; minutes on
2 cores) and kept in --work. Prints a table with the CPU's flags and each row's speed against
FP32 in the same runtime; --json keeps everything.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from checkout import SHARED_DATA, use_shared_weights

from lbnet_deploy.benchmarks.machine import machine_info
from lbnet_deploy.benchmarks.models import skip_reason, threads_default
from lbnet_deploy.benchmarks.stats import summarize
from lbnet_deploy.benchmarks.timing import interleaved, sample_input
from lbnet_deploy.metadata import COMPUTE
from lbnet_deploy.resolve import model_file
from lbnet_deploy.runtime import registry

# (runtime, graph precision, compute precision): FP32 first in each runtime (the reference)
CONTENDERS = [
    ("ort", "fp32", "fp32"),
    ("ort", "int8", "fp32"),
    ("openvino", "fp32", "fp32"),
    ("openvino", "int8", "fp32"),
    ("openvino", "fp32", "bf16"),
]
# OpenVINO compiles a shape when it runs a second time in a row: two untimed runs first
WARMUP = 2


def graphs(spec: str, images: Path, work: Path) -> dict[tuple[str, str, str], Path]:
    """Each contender's dynamic graph in its runtime's form (calibrated once per form)."""
    from lbnet_deploy.calibration.run import calibrate_file

    out = {}
    for backend, precision, compute in CONTENDERS:
        form = registry.get_backend(backend).form(compute)
        fp32 = model_file(spec, form=form)
        if precision == "int8":
            int8 = work / f"{fp32.stem}-int8.onnx"
            if not int8.is_file():
                print(f"calibrating {fp32.name} ...", file=sys.stderr, flush=True)
                calibrate_file(fp32, images, int8)
            out[backend, precision, compute] = int8
        else:
            out[backend, precision, compute] = fp32
    return out


def label(backend: str, precision: str, compute: str) -> str:
    return f"{backend} {precision if compute == 'fp32' else compute}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbnet-t-x4")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--images", default=str(SHARED_DATA / "SunHays80"))
    parser.add_argument("--work", type=Path, default=Path("int8-speed"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    use_shared_weights()
    threads = args.threads or threads_default()
    machine = machine_info(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    files = graphs(args.model, Path(args.images), args.work)
    runners = {}
    for key, path in files.items():
        backend, precision, compute = key
        reason = skip_reason(backend, compute if compute in COMPUTE else precision)
        if reason:
            print(f"not timing {label(*key)}: {reason}", file=sys.stderr)
            continue
        runners[label(*key)] = registry.get_backend(backend).open(path, threads, compute)
    rows: list[dict] = []
    for size in (int(s) for s in args.sizes.split(",")):
        x = sample_input(1, (size, size))
        print(f"{size}x{size}: {len(runners)} contenders", file=sys.stderr, flush=True)
        calls = {k: partial(r.infer, x) for k, r in runners.items()}
        samples = interleaved(calls, WARMUP, args.runs)
        rows.append({"size": size, "stats": {k: summarize(v) for k, v in samples.items()}})
    flags = [f for f in machine.get("cpu_flags", []) if "avx512" in f or "amx" in f or "vnni" in f]
    lines = [
        f"{machine.get('cpu_model')}, {threads} threads, flags: {', '.join(flags) or 'none'}",
        "",
        "| contender | " + " | ".join(f"{r['size']}x{r['size']}" for r in rows) + " |",
        "|---" * (len(rows) + 1) + "|",
    ]
    for name in runners:
        base = f"{name.split()[0]} fp32"
        cells = [
            f"{r['stats'][name]['median_s'] * 1e3:.0f} ms "
            f"({r['stats'][base]['median_s'] / r['stats'][name]['median_s']:.2f}x)"
            for r in rows
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "median of the interleaved rounds; (Nx): speed against FP32 in the same runtime"]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
