"""Regenerate benchmarks/RESULTS.md, its figure and JSON: every study, one command.

    python -m lbnet_deploy.benchmarks.report [extra args]

Extra arguments go to `bench` (e.g. --runs 2 --compare-size 32x32 for a quick dry run with
--out-dir elsewhere; --official-repo DIR adds the official code to the comparison). On 2
quiet cores the defaults take roughly 20-30 minutes (INT8 graphs are calibrated once each).

    python -m lbnet_deploy.benchmarks.report --comparison FILE [--note TEXT] [--out-dir DIR]

puts the comparison of a `bench --compare --json FILE` run (this or another machine) in place
of results.json's, with the peaks measured in that run, and re-renders RESULTS.md. The one it
replaces stays beside it under "other kinds of CPU" when it was measured on another kind (CPU
model and flags): the CPU goals are judged per machine, and each kind keeps its latest run (an
older run of a kept kind is refused). A full regeneration keeps the other kinds' comparisons.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli import main as bench_main
from .machine import cpu_kind

HERE = Path(__file__).resolve().parent


def _cpu(machine: dict[str, Any]) -> dict[str, Any]:
    """What tells one kind of CPU from another, and what ran on it."""
    keys = ("cpu_model", "cpu_flags", "threads_used", "platform", "versions")
    return {k: machine.get(k) for k in keys}


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
    measured on another kind of CPU. Each kind keeps its latest: a run older than the one
    kept for its kind is refused."""
    try:
        new = _own(run["comparison"], run) | ({"cpu_note": note} if note else {})
        kept = [_own(result["comparison"], result)] if result.get("comparison") else []
    except KeyError as exc:
        raise SystemExit(f"not a `bench --compare --json` result: it has no {exc}") from None
    kept += result.get("other_cpus") or []
    kind = cpu_kind(new["machine"])
    same = [k for k in kept if cpu_kind(k["machine"]) == kind]
    newer = [k["started"] for k in same if k["started"] > new["started"]]
    if newer:
        raise SystemExit(
            f"a comparison of {new['started']} would replace a later one of the same kind of "
            f"CPU ({newer[0]})"
        )
    others = sorted((k for k in kept if cpu_kind(k["machine"]) != kind), key=lambda k: k["started"])
    return result | {"comparison": new, "other_cpus": others}


def _splice(argv: list[str], out: Path) -> int:
    """`--comparison FILE [--note TEXT]`: that run's comparison into results.json and
    RESULTS.md (rendered before anything is written; the figure is linked, not redrawn)."""
    import argparse

    from lbnet_deploy.runtime.atomic import write_json_atomic, write_text_atomic

    from .markdown import render

    p = argparse.ArgumentParser(prog="python -m lbnet_deploy.benchmarks.report")
    p.add_argument("--comparison", required=True, help="a `bench --compare --json` file")
    p.add_argument("--note", help="what a reader of this comparison should know about its run")
    args = p.parse_args(argv)
    try:
        result = json.loads((out / "results.json").read_text())
        run = json.loads(Path(args.comparison).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"cannot read {getattr(exc, 'filename', None) or 'a file'}: {exc}"
        ) from None
    merged = with_comparison(result, run, args.note)
    plot = "scaling.png" if (out / "scaling.png").is_file() and result.get("scaling") else None
    text = render(merged, plot)
    write_json_atomic(out / "results.json", merged)
    write_text_atomic(out / "RESULTS.md", text)
    return 0


def _keep_other_cpus(before: dict[str, Any] | None, out: Path) -> None:
    """After a full regeneration: the comparisons of other kinds of CPU kept before stay."""
    from lbnet_deploy.runtime.atomic import write_json_atomic, write_text_atomic

    from .markdown import render

    if not before or not (before.get("comparison") or before.get("other_cpus")):
        return
    fresh = json.loads((out / "results.json").read_text())
    if fresh.get("comparison"):  # bench's own machine: the kinds other than this one stay
        fresh["other_cpus"] = with_comparison(before, fresh)["other_cpus"]
    else:
        fresh["other_cpus"] = before.get("other_cpus") or []
    text = render(fresh, "scaling.png" if (out / "scaling.png").is_file() else None)
    write_json_atomic(out / "results.json", fresh)
    write_text_atomic(out / "RESULTS.md", text)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = HERE
    if "--out-dir" in args:
        i = args.index("--out-dir")
        out = Path(args[i + 1])
        del args[i : i + 2]
        out.mkdir(parents=True, exist_ok=True)
    if any(a.startswith("--comparison") for a in args):
        return _splice(args, out)
    previous = out / "results.json"
    before = json.loads(previous.read_text()) if previous.is_file() else None
    code = bench_main(
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
    if code == 0:
        _keep_other_cpus(before, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
