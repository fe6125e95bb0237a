"""What PRECISION.md measured, asked by the commands: whether a compute precision of OpenVINO
(`--precision bf16`, `bf16-attn`) stays within a bound of FP32 (benchmarks/precision.json,
written by `benchmarks/studies/precision_study.py`)."""

from __future__ import annotations

import json
from pathlib import Path

# the official checkpoints a precision must be measured on before it may run by default
CHECKPOINTS = ("lbnet-t-x4", "lbnet-t-x3", "lbnet-x3", "lbnet-t-x2", "lbnet-x2")
BOUND_DB = 0.01  # the CPU issue's "FP32 accuracy": within this of FP32 on Set5 and Set14


def within_bound(
    compute: str, models: tuple[str, ...] = CHECKPOINTS, bound_db: float = BOUND_DB
) -> bool | None:
    """Whether every Set5/Set14 row of OpenVINO's `compute` run is within `bound_db` of
    OpenVINO FP32 for each of `models`; None where one of them was not measured (or
    precision.json is not installed)."""
    run = f"openvino-{compute}"
    try:
        results = {
            r["model"]: r
            for r in json.loads(Path(__file__).with_name("precision.json").read_text())
        }
        rows = [row for m in models for row in results[m]["bf16"]["datasets"].values()]
        return all(abs(row[run]["drop_db"]) <= bound_db for row in rows)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
