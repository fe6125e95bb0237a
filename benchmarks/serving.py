"""Serving through Triton (`bench --backend triton`): concurrent clients sending whole images to
an image repository's image model, against in-process `upscale` on the same images and backend,
interleaved round by round so both see the same machine (others' jobs included).

`load` is the client side (also the load test's): each client is a thread with its own gRPC
connection, sending its images one after the other; latencies per request, throughput over the
wall time, every output checked against the expected one where given. The tile model's batch
sizes come from Triton's statistics endpoint (`batch_stats`: executions per batch size).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .measure import Timing, upscale_folder
from .stats import summarize

GOAL_RATIO = 0.8  # Triton's throughput with 4 clients against in-process upscale (the issue)


def load(
    url: str,
    model: str,
    images: list[np.ndarray],
    clients: int,
    per_client: int,
    settings: dict[str, Any] | None = None,
    expected: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """`clients` concurrent clients, each sending `per_client` images (client i starts at
    image i, so concurrent requests differ); every output compared with `expected`."""
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.triton_client import TritonRunner

    latencies: list[float] = []
    errors: list[str] = []
    mismatches = 0
    pixels = 0
    lock = threading.Lock()
    runners = [TritonRunner(url, model) for _ in range(clients)]  # connected before the clock

    def client(index: int) -> None:
        nonlocal mismatches, pixels
        for j in range(per_client):
            k = (index + j) % len(images)
            start = time.perf_counter()
            try:
                out = runners[index].upscale_image(images[k], settings or {})
            except LBNetError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            seconds = time.perf_counter() - start
            with lock:
                latencies.append(seconds)
                pixels += out.shape[0] * out.shape[1]
                if expected is not None and not np.array_equal(out, expected[k]):
                    mismatches += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": clients * per_client,
        "answered": len(latencies),
        "errors": errors,
        "mismatches": mismatches,
        "seconds": wall,
        "images_per_s": len(latencies) / wall,
        "throughput_mpix_s": pixels / 1e6 / wall,
        "latency": summarize(latencies) if latencies else None,
        "latencies_s": latencies,
    }


def tile_batches(url: str, model: str) -> dict[int, int]:
    """Executions per batch size of the image model's tile model (Triton's statistics)."""
    from lbnet_deploy.runtime.triton_client import TritonRunner

    runner = TritonRunner(url, model)
    stats = runner.statistics()["model_stats"][0].get("batch_stats", [])
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}


def goal_met(ratios: list[float], mismatches: int, errors: int) -> bool:
    """Triton's median speed at least GOAL_RATIO of in-process, and every image it served equal
    to the in-process one: fast but wrong, or failing, is not met."""
    return bool(np.median(ratios) >= GOAL_RATIO and mismatches == 0 and errors == 0)


def serving_study(
    spec: str,
    dataset: str | Path,
    timing: Timing,
    *,
    clients: int = 4,
    url: str | None = None,
    served: str | None = None,
) -> dict[str, Any]:
    """Triton with `clients` clients against in-process upscale on the same images, `timing.runs`
    interleaved rounds (one warm-up each). Without `url`, a local server (the nvidia-pytriton
    wheel) serves a repository written for `spec` now, on the graph the in-process side runs."""
    from lbnet_deploy.export.triton import ImageSettings, model_io, write_image_repository
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.resolve import model_file
    from lbnet_deploy.runtime.files import expand_inputs
    from lbnet_deploy.runtime.images import read_image
    from lbnet_deploy.runtime.upscaler import Upscaler
    from lbnet_deploy.serve import TritonServer, free_port

    graph = model_file(spec)
    upscaler = Upscaler(open_runner(str(graph), "ort", timing.threads))
    paths = expand_inputs([str(upscale_folder(dataset))])
    images = [read_image(p, upscaler.max_input_pixels()).rgb for p in paths]
    expected = [upscaler.upscale(im) for im in images]  # the in-process side's warm-up too
    rounds: list[dict[str, Any]] = []
    local_latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        try:  # the server stopped however the bench ends, also while it loads
            if url is None:
                settings = ImageSettings(image_instances=clients, threads=timing.threads or 0)
                write_image_repository(
                    graph, model_io(graph), tmp, "lbnet", settings, python_tile=True
                )  # fmt: skip
                server = TritonServer(Path(tmp), grpc_port=free_port(), http_port=free_port())
                server.start()
                url, served = server.grpc_url, "lbnet"
            assert served is not None, "name the served model with url"
            timing.log(f"serving: {clients} clients x {len(images)} images through Triton {url}")
            load(url, served, images, clients, len(images), expected=expected)  # warm-up
            for r in range(timing.runs):
                remote = load(url, served, images, clients, len(images), expected=expected)
                start = time.perf_counter()
                for _ in range(clients):  # the same requests, one after the other
                    for image in images:
                        t0 = time.perf_counter()
                        upscaler.upscale(image)
                        local_latencies.append(time.perf_counter() - t0)
                local_s = time.perf_counter() - start
                local_ips = clients * len(images) / local_s
                rounds.append(remote | {"inprocess_s": local_s, "inprocess_images_per_s": local_ips,
                                        "ratio": remote["images_per_s"] / local_ips})  # fmt: skip
                timing.log(
                    f"  round {r + 1}: Triton {remote['images_per_s']:.2f} images/s, "
                    f"in-process {local_ips:.2f} ({rounds[-1]['ratio']:.2f}x)"
                )
            batches = tile_batches(url, served)
        finally:
            if server is not None:
                server.stop()
    ratios = [r["ratio"] for r in rounds]
    remote_latencies = [s for r in rounds for s in r.pop("latencies_s")]
    mismatches = sum(r["mismatches"] for r in rounds)
    errors = sum(len(r["errors"]) for r in rounds)
    return {
        "dataset": str(upscale_folder(dataset)),
        "images": len(images),
        "clients": clients,
        "server": "local (nvidia-pytriton wheel)" if server is not None else url,
        "rounds": rounds,
        "ratio_median": float(np.median(ratios)),
        "goal": GOAL_RATIO,
        "met": goal_met(ratios, mismatches, errors),
        "triton_images_per_s": float(np.median([r["images_per_s"] for r in rounds])),
        "inprocess_images_per_s": float(np.median([r["inprocess_images_per_s"] for r in rounds])),
        "triton_latency": summarize(remote_latencies) if remote_latencies else None,
        "inprocess_latency": summarize(local_latencies),
        "mismatches": mismatches,
        "errors": errors,
        "tile_batches": {str(k): v for k, v in sorted(batches.items())},
    }
