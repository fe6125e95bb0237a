"""Which CPU backend and graph form is fastest on this machine, at the sizes the product runs?

Times, interleaved in one process (A, B, C, A, B, C, ...), LBNet on each CPU runtime the
registry has (ONNX Runtime, OpenVINO) with the graphs a user gets: the dynamic graph `upscale`
and `eval` run (each run at a shape it has not seen, as whole images of many sizes), and a
fixed-size graph (repeated runs, as tiles), each in every attention form of ours (`metadata.FORMS`:
batched, TensorRT's; flat and flat16, laid out for CPU runtimes), and the plain export of the
straightforward port (the official code's form), at several square LR sizes. Prints a Markdown
table with the CPU's flags and each contender's speed against the plain export on ONNX Runtime;
`--json` keeps everything. The form each backend is given (`registry.Backend.forms`) and the
product's default CPU backend are chosen from what this prints (README, "CPU backends").

    python benchmarks/studies/cpu_backends.py --model lbnet-t-x4 --sizes 64,96,128,192 --runs 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from checkout import use_shared_weights

from lbnet_deploy.benchmarks.machine import machine_info
from lbnet_deploy.benchmarks.models import open_bench_runner, skip_reason, threads_default
from lbnet_deploy.benchmarks.stats import summarize
from lbnet_deploy.benchmarks.timing import interleaved, sample_input
from lbnet_deploy.metadata import COMPUTE, FORMS, Form
from lbnet_deploy.resolve import model_file
from lbnet_deploy.runtime import registry
from lbnet_deploy.runtime.backend import Runner

BASELINE = "ort plain"
# (label, bench contender or registry backend, graph, attention form, precision): graph
# "dynamic" is the runner `upscale` opens (any size), "fixed" a graph of the timed size; the
# forms are metadata.FORMS ("plain": the plain export has none of ours); bf16 is OpenVINO's
# compute precision over the FP32 graph (CPUs with AVX512-BF16 or AMX), int8 the graph
# `calibrate` makes with its defaults from the FP32 graph of that form
CONTENDERS = [
    *(
        (f"{name} {graph} {form}{'' if precision == 'fp32' else ' ' + precision}",
         backend, graph, form, precision)
        for name, backend, precisions in (
            ("ort", "ort", ("fp32",)), ("openvino", "openvino", ("fp32", "bf16"))
        )
        for precision in precisions
        for graph in ("dynamic", "fixed")
        for form in FORMS
    ),
    (BASELINE, "ort-plain", "fixed", "plain", "fp32"),
    ("openvino plain", "openvino-plain", "fixed", "plain", "fp32"),
    ("openvino plain bf16", "openvino-plain", "fixed", "plain", "bf16"),
    ("ort fixed batched int8", "ort", "fixed", "batched", "int8"),
    ("ort fixed flat int8", "ort", "fixed", "flat", "int8"),
    ("openvino fixed batched int8", "openvino", "fixed", "batched", "int8"),
    ("openvino fixed flat int8", "openvino", "fixed", "flat", "int8"),
]  # fmt: skip


# `calibrate` on a fixed 192x192 graph was killed at 24 GB RSS here (ONNX Runtime's calibrator
# keeps every intermediate of every crop): INT8 contenders stop at this size
INT8_MAX_SIZE = 128


def _new_shape_each_run(runner: Runner, size: int) -> Callable[[], object]:
    """A run at (size + k) x (size - k), k = 1, 2, ... (the same work within k^2 pixels): what a
    dynamic graph does for whole images of many sizes (OpenVINO: on its dynamic compile;
    ONNX Runtime: the arena given back after each new shape)."""
    count = itertools.count(1)

    def run() -> object:
        k = next(count)
        return runner.infer(sample_input(1, (size + k, size - k)))

    return run


def time_size(
    model: str,
    size: int,
    runs: int,
    warmup: int,
    threads: int,
    precisions: set[str],
    forms: set[str],
) -> dict[str, object]:
    x = sample_input(1, (size, size))
    calls = {}
    for label, backend, graph, form, precision in CONTENDERS:
        if precision not in precisions or (form not in forms and form != "plain"):
            continue
        reason = skip_reason(backend, precision)
        if precision == "int8" and size > INT8_MAX_SIZE:
            reason = f"INT8 is calibrated up to {INT8_MAX_SIZE}x{INT8_MAX_SIZE} (memory)"
        if reason:
            print(f"  not timing {label}: {reason}", file=sys.stderr)
            continue
        ours = None if form == "plain" else cast(Form, form)
        if graph == "dynamic":  # the product's cached dynamic graph of that form
            compute = precision if precision in COMPUTE else "fp32"
            path = model_file(model, form=cast(Form, form))
            runner = registry.get_backend(backend).open(path, threads, compute)
        else:
            runner, _ = open_bench_runner(
                backend, model, (size, size), threads=threads, precision=precision, form=ours
            )
        if graph == "dynamic":  # whole images: each run a shape the runner has not seen
            calls[label] = _new_shape_each_run(runner, size)
        else:
            calls[label] = partial(runner.infer, x)
    print(f"{size}x{size}: {len(calls)} contenders, {runs} rounds", file=sys.stderr, flush=True)
    stats = {k: summarize(v) for k, v in interleaved(calls, warmup, runs).items()}
    if BASELINE not in stats:
        raise SystemExit(f"the baseline {BASELINE} did not run: nothing to compare against")
    base = stats[BASELINE]["median_s"]
    return {
        "size": size,
        "stats": stats,
        "vs_plain_ort": {k: round(base / s["median_s"], 2) for k, s in stats.items()},
    }


def table(rows: list[dict], machine: dict) -> str:
    """One line per contender, one column per size (a contender skipped at a size: —)."""
    timed = {k for row in rows for k in row["stats"]}
    labels = [c[0] for c in CONTENDERS if c[0] in timed] + sorted(
        timed - {c[0] for c in CONTENDERS}
    )
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
             if f in machine.get("cpu_flags", [])]  # fmt: skip
    sizes = [f"{row['size']}x{row['size']}" for row in rows]
    lines = [
        f"{machine.get('cpu_model', '?')}, {machine.get('threads_used')} threads, flags: "
        f"{', '.join(flags) or 'none of avx2/avx512/vnni/bf16/amx'}",
        "",
        "| contender | " + " | ".join(sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
    ]
    for k in labels:
        cells = [
            f"{row['stats'][k]['median_s'] * 1e3:.0f} ms ({row['vs_plain_ort'][k]:.2f}x)"
            if k in row["stats"]
            else "—"
            for row in rows
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"median of the interleaved rounds; (Nx): speed against {BASELINE}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbnet-t-x4")
    parser.add_argument("--sizes", default="64,128,192")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="of fp32, bf16, int8 (int8 calibrates once)"
    )
    parser.add_argument("--forms", default=",".join(FORMS), help="attention forms to time")
    args = parser.parse_args(argv)
    use_shared_weights()
    threads = args.threads or threads_default()
    machine = machine_info(threads)
    precisions = set(args.precisions.split(","))
    rows: list[dict] = []
    for size in args.sizes.split(","):
        forms = set(args.forms.split(","))
        timed = time_size(args.model, int(size), args.runs, args.warmup, threads, precisions, forms)
        rows.append(timed)
        if args.json:  # after each size: a run stopped at a larger size keeps the smaller ones
            args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        print(table(rows[-1:], machine), file=sys.stderr, flush=True)
    print(table(rows, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
