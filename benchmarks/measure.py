"""The measurements: forward pass per backend and size, end-to-end upscale of a dataset, the
paper's TM-k table, the scaling curve (full image vs tiled) and the interleaved comparison.

Each study returns plain dicts (JSON-ready). Runners are dropped after each configuration so
one configuration's memory is not charged to the next.
"""

from __future__ import annotations

import functools
import gc
import logging
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.macs import count_macs
from lbnet_deploy.metadata import COMPUTE
from lbnet_deploy.runtime.backend import to_range
from lbnet_deploy.runtime.upscaler import available_memory_mb

from . import choose
from .accuracy import within_bound
from .memory import PeakMemory
from .models import (
    CONTENDERS,
    TRAINED_RECURSIONS,
    bench_onnx,
    model_facts_of,
    off_cpu,
    open_bench_runner,
    skip_reason,
)
from .roofline import peak_for
from .stats import output_megapixels, summarize, throughput
from .timing import interleaved, sample_input, time_calls, time_forward

# The paper's running-time rows -> TransBlock applications per stage (TM-k applies k + 1 times)
PAPER_ROWS = (
    ("without transformer", 0),
    ("TM-0", 1),
    ("TM-1", 2),
    ("TM-2 (released)", 3),
    ("TM-3", 4),
)
GOAL_VS_EAGER, GOAL_VS_PLAIN = 4.0, 1.3  # the targets at 128x128


@dataclass(frozen=True)
class Timing:
    """How every study of one bench run times and reports (one object, not ten arguments)."""

    warmup: int = 1
    runs: int = 5
    threads: int | None = None
    random_weights: bool = False  # seeded random weights instead of the checkpoint's
    peaks: dict[str, float] | None = None  # the CPU's GMAC/s per precision (roofline)
    cuda_graph: bool = True  # TensorRT engines replay a CUDA graph per batch
    device_ms: float = 0.0  # what the null backend's stand-in device takes per batch
    log: Callable[[str], None] = logging.getLogger("lbnet_deploy").info  # progress


def graph_macs(
    spec: str,
    size: tuple[int, int],
    batch: int = 1,
    recursions: int = 3,
    random_weights: bool = False,
) -> dict[str, int]:
    """MACs of our fixed-size graph for this configuration (the work every backend does)."""
    path = bench_onnx(spec, size, batch, recursions, random_weights=random_weights)
    return count_macs(path)


def _row(
    result: dict[str, Any], macs: int | None, megapixels: float, peak_gmacs: float | None
) -> dict[str, Any]:
    """Throughput, GMAC/s and the fraction of `peak_gmacs` (the peak of the precision the row
    computes in) of one timed configuration."""
    median = result["stats"]["median_s"]
    result["output_mpix"] = megapixels
    result["throughput_mpix_s"] = round(throughput(megapixels, median), 4)
    if macs:
        result["gmacs"] = round(macs / 1e9, 3)
        result["gmacs_per_s"] = round(macs / median / 1e9, 2)
        if peak_gmacs:
            result["roofline_fraction"] = round(macs / median / 1e9 / peak_gmacs, 3)
    return result


def forward_study(
    spec: str,
    backends: Sequence[str],
    precisions: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    timing: Timing,
    *,
    batch: int = 1,
    recursions: int = TRAINED_RECURSIONS,
    image: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(rows, skipped): one row per runnable (backend, precision, size), each row's fraction of
    peak against the peak of its own precision (`timing.peaks`)."""
    t, log = timing, timing.log
    rows, skipped = [], []
    counted = any(CONTENDERS[b].graph != "null" for b in backends)  # not exported for null
    for size in sizes:
        macs = graph_macs(spec, size, batch, recursions, t.random_weights) if counted else {}
        x = image if image is not None else sample_input(batch, size)
        for backend in backends:
            for precision in precisions:
                reason = skip_reason(backend, precision)
                label = f"{backend} {precision} {size[0]}x{size[1]} b{batch} r{recursions}"
                if reason:
                    skipped.append({"config": label, "reason": reason})
                    continue
                try:
                    runner, path = open_bench_runner(
                        backend,
                        spec,
                        size,
                        batch=batch,
                        precision=precision,
                        recursions=recursions,
                        threads=t.threads,
                        random_weights=t.random_weights,
                        cuda_graph=t.cuda_graph,
                        device_ms=t.device_ms,
                    )
                except LBNetError as exc:  # a probe passed but the backend did not open
                    skipped.append({"config": label, "reason": str(exc)})
                    log(f"  {label}: skipped ({exc})")
                    continue
                result = time_forward(runner, x, t.warmup, t.runs)
                scale = runner.scale
                del runner
                gc.collect()
                row: dict[str, Any] = {
                    "backend": backend,
                    "precision": precision,
                    "size": list(size),
                    "batch": batch,
                    "recursions": recursions,
                    "onnx": str(path) if path else None,
                }
                mpix = output_megapixels(batch, size, scale)
                peak = peak_for(t.peaks, precision, off_cpu(backend))
                row |= _row(result, macs.get("total"), mpix, peak)
                rows.append(row)
                log(
                    f"  {label}: median {row['stats']['median_s'] * 1e3:.1f} ms, "
                    f"peak RSS {row['peak_rss_mb']:.0f} MB"
                )
    return rows, skipped


def set5_image(dataset: str | Path, name: str = "baby") -> np.ndarray:
    """A Set5 x4 LR image as a float32 1x3xHxW batch (baby: 128x128, the paper table input)."""
    from PIL import Image

    folder = Path(dataset) / "LR_bicubic" / "X4"
    path = next(iter(sorted(folder.glob(f"{name}*.png"))), None)
    if path is None:
        raise FileNotFoundError(f"no {name}*.png in {folder}")
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def paper_study(
    spec: str,
    image: np.ndarray,
    timing: Timing,
    *,
    backends: Sequence[str] = ("ort", "torch"),
) -> list[dict[str, Any]]:
    """The paper's x4 running-time rows, timed here for each backend on one Set5 image."""
    from lbnet_deploy.paper import RUNNING_TIME_X4

    size = (int(image.shape[2]), int(image.shape[3]))
    rows = []
    for label, recursions in PAPER_ROWS:
        timing.log(f"paper row {label} (recursions {recursions})")
        timed, _ = forward_study(
            spec, backends, ["fp32"], [size], timing, recursions=recursions, image=image
        )
        ours = {r["backend"]: r["stats"]["median_s"] for r in timed}
        paper_s = RUNNING_TIME_X4[label]
        rows.append(
            {
                "row": label,
                "recursions": recursions,
                "paper_s": paper_s,
                "size": list(size),
                "ours_s": ours,
                "ratio_to_paper": {b: round(t / paper_s, 1) for b, t in ours.items()},
                "gmacs": timed[0].get("gmacs") if timed else None,
            }
        )
    return rows


OURS = "ours (ort)"
PORT_PLAIN = "plain export (ort-plain)"
PORT_EAGER = "eager reference (torch)"
OFFICIAL_PLAIN = "official code, plain export (ort)"
PORT_PLAIN_OV = "plain export (openvino-plain)"
# OpenVINO beside ONNX Runtime, where it is installed: FP32, and BF16 where the CPU has it
OPENVINO = {
    "ours (openvino)": ("openvino", "fp32"),
    PORT_PLAIN_OV: ("openvino-plain", "fp32"),
    "ours (openvino bf16-attn)": ("openvino", "bf16-attn"),
    "ours (openvino bf16)": ("openvino", "bf16"),
    "plain export (openvino-plain bf16)": ("openvino-plain", "bf16"),
}
OFFICIAL_EAGER = "official code, eager (torch)"
OFFICIAL_PLAIN_OV = "official code, plain export (openvino)"


# The CPU issue's goals (ratios against the plain export, one interleaved run): the default CPU
# path at FP32 >= 1.5x that export on ONNX Runtime and >= 1.0x it on OpenVINO; the fastest path
# (BF16 where the CPU has it, within 0.01 dB: PRECISION.md) >= 2.5x it on ONNX Runtime.
CPU_GOALS = {
    "default_vs_plain_ort": 1.5,
    "default_vs_plain_openvino": 1.0,
    "fastest_vs_plain_ort": 2.5,
}
# ours on each CPU backend, by what it computes in (ONNX Runtime first: auto's default)
OURS_ON_CPU = {OURS: "fp32"} | {
    name: compute for name, (backend, compute) in OPENVINO.items() if backend == "openvino"
}


def cpu_goals(
    stats: dict[str, dict[str, float]],
    default_counts: Collection[str],
    fastest_counts: Collection[str],
) -> dict[str, Any] | None:
    """The CPU goals judged on one comparison: the default path as `--backend auto` picks it
    (ours on ONNX Runtime unless another of ours is `choose.MARGIN` faster, among FP32 and
    the computes of `default_counts`: those auto times, `choose.ACCURATE` within 0.01 dB of
    FP32 on every checkpoint), the fastest any of ours (FP32 and the computes of
    `fastest_counts`: within 0.01 dB for this model)."""
    plain, _ = judged_against(stats)
    plain_ov = OFFICIAL_PLAIN_OV if plain == OFFICIAL_PLAIN else PORT_PLAIN_OV

    def timed(counts: Collection[str]) -> dict[str, float]:
        return {
            name: stats[name]["median_s"]
            for name, compute in OURS_ON_CPU.items()
            if name in stats and (compute == "fp32" or compute in counts)
        }

    accurate, ours = timed(default_counts), timed(fastest_counts)
    if not accurate or plain not in stats:
        return None
    default = next(iter(accurate))  # ours on ONNX Runtime, where it ran
    quickest = min(accurate, key=accurate.__getitem__)
    if accurate[default] >= accurate[quickest] * choose.MARGIN:
        default = quickest
    fastest = min(ours, key=ours.__getitem__)
    ratios = {
        "default_vs_plain_ort": stats[plain]["median_s"] / accurate[default],
        "default_vs_plain_openvino": (
            stats[plain_ov]["median_s"] / accurate[default] if plain_ov in stats else None
        ),
        "fastest_vs_plain_ort": stats[plain]["median_s"] / ours[fastest],
    }
    return {
        "default": default, "fastest": fastest, "against": [plain, plain_ov],
        "default_counts": sorted(default_counts), "fastest_counts": sorted(fastest_counts),
        "ratios": {k: None if v is None else round(v, 2) for k, v in ratios.items()},
        "goals": CPU_GOALS,
        "met": {k: v is not None and v >= CPU_GOALS[k] for k, v in ratios.items()},
    }  # fmt: skip


def judged_against(contenders: Collection[str]) -> tuple[str, str]:
    """(plain export, eager) the goals are judged against: the official code's when timed,
    else our straightforward port's."""
    plain = OFFICIAL_PLAIN if OFFICIAL_PLAIN in contenders else PORT_PLAIN
    eager = OFFICIAL_EAGER if OFFICIAL_EAGER in contenders else PORT_EAGER
    return plain, eager


def compare_study(
    spec: str,
    size: tuple[int, int],
    timing: Timing,
    *,
    profile: bool = True,
    official_repo: str | None = None,
) -> dict[str, Any]:
    """Ours (fixed-size export, ORT) vs the plain export of the straightforward port (ORT) vs
    the straightforward port in eager PyTorch, and both graphs on OpenVINO where it runs:
    interleaved in one process, one input. With `official_repo` (a checkout of IVIPLab/LBNet)
    the official code, eager and plainly exported, joins them and the goals are judged against
    it. Profiles are ONNX Runtime's, of the ORT contenders."""
    from lbnet_deploy.runtime.registry import get_backend

    from .profile import profile_onnx, profile_openvino

    threads, log, peaks = timing.threads, timing.log, timing.peaks
    x = sample_input(1, size)
    contenders = {
        OURS: ("ort", "fp32"),
        PORT_PLAIN: ("ort-plain", "fp32"),
        PORT_EAGER: ("torch", "fp32"),
    }
    for name, (backend, precision) in OPENVINO.items():
        reason = skip_reason(backend, precision)
        if reason:
            log(f"  not timing {name}: {reason}")
        else:
            contenders[name] = (backend, precision)
    runners: dict[str, tuple[Any, Path | None]] = {}
    for name, (backend, precision) in contenders.items():
        runners[name] = open_bench_runner(backend, spec, size, precision=precision, threads=threads)
    profiled = [n for n, (b, _) in contenders.items() if b.startswith("ort")]
    if official_repo:
        from .official import OfficialEagerRunner, export_official, load_official

        official, desc = load_official(official_repo, spec)
        path = export_official(official, desc, size)
        runners[OFFICIAL_PLAIN] = (get_backend("ort").open(path, threads, "fp32"), path)
        profiled.append(OFFICIAL_PLAIN)
        if "ours (openvino)" in runners:
            runners[OFFICIAL_PLAIN_OV] = (get_backend("openvino").open(path, threads, "fp32"), path)
        runners[OFFICIAL_EAGER] = (OfficialEagerRunner(official, threads), None)
    log(f"interleaved comparison at {size[0]}x{size[1]}: {timing.runs} rounds of {len(runners)}")
    calls = {name: (lambda r=r: r.infer(x)) for name, (r, _) in runners.items()}
    samples = interleaved(calls, timing.warmup, timing.runs)
    stats = {name: summarize(s) for name, s in samples.items()}
    plain_name, eager_name = judged_against(stats)
    ours = stats[OURS]["median_s"]
    eager = stats[eager_name]["median_s"]
    plain = stats[plain_name]["median_s"]
    result: dict[str, Any] = {
        "size": list(size),
        "order": list(runners),
        "against": "official code" if official_repo else "straightforward port",
        "stats": stats,
        "speedup_vs_eager": round(eager / ours, 2),
        "speedup_vs_plain": round(plain / ours, 2),
        # every contender against the plain export on ONNX Runtime (> 1: faster than it)
        "vs_plain": {name: round(plain / st["median_s"], 2) for name, st in stats.items()},
        "goal_vs_eager": GOAL_VS_EAGER,
        "goal_vs_plain": GOAL_VS_PLAIN,
    }
    macs = graph_macs(spec, size)
    result["macs"] = macs
    if peaks:
        # no FP32 backend can beat MACs / peak: the floor this CPU sets for one FP32 pass; each
        # contender's fraction is of the peak of the precision it computes in
        result["floor_s"] = round(macs["total"] / 1e9 / peaks["fp32"], 4)
        computes = {name: contenders.get(name, ("", "fp32"))[1] for name in stats}
        result["fraction_of_peak"] = {
            name: round(macs["total"] / 1e9 / st["median_s"] / peaks[computes[name]], 3)
            for name, st in stats.items()
            if computes[name] in peaks
        }
    result["goals_met"] = (
        result["speedup_vs_eager"] >= GOAL_VS_EAGER and result["speedup_vs_plain"] >= GOAL_VS_PLAIN
    )
    if any(contenders.get(name, ("", ""))[1] == "bf16-attn" for name in stats):
        from lbnet_deploy.runtime.openvino import BF16_ATTN_COVERS

        result["bf16_attn_covers"] = BF16_ATTN_COVERS  # what was timed, for later readers
    result["cpu_goals"] = cpu_goals(
        stats,
        [c for _, c in choose.ACCURATE if within_bound(c) is True],  # what auto may pick
        [c for c in COMPUTE if within_bound(c, (spec,)) is True],  # this model
    )
    if profile:
        log("profiling ours and the plain export with ORT, and the OpenVINO contenders")
        # the graph itself is run: fed in its own range (a unit file, lbnet.io, takes 0..1)
        result["profile"] = {
            name: profile_onnx(path, to_range(x, r.model_facts.peak), threads or 1, runs=2)
            for name, (r, path) in runners.items()
            if path is not None and name in profiled
        }
        result["profile_openvino"] = {
            name: profile_openvino(
                path, to_range(x, r.model_facts.peak), threads or 1, contenders[name][1]
            )
            for name, (r, path) in runners.items()
            if path is not None and contenders.get(name, ("",))[0].startswith("openvino")
        }
    return result


def _predict(prev: tuple[int, float] | None, pixels: int) -> float:
    """Upper-bound seconds for `pixels` from the last measured size: attention grows as N^2."""
    if prev is None:
        return 0.0
    return prev[1] * (pixels / prev[0]) ** 2


def scaling_study(
    spec: str,
    whole_sizes: Sequence[int],
    tiled_sizes: Sequence[int],
    timing: Timing,
    *,
    tile: int = 96,
    overlap: int = 16,
    max_seconds: float = 60.0,
    memory_cap_mb: float | None = None,
) -> list[dict[str, Any]]:
    """Latency, peak memory and MACs vs square LR size: whole image (one fixed-size graph per
    size) and tiled (the tile-size graph through the Upscaler, feather merge).

    A size is skipped when its predicted forward time exceeds `max_seconds` (N^2 extrapolation
    from the previous size) or its predicted memory (the Upscaler's model) exceeds the cap.
    """
    from lbnet_deploy.metadata import ModelFacts
    from lbnet_deploy.runtime.upscaler import Upscaler

    warmup, runs, threads, log = timing.warmup, timing.runs, timing.threads, timing.log
    # eval's whole-image budget: the 256x256 whole graph (~14 GB for LBNet-T) fits 24 GB
    cap = memory_cap_mb if memory_cap_mb is not None else 0.75 * available_memory_mb()
    rows: list[dict[str, Any]] = []
    prev: tuple[int, float] | None = None
    facts: ModelFacts | None = None  # the model's, from the first graph opened
    for n in whole_sizes:
        predicted = _predict(prev, n * n)
        need_mb = 0.0 if facts is None else facts.inference_bytes(n * n) / 2**20
        reasons = [f"predicted {predicted:.0f} s"] if predicted > max_seconds else []
        if need_mb > cap:
            reasons.append(f"needs ~{need_mb:.0f} MB of {cap:.0f} MB allowed")
        if reasons:  # decided before exporting a graph that would not be run
            why = ", ".join(reasons)
            rows.append({"mode": "whole", "size": n, "skipped": why})
            log(f"  whole {n}x{n}: skipped ({why})")
            continue
        runner, path = open_bench_runner("ort", spec, (n, n), threads=threads)
        facts = runner.model_facts
        k = max(1, min(runs, int(max_seconds / max(predicted, 1e-9))))
        result = time_forward(runner, sample_input(1, (n, n)), warmup, k)
        del runner
        gc.collect()
        assert path is not None  # the ort backend always runs an ONNX file
        macs = count_macs(path)
        row: dict[str, Any] = {"mode": "whole", "size": n, "tiles": 1, "macs": macs}
        row |= _row(result, macs["total"], output_megapixels(1, (n, n), facts.scale), None)
        rows.append(row)
        prev = (n * n, row["stats"]["median_s"])
        log(f"  whole {n}x{n}: {row['stats']['median_s']:.3f} s, +{row['rss_delta_mb']:.0f} MB")
    runner, path = open_bench_runner("ort", spec, (tile, tile), threads=threads)
    assert path is not None  # the ort backend always runs an ONNX file
    tile_count = count_macs(path)
    tile_macs = tile_count["total"]
    tile_s = min(time_calls(lambda: runner.infer(sample_input(1, (tile, tile))), 1, 1))
    upscaler = Upscaler(runner, overlap=overlap)
    rng = np.random.default_rng(0)
    for n in tiled_sizes:
        image = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        tiles = len(upscaler.plan(n, n).grid.tiles())
        predicted = tiles * tile_s
        if predicted > max_seconds:
            rows.append(
                {
                    "mode": "tiled",
                    "size": n,
                    "tiles": tiles,
                    "skipped": f"predicted {predicted:.0f} s",
                }
            )
            log(f"  tiled {n}x{n}: skipped (predicted {predicted:.0f} s)")
            continue
        k = max(1, min(runs, int(max_seconds / predicted)))
        gc.collect()
        with PeakMemory() as mem:
            samples = time_calls(functools.partial(upscaler.upscale, image), 0, k)
        result = {
            "samples_s": samples,
            "stats": summarize(samples),
            "peak_rss_mb": round(mem.peak_mb, 1),
            "rss_delta_mb": round(mem.delta_mb, 1),
            "memory_method": mem.method,
        }
        row = {
            "mode": "tiled",
            "size": n,
            "tile": tile,
            "overlap": overlap,
            "tiles": tiles,
            "macs": {k: v * tiles for k, v in tile_count.items()},
        }
        row |= _row(result, tile_macs * tiles, output_megapixels(1, (n, n), runner.scale), None)
        rows.append(row)
        log(f"  tiled {n}x{n} ({tiles} tiles): {row['stats']['median_s']:.3f} s")
    return rows


def upscale_folder(dataset: str | Path) -> Path:
    """The images the end-to-end study upscales: an EDSR-layout set's x4 LR, else the folder."""
    folder = Path(dataset)
    return folder / "LR_bicubic" / "X4" if (folder / "LR_bicubic" / "X4").is_dir() else folder


def end_to_end_study(
    spec: str,
    dataset: str | Path,
    timing: Timing,
    *,
    backend: str = "ort",
) -> dict[str, Any]:
    """`upscale` of every LR image in a folder (decode, plan/tile, infer, merge, PNG encode),
    with the runtime's defaults (dynamic graph, whole image within the 2 GiB budget)."""
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.runtime.files import expand_inputs, upscale_files
    from lbnet_deploy.runtime.upscaler import Upscaler

    folder = upscale_folder(dataset)
    inputs = expand_inputs([str(folder)])
    upscaler = Upscaler(open_runner(spec, backend, timing.threads))
    seconds, summary = [], None
    gc.collect()
    with tempfile.TemporaryDirectory() as out, PeakMemory() as mem:
        for i in range(timing.warmup + timing.runs):
            start = time.perf_counter()
            summary = upscale_files(upscaler, inputs, Path(out), progress=False)
            if i >= timing.warmup:
                seconds.append(time.perf_counter() - start)
    assert summary is not None
    stats = summarize(seconds)
    timing.log(
        f"  end-to-end {folder}: {stats['median_s']:.2f} s per pass of {summary.images} images"
    )
    return {
        "dataset": str(folder),
        "backend": backend,
        "images": summary.images,
        "failed": summary.failed,
        "megapixels_out": round(summary.megapixels_out, 4),
        "samples_s": seconds,
        "stats": stats,
        "images_per_s": round(summary.images / stats["median_s"], 3),
        "throughput_mpix_s": round(summary.megapixels_out / stats["median_s"], 4),
        "peak_rss_mb": round(mem.peak_mb, 1),
        "rss_delta_mb": round(mem.delta_mb, 1),
        "memory_method": mem.method,
    }


# The host pipeline's goals (the GPU issue): the host side feeds >= 100 output MP/s at batch 8
# when the device costs nothing, and with the device taking as long per batch as the host, the
# overlapped total is <= 0.65 x (host time + device time) (1.0: nothing overlaps; 0.5: all).
GOAL_HOST_MPIX_S, GOAL_OVERLAP = 100.0, 0.65
PIPELINE_BATCHES = (1, 4, 8)
PIPELINE_IMAGE = (512, 512)  # LR: 2048x2048 out at x4
PIPELINE_FILES = 4


def _photo(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients with noise (content sets PNG's cost)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    base = 128 + 70 * np.sin(xx / 17 + seed) * np.cos(yy / 23)
    img = base[..., None] + np.array([0, 20, -20], np.float32) + rng.normal(0, 5, (*size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def pipeline_study(
    spec: str,
    timing: Timing,
    *,
    tile: int = 96,
    image_size: tuple[int, int] = PIPELINE_IMAGE,
    batches: Sequence[int] = PIPELINE_BATCHES,
    files: int = PIPELINE_FILES,
) -> dict[str, Any]:
    """How fast the host side feeds a device (the null backend, as many slots as the TensorRT
    runner): output MP/s of `upscale` at each batch with a device that costs nothing, batches in
    flight ahead of the merge and one at a time, interleaved; then, at the largest batch, a
    device taking the measured host time per batch: the overlapped total against host + device
    time; and `upscale` of `files` images at that device time, each PNG written behind the next
    image or in turn."""
    from lbnet_deploy.runtime.null import NullRunner
    from lbnet_deploy.runtime.upscaler import DEFAULT_OVERLAP, Upscaler

    log, facts = timing.log, model_facts_of(spec)
    image = _photo(image_size)
    out_mpix = image.shape[0] * image.shape[1] * facts.scale**2 / 1e6

    def pair(batch: int, device_ms: float) -> dict[str, Any]:
        """The image through a stand-in device of `device_ms`, serial and overlapped."""
        runner = NullRunner(facts.with_sizes((tile, tile), batch), device_ms)
        serial = Upscaler(runner, batch=batch, in_flight=1)
        overlapped = Upscaler(runner, batch=batch)
        calls = {
            "serial": functools.partial(serial.upscale, image),
            "overlapped": functools.partial(overlapped.upscale, image),
        }
        stats = {k: summarize(v) for k, v in interleaved(calls, timing.warmup, timing.runs).items()}
        plan = serial.plan(*image_size)
        return {
            "batch": batch, "batches": -(-len(plan.grid.tiles()) // plan.batch),
            "in_flight": overlapped.plan(*image_size).in_flight, "device_ms": round(device_ms, 3),
            "stats": stats,
            "mpix_s": {k: round(out_mpix / st["median_s"], 1) for k, st in stats.items()},
        }  # fmt: skip

    rows = []
    for batch in batches:
        rows.append(pair(batch, 0.0))
        log(f"  host pipeline, batch {batch}, no device time: {rows[-1]['mpix_s']} output MP/s")
    last = rows[-1]
    host_s = last["stats"]["serial"]["median_s"]
    device_ms = 1e3 * host_s / last["batches"]  # the measured host time per batch
    overlap = pair(last["batch"], device_ms)
    device_s = overlap["batches"] * device_ms / 1e3
    total = host_s + device_s
    overlap |= {
        "host_s": host_s, "device_s": device_s,
        "ratio": round(overlap["stats"]["overlapped"]["median_s"] / total, 3),
        "serial_ratio": round(overlap["stats"]["serial"]["median_s"] / total, 3),
        "goal": GOAL_OVERLAP,
    }  # fmt: skip
    overlap["met"] = overlap["ratio"] <= GOAL_OVERLAP
    log(f"  host pipeline, device {device_ms:.1f} ms/batch: {overlap['ratio']} x (host + device)")
    runner = NullRunner(facts.with_sizes((tile, tile), last["batch"]), device_ms)
    return {
        "image": list(image_size), "tile": tile, "overlap_px": DEFAULT_OVERLAP,
        "scale": facts.scale, "output_mpix": round(out_mpix, 3), "no_device": rows,
        "overlap": overlap, "goal_mpix_s": GOAL_HOST_MPIX_S,
        "goal_mpix_s_met": last["mpix_s"]["overlapped"] >= GOAL_HOST_MPIX_S,
        "writes": _write_behind(Upscaler(runner, batch=last["batch"]), image, files, timing),
    }  # fmt: skip


def _write_behind(upscaler: Any, image: np.ndarray, count: int, timing: Timing) -> dict[str, Any]:
    """`upscale` of `count` copies of `image` (PNG decode, upscale, PNG encode and write), each
    PNG written behind the next image and in turn, interleaved."""
    from PIL import Image

    from lbnet_deploy.runtime.files import expand_inputs, upscale_files

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        for i in range(count):
            Image.fromarray(np.roll(image, 7 * i, axis=1)).save(root / "in" / f"{i}.png")
        inputs = expand_inputs([str(root / "in")])
        calls = {
            name: functools.partial(
                upscale_files, upscaler, inputs, root / name, progress=False, write_behind=behind
            )
            for name, behind in (("in_turn", False), ("behind", True))
        }
        stats = {k: summarize(v) for k, v in interleaved(calls, timing.warmup, timing.runs).items()}
    return {
        "images": count, "device_ms": upscaler.runner.device_ms, "stats": stats,
        "ratio": round(stats["behind"]["median_s"] / stats["in_turn"]["median_s"], 3),
    }  # fmt: skip
