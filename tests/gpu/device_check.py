"""The device check: what a GPU machine with PyTorch and cuda-python (no TensorRT) can prove
in about 5 minutes (stopped after 7; then bench, stopped by 8; runs on an H200 are in
benchmarks/device/). Writes device_check.json and device_check.md into the folder given
(default $OUT).

    bash tests/gpu/device_check.sh        # on the GPU machine, from the repository root

(a) our CUDA layer over cuda-python, for real: device facts, page-locked round trip through
    device memory, two streams, a CUDA graph of the round trip captured once and replayed on
    new data (as the TensorRT runner captures upload + engine + download); (b) PyTorch CUDA
    latency of LBNet-T x4 and LBNet x3 (random weights: speed does not depend on them) in
    FP32/FP16/BF16, eager and CUDA graphs, CUDA events, median of 20 after 5 warm-up runs,
    beside the paper's 0.0274/0.0401 s; (c) the `-m gpu` tests, which skip TensorRT with its
    reason where it is absent; (d) where the official checkpoints and Set5 are found
    ($LBNET_WEIGHTS_DIR, $LBNET_DATA_DIR): the PyTorch backend on CUDA (our static ops) against
    the CPU reference, FP32 (as the backend runs it, TF32 off; and as torch would by default,
    TF32 convolutions) and FP16, whole Set5 images: max abs difference on 0..255, PSNR between
    them, and task PSNR against HR with the paper's protocol.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = [(128, 128), (256, 256), (339, 510)]  # LR; 339x510 is DIV2K x4 (NTIRE's timing)
PAPER_S = {"LBNet TM-0": 0.0274, "LBNet TM-2 (released)": 0.0401}


def round_trip(layer, stream, pointer: int, host_in: np.ndarray, host_out: np.ndarray) -> bool:
    layer.htod_async(pointer, host_in, stream)
    layer.dtoh_async(host_out, pointer, stream)
    return True


def cuda_layer() -> dict[str, object]:
    os.environ["LBNET_CUDA"] = "cuda-python"
    from lbnet_deploy.runtime.cuda_layer import capture, load_cuda

    layer = load_cuda()
    facts = layer.facts(0)
    layer.push(0)
    try:
        free_before = layer.free_memory()
        x = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 64)).astype(np.float32)
        streams = [layer.stream(), layer.stream()]
        results = []
        for stream in streams:  # the same round trip on each stream
            host_in, host_out = (
                layer.host_empty(x.shape, x.dtype),
                layer.host_empty(x.shape, x.dtype),
            )
            host_in[...] = x
            pointer = layer.malloc(x.nbytes)
            enqueue = functools.partial(round_trip, layer, stream, pointer, host_in, host_out)
            enqueue()
            stream.synchronize()
            results.append(bool(np.array_equal(host_out, x)))
            if stream is streams[0]:  # the round trip as a graph, replayed on new data
                graph = capture(layer, stream, enqueue)
                replays = []
                for value in (x + 1, x * 0.5):
                    host_in[...] = value
                    layer.launch(graph, stream)
                    stream.synchronize()
                    replays.append(bool(np.array_equal(host_out, value)))
                layer.destroy_exec(graph)
            layer.free(pointer)
            layer.free_host(host_in)
            layer.free_host(host_out)
        for stream in streams:
            stream.destroy()
        free_after = layer.free_memory()
    finally:
        layer.pop()
    return {
        "binding": layer.name, "gpu": facts.name, "compute_capability": facts.compute_capability,
        "memory_mb": facts.memory_mb, "round_trip_exact_per_stream": results,
        "free_mb_before_after": [free_before // 2**20, free_after // 2**20],
        "graph_replays_exact": replays,
    }  # fmt: skip


def latency(variant: str, scale: int, dtype_name: str, size: tuple[int, int], graphs: bool):
    import torch

    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.lbnet import LBNet

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    model = LBNet(describe(variant, scale), ops="static").eval().cuda().to(dtype)
    x = (torch.rand(1, 3, *size, device="cuda") * 255).to(dtype)
    with torch.no_grad():

        def run() -> torch.Tensor:
            return model(x)

        if graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = model(x)

            def run() -> torch.Tensor:
                graph.replay()
                return out

        for _ in range(5):
            y = run()
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y = run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    finite = bool(torch.isfinite(y.float()).all())
    torch.cuda.empty_cache()
    return {"median_s": statistics.median(times), "min_s": min(times), "finite": finite}


def cuda_parity(
    weights: Path, data: Path, rows: list[dict[str, object]], device: str = "cuda"
) -> None:
    """Our PyTorch backend on `device` against the CPU reference on whole Set5 LR images (as
    `eval` reads them; max abs and PSNR as `parity` compares); each row appended to `rows`
    when done (a later failure keeps the rows before it)."""
    import torch

    from lbnet_deploy.evaluate import load_samples
    from lbnet_deploy.parity import compare
    from lbnet_deploy.quality.metrics import psnr_y
    from lbnet_deploy.runtime.torch_ref import TorchRunner
    from lbnet_deploy.runtime.upscaler import to_uint8

    for name, scale in (("LBNet-T_X4.pt", 4), ("LBNet-X3.pt", 3)):
        if not (weights / name).is_file() or not (data / "Set5" / "HR").is_dir():
            rows.append({"checkpoint": name, "skipped": f"no {weights / name} or no Set5"})
            continue
        samples = load_samples(data / "Set5", scale)
        inputs = [s.lr.transpose(2, 0, 1)[None].astype(np.float32) for s in samples]
        reference = TorchRunner(weights / name)  # CPU, the official code's semantics
        refs = [reference.infer(x) for x in inputs]
        for precision, tf32 in (("fp32", False), ("fp32", True), ("fp16", False)):
            runner = TorchRunner(weights / name, device=device, ops="static", precision=precision)

            def tf32_forward(x: np.ndarray, model: Any = runner.model) -> np.ndarray:
                """The model under torch's defaults (TF32 convolutions allowed), which the
                runner turns off for its calls: what that saves."""
                with torch.inference_mode():
                    return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

            forward = tf32_forward if tf32 else runner.infer
            worst, low, task, task_ref, finite = 0.0, float("inf"), [], [], True
            for sample, x, ref in zip(samples, inputs, refs, strict=True):
                y = forward(x)
                finite = finite and bool(np.isfinite(y).all())
                max_abs, _, psnr, _ = compare(y, ref)  # max() drops a NaN: hence `finite`
                worst, low = max(worst, max_abs), min(low, psnr)
                sr, sr_ref = (to_uint8(o[0].transpose(1, 2, 0)) for o in (y, ref))
                task.append(psnr_y(sr, sample.hr, scale))
                task_ref.append(psnr_y(sr_ref, sample.hr, scale))
            rows.append({"checkpoint": name, "precision": precision, "tf32": tf32,
                         "images": len(samples), "finite": finite,
                         "max_abs": worst if finite else None,
                         "min_psnr_vs_cpu": low if finite else None,  # inf: null in the JSON
                         "set5_psnr_y": float(np.mean(task)),
                         "set5_psnr_y_cpu": float(np.mean(task_ref))})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            del runner


def write(out: Path, result: dict[str, Any]) -> None:
    """Both files, rewritten after every part: a run stopped by its timeout keeps what it did."""
    from lbnet_deploy.runtime.atomic import write_json_atomic

    write_json_atomic(out / "device_check.json", result)  # strict: NaN and inf as null
    lines = ["# Device check", "", f"torch {result['torch']}, started {result['started']}", ""]
    lines += ["## CUDA layer (cuda-python)", "", "```"]
    lines += [json.dumps(result.get("cuda_layer"), indent=1), "```", ""]
    lines += ["## CUDA against the CPU reference (Set5, whole images)", "", "```"]
    lines += [json.dumps(r) for r in result.get("cuda_parity", [])] + ["```", ""]
    lines += ["## `pytest -m gpu`", "", "```", result.get("gpu_tests", {}).get("tail", ""), "```"]
    lines += ["", "## PyTorch CUDA latency (median of 20, seconds)", ""]
    lines += [f"Under torch's defaults for TF32: {result.get('tf32')}.", ""]
    lines += [
        "| model | dtype | LR size | CUDA graph | median s | min s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.get("torch_latency", []):
        med = f"{r['median_s']:.4f}" if "median_s" in r else r.get("error", "")
        low = f"{r['min_s']:.4f}" if "min_s" in r else ""
        size = "{}x{}".format(*r["size"])
        lines.append(
            f"| {r['model']} | {r['dtype']} | {size} | {r['cuda_graph']} | {med} | {low} |"
        )
    lines += ["", f"Paper (x4, image size and GPU not stated): {PAPER_S}", ""]
    (out / "device_check.md").write_text("\n".join(lines) + "\n")


def main(out: Path) -> int:
    import torch

    from lbnet_deploy.runtime.torch_ref import _tf32_switches

    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "torch": torch.__version__, "paper_s": PAPER_S}  # fmt: skip
    try:
        result["cuda_layer"] = cuda_layer()
    except Exception as exc:  # recorded, not fatal: the other parts still run
        result["cuda_layer"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result["cuda_layer"]), flush=True)
    write(out, result)
    weights = Path(os.environ.get("LBNET_WEIGHTS_DIR", "../shared/weights"))
    data = Path(os.environ.get("LBNET_DATA_DIR", "../shared/data"))
    result["cuda_parity"] = parity = []
    try:
        cuda_parity(weights, data, parity)
    except Exception as exc:
        parity.append({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    write(out, result)
    try:
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-q", "-p", "no:cacheprovider"],
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        result["gpu_tests"] = {"rc": tests.returncode,
                               "tail": (tests.stdout + tests.stderr)[-4000:]}  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        result["gpu_tests"] = {"rc": None, "tail": f"stopped after {exc.timeout} s"}
    print(result["gpu_tests"]["tail"][-1500:], flush=True)
    write(out, result)
    torch.backends.cudnn.benchmark = True
    # the latency rows run under torch's defaults (cuDNN may convolve FP32 in TF32): recorded
    switches = _tf32_switches(torch)  # cuDNN (and its convolutions), then CUDA's matrix products
    where = (
        ("cudnn", "cudnn.conv", "cuda.matmul") if len(switches) == 3 else ("cudnn", "cuda.matmul")
    )
    result["tf32"] = {
        f"{w}.{name}": getattr(obj, name) for w, (obj, name, _) in zip(where, switches, strict=True)
    }
    rows: list[dict[str, Any]] = []
    result["torch_latency"] = rows
    for variant, scale in (("LBNet-T", 4), ("LBNet", 3)):
        for dtype_name in ("fp32", "fp16", "bf16"):
            for size in SIZES:
                for graphs in (False, True):
                    row = {"model": f"{variant} x{scale}", "dtype": dtype_name,
                           "size": list(size), "cuda_graph": graphs}  # fmt: skip
                    try:
                        row.update(latency(variant, scale, dtype_name, size, graphs))
                    except Exception as exc:  # out of memory at the biggest size, say
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                        torch.cuda.empty_cache()  # so the next rows start from a clean pool
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    write(out, result)
    return 1 if failed(result) else 0


def failed(result: dict[str, Any]) -> list[str]:
    """The parts that failed: an error recorded, a test failing, or a latency not finite (an
    out-of-memory row at the largest size is a measurement, not a failure)."""
    parts = [("cuda_layer", result["cuda_layer"])] if "error" in result["cuda_layer"] else []
    parts += [
        ("cuda_parity", r)
        for r in result["cuda_parity"]
        if "error" in r or not r.get("finite", True)
    ]
    if result["gpu_tests"]["rc"] != 0:
        parts.append(("gpu_tests", result["gpu_tests"]["rc"]))
    parts += [("torch_latency", r) for r in result["torch_latency"] if r.get("finite") is False
              or ("error" in r and "OutOfMemoryError" not in r["error"])]  # fmt: skip
    for name, what in parts:
        print(f"device check: {name} failed: {what}", file=sys.stderr)
    return [name for name, _ in parts]


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))))
