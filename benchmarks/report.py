"""Regenerate benchmarks/RESULTS.md, its figure and JSON: every study, one command.

    python -m lbnet_deploy.benchmarks.report [extra args]

Extra arguments go to `bench` (e.g. --runs 2 --compare-size 32x32 for a quick dry run with
--out-dir elsewhere; --official-repo DIR adds the official code to the comparison). On 2
quiet cores the defaults take roughly 20-30 minutes (INT8 graphs are calibrated once each).

    python -m lbnet_deploy.benchmarks.report --comparison FILE [--note TEXT] [--out-dir DIR]

puts the comparison of a `bench --compare --json FILE` run (this or another machine) in place
of results.json's, with the peaks measured in that run, and re-renders RESULTS.md. The one it
replaces stays beside it under "other kinds of CPU" when it was measured on another kind (CPU
model and flags): the CPU goals are judged per machine, and each kind keeps its latest run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli import main as bench_main

HERE = Path(__file__).resolve().parent


def _cpu(machine: dict[str, Any]) -> dict[str, Any]:
    """What tells one kind of CPU from another, and what ran on it."""
    keys = ("cpu_model", "cpu_flags", "threads_used", "platform", "versions")
    return {k: machine.get(k) for k in keys}


def _kind(cpu: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return cpu["cpu_model"], tuple(cpu.get("cpu_flags") or ())


def _own(comparison: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A comparison carrying the machine, start and peaks of the run it was measured in."""
    roofline = dict(comparison.get("roofline") or run.get("roofline") or {})
    if roofline and "peaks_gmacs" not in roofline:  # schema 1 (before 2026-12-02): FP32 only
        roofline["peaks_gmacs"] = {"fp32": roofline["peak_gmacs"]}
    return {
        **comparison,
        "machine": comparison.get("machine") or _cpu(run["machine"]),
        "started": comparison.get("started") or run["started"],
        "roofline": roofline or None,
        "load_average": comparison.get("load_average") or run["machine"].get("load_average"),
    }


def with_comparison(
    result: dict[str, Any], run: dict[str, Any], note: str | None = None
) -> dict[str, Any]:
    """`result` with `run`'s comparison as its own; the one replaced joins `other_cpus` when
    measured on another kind of CPU, and each kind keeps only its latest comparison."""
    if not run.get("comparison"):
        raise SystemExit("that file has no comparison: make it with `bench --compare --json`")
    new = _own(run["comparison"], run) | ({"cpu_note": note} if note else {})
    others = list(result.get("other_cpus") or [])
    if result.get("comparison"):
        others.append(_own(result["comparison"], result))
    others = [o for o in others if _kind(o["machine"]) != _kind(new["machine"])]
    latest = {_kind(o["machine"]): o for o in sorted(others, key=lambda o: o["started"])}
    return result | {"comparison": new, "other_cpus": list(latest.values())}


def _splice(args: list[str], out: Path) -> int:
    from .cli import write_outputs

    def option(name: str) -> str | None:
        if name not in args:
            return None
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return value

    source, note = option("--comparison"), option("--note")
    if args or not source:
        raise SystemExit(f"--comparison FILE takes --note TEXT and --out-dir only, not {args}")
    result = json.loads((out / "results.json").read_text())
    run = json.loads(Path(source).read_text())
    write_outputs(
        with_comparison(result, run, note),
        str(out / "results.json"),
        str(out / "scaling.png") if result.get("scaling") else None,
        str(out / "RESULTS.md"),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = HERE
    if "--out-dir" in args:
        i = args.index("--out-dir")
        out = Path(args[i + 1])
        del args[i : i + 2]
        out.mkdir(parents=True, exist_ok=True)
    if "--comparison" in args:
        return _splice(args, out)
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
