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
from datetime import datetime, timezone
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


def _when(started: str) -> datetime:
    """A run's start (bench writes local time with its offset), comparable across zones; one
    without an offset is taken as UTC."""
    when = datetime.fromisoformat(started)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _kept(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every comparison `result` holds, each with its own run's facts."""
    kept = [_own(result["comparison"], result)] if result.get("comparison") else []
    return kept + (result.get("other_cpus") or [])


def with_comparison(
    result: dict[str, Any],
    run: dict[str, Any],
    note: str | None = None,
    *,
    refuse_older: bool = True,
) -> dict[str, Any]:
    """`result` with `run`'s comparison as its own; the one replaced joins `other_cpus` when
    measured on another kind of CPU, and each kind keeps one. `refuse_older`: a run older than
    the one kept for its kind is refused (a spliced file; a fresh full run is the latest)."""
    try:
        new = _own(run["comparison"], run) | ({"cpu_note": note} if note else {})
        kept = _kept(result)
        kind, when = cpu_kind(new["machine"]), _when(new["started"])
        same = [k for k in kept if cpu_kind(k["machine"]) == kind]
        later = [k["started"] for k in same if _when(k["started"]) > when]
        others = [k for k in kept if cpu_kind(k["machine"]) != kind]
        others.sort(key=lambda k: _when(k["started"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SystemExit(
            f"not a `bench --compare --json` result ({type(exc).__name__}: {exc})"
        ) from None
    if later and refuse_older:
        raise SystemExit(
            f"a comparison of {new['started']} would replace a later one of the same kind of "
            f"CPU ({later[0]})"
        )
    return result | {"comparison": new, "other_cpus": others}


def _write(result: dict[str, Any], out: Path) -> None:
    """results.json and RESULTS.md together (rendered first, then renamed into place as one),
    the figure linked as it is, not redrawn."""
    from lbnet_deploy.runtime.atomic import strict_json, write_files_atomic

    from .markdown import render

    plot = "scaling.png" if (out / "scaling.png").is_file() and result.get("scaling") else None
    try:
        text = render(result, plot)
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"cannot render that comparison ({type(exc).__name__}: {exc})") from None
    data = strict_json(result).encode()  # as bench writes it
    write_files_atomic({out / "results.json": data, out / "RESULTS.md": text.encode()})


def _splice(argv: list[str], out: Path) -> int:
    """`--comparison FILE [--note TEXT]`: that run's comparison into results.json and
    RESULTS.md."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m lbnet_deploy.benchmarks.report")
    p.add_argument(
        "--comparison", required=True, action="append", help="a `bench --compare --json` file"
    )
    p.add_argument("--note", help="what a reader of this comparison should know about its run")
    args = p.parse_args(argv)
    if len(args.comparison) > 1:
        p.error("--comparison takes one file")
    try:
        result = json.loads((out / "results.json").read_text())
        run = json.loads(Path(args.comparison[0]).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"cannot read {getattr(exc, 'filename', None) or 'a file'}: {exc}"
        ) from None
    if not isinstance(run, dict):
        raise SystemExit(f"{args.comparison[0]}: not a `bench --compare --json` result")
    _write(with_comparison(result, run, args.note), out)
    return 0


def _keep_other_cpus(before: dict[str, Any] | None, out: Path) -> None:
    """After a full regeneration: the comparisons of other kinds of CPU kept before stay (the
    fresh run replaces its own kind's, whatever the clocks said)."""
    if not before or not (before.get("comparison") or before.get("other_cpus")):
        return
    fresh = json.loads((out / "results.json").read_text())
    if fresh.get("comparison"):
        merged = with_comparison(before, fresh, refuse_older=False)
        fresh["other_cpus"] = merged["other_cpus"]
    else:  # no comparison of its own: every one kept stays, the one that was above too
        fresh["other_cpus"] = sorted(_kept(before), key=lambda k: _when(k["started"]))
    _write(fresh, out)


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
