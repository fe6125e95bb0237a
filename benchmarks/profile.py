"""ONNX Runtime's own profile of a graph, summarised as the op types that take the time."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def summarize_profile(events: list[dict[str, Any]], runs: int, top: int = 10) -> list[dict]:
    """Top op types by total kernel time per run, from ORT's Chrome-trace JSON events."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        total[op] += event.get("dur", 0) / 1e6
        count[op] += 1
    grand = sum(total.values()) or 1.0
    rows = sorted(total.items(), key=lambda kv: -kv[1])[:top]
    return [
        {
            "op": op,
            "seconds_per_run": round(sec / runs, 4),
            "share": round(sec / grand, 3),
            "nodes": count[op] // max(runs, 1),
        }
        for op, sec in rows
    ]


def profile_onnx(path: str | Path, x: np.ndarray, threads: int, runs: int = 2) -> list[dict]:
    """Run `path` runs + 1 times with ORT profiling on and summarise per run.

    The first (warm-up) run is in the trace too; averaging it in moves the shares very little,
    and ORT offers no way to start profiling after it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarize_profile(events, runs + 1)
