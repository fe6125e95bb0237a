"""`lbnet-deploy bench`: run the chosen studies and collect one JSON-ready result.

Default scope is the forward pass for the given sizes and backends (fixed-size exports are
cached). The heavier studies (paper TM-k table, scaling curve, end-to-end upscale, interleaved
comparison with profiles) run only when asked for.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import measure
from .machine import machine_info
from .models import (
    SCALING_TILED,
    SCALING_WHOLE,
    TRAINED_RECURSIONS,
    data_dir,
    threads_default,
)

SCHEMA = "lbnet-deploy/bench/2"  # 2: roofline per precision (peaks_gmacs, rates_gmacs)


def default_set5() -> str:
    """Set5 for --paper and --dataset: $LBNET_SET5_DIR, else Set5 in `data_dir()`."""
    return os.environ.get("LBNET_SET5_DIR", str(data_dir() / "Set5"))


@dataclass
class BenchOptions:
    model: str = "lbnet-t-x4"
    backends: tuple[str, ...] = ("ort",)
    precisions: tuple[str, ...] = ("fp32",)
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (128, 128))
    batch: int = 1
    runs: int = 5
    warmup: int = 1
    threads: int | None = None
    recursions: int = TRAINED_RECURSIONS
    random_weights: bool = False
    roofline: bool = True
    cuda_graph: bool = True  # TensorRT engines replay a CUDA graph per batch
    device_ms: float = 0.0  # the null backend's stand-in device, per batch
    pipeline: bool = False  # the host pipeline over the null backend
    dataset: str | None = None  # end-to-end upscale of this folder
    paper: bool = False
    compare: bool = False
    compare_size: tuple[int, int] = (128, 128)
    official_repo: str | None = None  # a checkout of IVIPLab/LBNet for --compare
    profile: bool = True
    scaling: bool = False
    scaling_whole: tuple[int, ...] = SCALING_WHOLE
    scaling_tiled: tuple[int, ...] = SCALING_TILED
    scaling_max_seconds: float = 60.0
    scaling_tile: int = 96
    paper_image: str = "baby"
    paper_data: str = field(default_factory=default_set5)
    # serving through Triton (--backend triton): clients against in-process upscale
    serving: bool = False
    clients: int = 4
    url: str | None = None  # a running server (default: a local one from the wheel)
    served: str | None = None  # the image model there (default: named after --model)


_log = logging.getLogger("lbnet_deploy").info  # progress, on stderr under the CLI


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Everything measured, with the machine and settings it was measured with."""
    threads = opts.threads or threads_default()
    start = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "model": opts.model,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(threads),
        "settings": asdict(opts) | {"threads": threads},
    }
    if opts.roofline and opts.backends:
        from .roofline import measure_peak

        _log("measuring this CPU's MatMul peak per precision (FP32, BF16, INT8)")
        result["roofline"] = measure_peak(threads)
    peaks = result.get("roofline", {}).get("peaks_gmacs")
    timing = measure.Timing(
        opts.warmup, opts.runs, threads, opts.random_weights, peaks=peaks,
        cuda_graph=opts.cuda_graph, device_ms=opts.device_ms,
    )  # fmt: skip
    result["forward"], result["skipped"] = [], []
    if opts.backends:
        _log(
            f"forward pass: {', '.join(opts.backends)} at "
            f"{', '.join(f'{h}x{w}' for h, w in opts.sizes)}"
        )
        result["forward"], result["skipped"] = measure.forward_study(
            opts.model, opts.backends, opts.precisions, opts.sizes, timing,
            batch=opts.batch, recursions=opts.recursions,
        )  # fmt: skip
    if opts.serving:
        result["triton"] = _serving(opts, timing, result["skipped"])
    if opts.compare:
        result["comparison"] = measure.compare_study(
            opts.model, opts.compare_size, timing, profile=opts.profile,
            official_repo=opts.official_repo,
        )  # fmt: skip
    if opts.paper:
        image = measure.set5_image(opts.paper_data, opts.paper_image)
        result["paper"] = measure.paper_study(opts.model, image, timing)
    if opts.scaling:
        _log("scaling curve (ORT, ours): whole image, then tiled")
        result["scaling"] = measure.scaling_study(
            opts.model, opts.scaling_whole, opts.scaling_tiled,
            replace(timing, runs=min(opts.runs, 3)), tile=opts.scaling_tile,
            max_seconds=opts.scaling_max_seconds,
        )  # fmt: skip
    if opts.pipeline:
        _log("host pipeline over the null backend (a stand-in device)")
        result["pipeline"] = measure.pipeline_study(opts.model, timing)
    if opts.dataset:
        _log(f"end-to-end upscale of {opts.dataset}")
        result["end_to_end"] = measure.end_to_end_study(opts.model, opts.dataset, timing)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    return result


def _serving(opts: BenchOptions, timing: measure.Timing, skipped: list) -> dict[str, Any] | None:
    """The Triton study, or None with the reason among the skipped (no server to be had)."""
    from lbnet_deploy.errors import LBNetError

    from .serving import serving_study

    _log(f"serving through Triton: {opts.clients} clients against in-process upscale")
    try:
        return serving_study(
            opts.model, opts.dataset or default_set5(), timing, clients=opts.clients,
            url=opts.url, served=opts.served,
        )  # fmt: skip
    except LBNetError as exc:
        skipped.append({"config": "triton", "reason": str(exc)})
        return None
