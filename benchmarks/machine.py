"""What a benchmark ran on: CPU, threads, GPU and driver, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from lbnet_deploy.runtime.onnxrt import default_threads

from .allocator import allocator_setting

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpus_available() -> int:
    """CPUs this process may run on (taskset/cgroup-aware, unlike os.cpu_count())."""
    return default_threads()  # the runtime's count: bench times with the threads upscale uses


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs; None where /proc/cpuinfo does not say."""
    try:
        pairs, phys = set(), "0"
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    phys = value.strip()
                elif key.strip() == "core id":
                    pairs.add((phys, value.strip()))
        return len(pairs) or None
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    ort = _version("onnxruntime-gpu") or _version("onnxruntime")
    names = ("numpy", "onnx", "torch", "lbnet-deploy", "tensorrt", "openvino", "matplotlib")
    return {"python": platform.python_version(), "onnxruntime": ort} | {
        n: _version(n) for n in names
    }


def gpu_info() -> dict[str, object] | None:
    """GPU name, memory and driver, or None without a usable CUDA device."""
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, object] = {
        "name": props.name,
        "memory_gb": round(props.total_memory / 1e9, 1),
        "cuda": torch.version.cuda,
        "count": torch.cuda.device_count(),
    }
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    return info


# the instruction sets that decide which kernels a CPU runs (FP32 AVX2/AVX-512, INT8 VNNI,
# BF16, AMX): results from machines with different sets are not comparable
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")  # fmt: skip


def cpu_flags() -> list[str]:
    """Which of CPU_FLAGS this CPU has (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((x for x in f if x.startswith("flags")), "")
    except OSError:
        return []
    have = set(line.partition(":")[2].split())
    return [flag for flag in CPU_FLAGS if flag in have]


def jetson_info(release: Path = Path("/etc/nv_tegra_release")) -> dict[str, str] | None:
    """On a Jetson: the L4T release and the power mode (`nvpmodel -q`), which set its clocks and
    so its timings; None elsewhere. jetson_clocks' state needs root to read: not recorded."""
    if not release.is_file():
        return None
    info = {"l4t": release.read_text(errors="replace").splitlines()[0].strip("# ").strip()}
    tool = shutil.which("nvpmodel")
    if tool is not None:
        try:
            out = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=10)
            mode = [x.strip() for x in out.stdout.splitlines() if x.strip()]
            info["power_mode"] = (
                " / ".join(mode[:2]) if mode else f"nvpmodel -q: rc {out.returncode}"
            )
        except (OSError, subprocess.SubprocessError) as exc:
            info["power_mode"] = f"nvpmodel -q failed: {exc}"
    return info


def machine_info(threads: int | None = None) -> dict[str, object]:
    """The facts a reader needs to compare our numbers with anyone else's."""
    ort_providers: list[str] = []
    try:
        import onnxruntime as ort

        ort_providers = list(ort.get_available_providers())
    except ImportError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_logical": os.cpu_count(),
        "cpu_physical_cores": _physical_cores(),
        "cpus_available": cpus_available(),
        "threads_used": threads or cpus_available(),
        "platform": platform.platform(),
        # other jobs on the machine skew timings: the load when we started says how much
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": gpu_info(),
        "jetson": jetson_info(),
        # thread-pool settings change CPU timings (OpenMP spin-waiting on a loaded machine)
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "allocator": allocator_setting(),
        "ort_providers": ort_providers,
        "versions": library_versions(),
    }


def cpu_kind(machine: dict[str, Any]) -> tuple[str, tuple[str, ...] | None]:
    """What tells one kind of CPU from another in a result's machine: model and flags (None:
    not recorded, before 2026-12-02; not the same as none of the flags we list)."""
    flags = machine.get("cpu_flags")
    return machine["cpu_model"], None if flags is None else tuple(flags)
