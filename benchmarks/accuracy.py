"""What PRECISION.md measured, asked by the commands: whether a compute precision of OpenVINO
(`--precision bf16`, `bf16-attn`) stays within a bound of FP32 (benchmarks/precision.json,
written by `benchmarks/studies/precision_study.py`, shipped in the package)."""

from __future__ import annotations

import json
from pathlib import Path

# the official checkpoints a precision must be measured on before it may run by default
CHECKPOINTS = ("lbnet-t-x4", "lbnet-t-x3", "lbnet-x3", "lbnet-t-x2", "lbnet-x2")
DATASETS = ("Set5", "Set14")  # each measured on both
BOUND_DB = 0.01  # the CPU issue's "FP32 accuracy": within this of FP32 on Set5 and Set14
PRECISION_JSON = Path(__file__).with_name("precision.json")


def within_bound(
    compute: str, models: tuple[str, ...] = CHECKPOINTS, bound_db: float = BOUND_DB
) -> bool | None:
    """Whether OpenVINO's `compute` run is within `bound_db` of OpenVINO FP32 on Set5 and on
    Set14 for each of `models`; None where one of those was not measured (or precision.json
    is not installed)."""
    run = f"openvino-{compute}"
    try:
        results = {r["model"]: r for r in json.loads(PRECISION_JSON.read_text())}
        tables = [results[m]["bf16"]["datasets"] for m in models]
        if any(not set(DATASETS) <= set(t) for t in tables):
            return None  # a set not measured is not a pass (others measured besides: no matter)
        return all(abs(t[d][run]["drop_db"]) <= bound_db for t in tables for d in DATASETS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
