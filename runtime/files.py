"""`lbnet-deploy upscale`: many image files in, PNGs (or `--format`) out, one bad file never
stops the rest."""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lbnet_deploy.errors import LBNetError

from .atomic import check_name_fits
from .images import (
    PNG,
    LoadedImage,
    OutputFormat,
    read_image,
    restore,
    write_image_atomic,
)
from .upscaler import Upscaler

# what folders are searched for; any single file PIL reads is accepted as given
IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".gif",
}  # fmt: skip

log = logging.getLogger("lbnet_deploy")


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Files as given, folders as their image files (sorted), globs expanded; missing -> error."""
    paths: list[Path] = []
    for item in items:
        if glob.has_magic(item) and not Path(item).exists():  # a file named img[1].png is a file
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
    refuse_shared_stems(paths)
    return paths


def refuse_shared_stems(paths: Iterable[Path]) -> None:
    """One line where two inputs share a base name (a.png, a.jpg; A.png, a.jpg too: on the
    case-insensitive file systems of macOS and Windows a.png replaces A.png): their results
    (and eval's LR files and scores) would have one name."""
    stems: dict[str, Path] = {}
    for path in paths:
        first = stems.setdefault(path.stem.casefold(), path)
        if first != path:
            raise LBNetError(f"{path} and {first} share the base name {path.stem!r}")


def prepare_output_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LBNetError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LBNetError(f"output folder {folder} is not writable")
    return folder


def check_output_dir(folder: str | Path) -> None:
    """Fail now, before minutes of work, where `folder` could not be created or written; creates
    nothing (a run that fails later must not leave an empty folder behind)."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise LBNetError(f"cannot create output folder {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "output folder" if existing == folder else "folder"
        raise LBNetError(f"{what} {existing} is not writable")


def _identities(path: Path) -> set[object]:
    """What names one file: its resolved path (symlinks followed) and, where it exists, its
    inode (hard links, bind mounts). A symlink loop resolves to nothing."""
    ids: set[object] = set()
    try:
        ids.add(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        ids.add(path.absolute())
    try:
        st = path.stat()
        ids.add((st.st_dev, st.st_ino))
    except OSError:  # does not exist yet (or a loop)
        pass
    return ids


def refuse_inputs_as_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """One line, before any work, where an output would replace one of the inputs (`upscale
    DIR -o DIR`, `export x.pt -o x.pt`) or another output: written atomically, the file it
    replaced would be gone for good. Each path is resolved and stat'ed once."""
    seen: dict[object, tuple[str, Path]] = {}
    for inp in map(Path, inputs):
        for key in _identities(inp):
            seen.setdefault(key, ("the input", inp))
    for out in map(Path, outputs):
        ids = _identities(out)
        for key in ids:
            if key in seen:
                what, other = seen[key]
                raise LBNetError(f"output {out} would overwrite {what} {other}; choose another")
        for key in ids:
            seen[key] = ("the output", out)


def check_suffix(suffix: str) -> str:
    """`--suffix`: text added to each output's base name; a path separator (or NUL, or a name
    of its own: "." "..") would put the file elsewhere than the output folder."""
    separators = {"/", "\\", "\0", os.sep, os.altsep or "/"}
    if any(c in suffix for c in separators) or suffix in (".", ".."):
        raise LBNetError(f"--suffix {suffix!r} must be plain text, not a path")
    return suffix


def output_paths(
    inputs: list[Path], out_dir: Path, output: OutputFormat = PNG, suffix: str = ""
) -> list[Path]:
    """`out_dir/<stem><suffix>.<format>` per input, refused before any work if one of them is
    an input (or another output), or, where the output folder holds inputs too, if it would
    replace a file already there (`upscale photos/a.jpg -o photos` must not replace an
    original photos/a.png)."""
    suffix = check_suffix(suffix)
    outputs = [out_dir / f"{path.stem}{suffix}{output.extension}" for path in inputs]
    for out in outputs:
        check_name_fits(out)
    refuse_inputs_as_outputs(outputs, inputs)
    if out_dir.is_dir():
        folder = out_dir.resolve()
        if any(path.resolve().parent == folder for path in inputs):
            for out in outputs:
                if out.exists():
                    raise LBNetError(
                        f"output {out} would replace a file beside the inputs; choose another -o"
                    )
    return outputs


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


# A finished image is written while the next one is upscaled where it holds at most this share
# of the memory budget (its uint8 pixels and the PNG encoder's buffer, ~6 bytes per pixel);
# a larger one is written first.
WRITE_BEHIND_SHARE = 0.25


@dataclass
class _Write:
    """A finished image being written on the writer thread."""

    future: Future[None]
    megapixels_in: float
    megapixels_out: float
    held_bytes: int  # the result it holds until written and its encoding (Footprint.sr)


def _write(out: Path, image: LoadedImage, sr: np.ndarray, output: OutputFormat) -> None:
    write_image_atomic(out, restore(image, sr), image.icc_profile, output)


def upscale_files(
    upscaler: Upscaler,
    inputs: list[Path],
    out_dir: Path,
    progress: bool = True,
    outputs: list[Path] | None = None,
    output: OutputFormat = PNG,
    write_behind: bool = True,
) -> Summary:
    """Upscale each input to `out_dir/<stem>.png` (or `output`'s format); report and skip the
    ones that fail. A 16-bit input gives a 16-bit PNG (`LoadedImage.deep`: the model is fed its
    16-bit values on 0..255, the unrounded output is written at 16 bits).

    Each file's header is checked against what the memory budget can hold before it is decoded
    (`Upscaler.max_input_pixels`). An output folder this call created and left empty (every
    file failed) is removed again. `outputs`: `output_paths(inputs, out_dir, output, suffix)`
    where the caller checked them already (before a first-use export). `write_behind`: each
    image is encoded and written on a thread of its own while the next image is upscaled (one
    at a time, and only while it holds at most `WRITE_BEHIND_SHARE` of the memory budget); an
    interrupt waits for the write under way, which completes whole."""
    summary = Summary()
    start = time.perf_counter()
    created = not out_dir.exists()
    outputs = outputs if outputs is not None else output_paths(inputs, out_dir, output)
    prepare_output_dir(out_dir)
    pending: _Write | None = None

    def finish() -> None:
        nonlocal pending
        if pending is None:
            return
        done, pending = pending, None
        try:
            done.future.result()
        except LBNetError as exc:
            log.error("%s", exc)
            summary.failed += 1
            return
        summary.images += 1
        summary.megapixels_in += done.megapixels_in
        summary.megapixels_out += done.megapixels_out

    with ThreadPoolExecutor(1, thread_name_prefix="lbnet-write") as writer:
        for i, (path, out) in enumerate(zip(inputs, outputs, strict=True), 1):
            if pending is not None and pending.held_bytes > WRITE_BEHIND_SHARE * upscaler.budget:
                finish()
            try:
                image = read_image(path, upscaler.max_input_pixels(), upscaler.limit_text())
                # alpha into JPEG, a size the format cannot hold: refused before the model runs
                note = output.holds(image, path, upscaler.runner.scale)
                if note:
                    log.warning("%s: %s", path, note)
                h, w = image.rgb.shape[:2]
                label = f"[{i}/{len(inputs)}] {path.name} {w}x{h}"
                with tqdm(
                    total=1, desc=label, unit="tile", disable=not progress, leave=True
                ) as bar:

                    def tick(done: int, total: int, bar: tqdm = bar) -> None:
                        bar.total = total
                        bar.n = done
                        bar.refresh()

                    bits, footprint = output.bits(image), output.footprint(image)
                    sr = upscaler.upscale(image.model_input, tick, bits, footprint)
            except LBNetError as exc:  # named by its file (the Upscaler's lines do not)
                log.error("%s", exc if str(path) in str(exc) else f"{path}: {exc}")
                summary.failed += 1
                continue
            finish()  # the previous image's write, overlapped with this one's upscale
            future = writer.submit(_write, out, image, sr, output)
            mp_out = sr.shape[0] * sr.shape[1] / 1e6
            # what the write holds per output pixel: its format's measured footprint (an RGBA
            # WebP's encoder 50-61 bytes; twice the 8-bit result, 6, undercounted it)
            pending = _Write(future, h * w / 1e6, mp_out, footprint.sr * sr.shape[0] * sr.shape[1])
            if not write_behind:
                finish()
        finish()
    if created and summary.images == 0 and not any(out_dir.iterdir()):
        out_dir.rmdir()
    summary.seconds = time.perf_counter() - start
    return summary
