"""`lbnet-deploy upscale`: many image files in, PNGs out, one bad file never stops the rest."""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lbnet_deploy.errors import LBNetError

from .images import read_image, restore, write_png_atomic
from .upscaler import Upscaler

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Files as given, folders as their image files (sorted), globs expanded; missing -> error."""
    paths: list[Path] = []
    for item in items:
        if glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not matches:
                raise LBNetError(f"no files match {item!r}")
            paths += matches
        elif Path(item).is_dir():
            found = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise LBNetError(f"no image files in folder {item}")
            paths += found
        elif Path(item).is_file():
            paths.append(Path(item))
        else:
            raise LBNetError(f"input not found: {item}")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise LBNetError(
                f"{path} and {stems[path.stem]} would both be written as {path.stem}.png"
            )
        stems[path.stem] = path
    return paths


def prepare_output_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LBNetError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LBNetError(f"output folder {folder} is not writable")
    return folder


@dataclass
class Summary:
    images: int = 0
    failed: int = 0
    megapixels_in: float = 0.0
    megapixels_out: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"upscaled {self.images} image(s){failed}: {self.megapixels_in:.2f} MP in, "
            f"{self.megapixels_out:.2f} MP out, {self.seconds:.1f} s"
        )


def upscale_files(
    upscaler: Upscaler, inputs: list[Path], out_dir: Path, progress: bool = True
) -> Summary:
    """Upscale each input to `out_dir/<stem>.png`; report and skip the ones that fail."""
    summary = Summary()
    start = time.perf_counter()
    for i, path in enumerate(inputs, 1):
        try:
            image = read_image(path)
            h, w = image.rgb.shape[:2]
            label = f"[{i}/{len(inputs)}] {path.name} {w}x{h}"
            with tqdm(total=1, desc=label, unit="tile", disable=not progress, leave=True) as bar:

                def tick(done: int, total: int, bar: tqdm = bar) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                sr = upscaler.upscale(image.rgb, progress=tick)
            write_png_atomic(out_dir / f"{path.stem}.png", restore(image, sr))
        except LBNetError as exc:
            print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
            summary.failed += 1
            continue
        summary.images += 1
        summary.megapixels_in += h * w / 1e6
        summary.megapixels_out += sr.shape[0] * sr.shape[1] / 1e6
    summary.seconds = time.perf_counter() - start
    return summary
