"""Tiling study: full image vs tile size x overlap x merge for LBNet-T x4 (dynamic ONNX, ONNX
Runtime CPU) on Set5 and Set14, scored with the paper's protocol. Chooses runtime defaults.

    python benchmarks/studies/tiling_study.py --onnx lbnet-t-x4_dyn.onnx --out tiling.md

Each tile configuration runs the model once; both merges reuse the same tile outputs (a caching
runner that also replays the measured seconds, so times are as if uncached).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
from checkout import SHARED_DATA
from PIL import Image

from lbnet_deploy.quality.metrics import psnr_y
from lbnet_deploy.runtime.images import read_image, restore
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner
from lbnet_deploy.runtime.upscaler import DEFAULT_MERGE, DEFAULT_OVERLAP, DEFAULT_TILE, Upscaler

DATA = SHARED_DATA
SCALE = 4


class CachingRunner:
    """Delegates to a runner; identical batches are answered from memory with their time."""

    def __init__(self, runner: OnnxRuntimeRunner) -> None:
        self.runner = runner
        self.cache: dict[bytes, tuple[np.ndarray, float]] = {}
        self.seconds = 0.0

    input_size = property(lambda self: self.runner.input_size)
    max_batch = property(lambda self: self.runner.max_batch)
    scale = property(lambda self: self.runner.scale)

    model_facts = property(lambda self: self.runner.model_facts)

    def describe(self) -> dict[str, object]:
        return self.runner.describe()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(batch.tobytes()).digest() + str(batch.shape).encode()
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = (self.runner.infer(batch), time.perf_counter() - start)
        out, seconds = self.cache[key]
        self.seconds += seconds
        return out


def load_set(name: str) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(image name, LR loaded, HR cropped to a multiple of the scale, grayscale)."""
    items = []
    for hr_path in sorted((DATA / name / "HR").glob("*.png")):
        lr = read_image(DATA / name / "LR_bicubic" / f"X{SCALE}" / f"{hr_path.stem}x{SCALE}.png")
        hr = np.asarray(Image.open(hr_path))
        h, w = hr.shape[0] // SCALE * SCALE, hr.shape[1] // SCALE * SCALE
        items.append((hr_path.stem, lr, hr[:h, :w], lr.grayscale))
    return items


def score(upscaler: Upscaler, runner: CachingRunner, items: list) -> tuple[float, float]:
    """Mean PSNR-Y (shave = scale; grayscale images scored on their gray values) and seconds."""
    runner.seconds = 0.0
    psnrs = []
    for _, lr, hr, _gray in items:
        sr = restore(lr, upscaler.upscale(lr.rgb))
        if hr.ndim == 3 and sr.ndim == 2:  # a gray LR of an RGB HR: compare as RGB
            sr = np.repeat(sr[..., None], 3, axis=2)
        psnrs.append(psnr_y(sr, hr, SCALE))
    return float(np.mean(psnrs)), runner.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="dynamic LBNet-T x4 ONNX")
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--tiles", default="48,64,96,128")
    parser.add_argument("--overlaps", default="8,16,24")
    parser.add_argument("--pairs", help="explicit tile/overlap list, e.g. 64/16,96/8 (prunes)")
    parser.add_argument("--sets", default="Set5,Set14")
    args = parser.parse_args()

    runner = CachingRunner(OnnxRuntimeRunner(args.onnx))
    sets = {name: load_set(name) for name in args.sets.split(",")}
    if args.pairs:
        configs = [tuple(int(v) for v in p.split("/")) for p in args.pairs.split(",")]
    else:
        configs = [
            (t, o)
            for t in map(int, args.tiles.split(","))
            for o in map(int, args.overlaps.split(","))
        ]
    huge = 1 << 20  # budget large enough that every test image runs whole
    rows: list[tuple[str, dict[str, tuple[float, float]]]] = []

    def run(label: str, make) -> None:
        result = {name: score(make(), runner, items) for name, items in sets.items()}
        rows.append((label, result))
        cells = "  ".join(f"{n} {p:.3f} dB {s:.1f} s" for n, (p, s) in result.items())
        print(f"{label:<28} {cells}", flush=True)

    run("full image", lambda: Upscaler(runner, None, memory_budget_mb=huge))
    for tile, overlap in configs:
        for merge in ("crop", "feather"):
            run(
                f"{tile}/{overlap} {merge}",
                lambda t=tile, o=overlap, m=merge: Upscaler(runner, t, o, huge, merge=m),
            )
    run(
        f"default ({DEFAULT_TILE}/{DEFAULT_OVERLAP} {DEFAULT_MERGE}, 2048 MB)",
        lambda: Upscaler(runner),
    )

    full = rows[0][1]
    head = "| config | " + " | ".join(f"{n} PSNR | {n} Δ full | {n} s" for n in sets) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(sets))]
    for label, result in rows:
        cells = " | ".join(
            f"{p:.3f} | {p - full[n][0]:+.3f} | {s:.1f}" for n, (p, s) in result.items()
        )
        lines.append(f"| {label} | {cells} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
