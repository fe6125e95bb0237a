"""INT8 calibration inputs: deterministic LR crops made from a folder of real photos.

Each crop is an HR window of (size x scale) pixels, downscaled with the MATLAB-bicubic
`imresize` the benchmark LR images were made with, so the calibrated ranges see the same kind of
input the model sees in use. Never calibrate on Set5/Set14: those are the evaluation sets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.quality.imresize import imresize
from lbnet_deploy.runtime.files import IMAGE_SUFFIXES
from lbnet_deploy.runtime.images import read_image

log = logging.getLogger("lbnet_deploy")


def list_images(folder: str | Path, min_images: int) -> list[Path]:
    """Image files of `folder`, sorted by name (the order fixes which crop comes from where)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LBNetError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < min_images:
        raise LBNetError(
            f"{folder} has {len(files)} images; INT8 calibration needs at least {min_images}"
        )
    return files


def _read_photos(files: list[Path]) -> list[np.ndarray]:
    """The photos as the model sees them in use (upscale's reader: EXIF orientation, 16-bit and
    float modes, bomb limits); one that cannot be read is reported and left out."""
    photos = []
    for path in files:
        try:
            photos.append(read_image(path).rgb)
        except LBNetError as exc:
            log.warning("calibration photo skipped: %s", exc)
    return photos


def _crop_pairs(
    folder: str | Path, scale: int, size: tuple[int, int], count: int, seed: int,
    min_images: int, progress: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(HR window, LR crop) pairs, both HxWx3 uint8; see `calibration_crops`."""
    if count < 1:
        raise LBNetError(f"calibration needs at least one crop, got count={count}")
    h, w = size
    hr_h, hr_w = h * scale, w * scale
    files = list_images(folder, min_images)
    images = [img for img in _read_photos(files) if img.shape[0] >= hr_h and img.shape[1] >= hr_w]
    if len(images) < min_images:
        raise LBNetError(
            f"only {len(images)} images in {folder} are at least {hr_w}x{hr_h} px "
            f"(crop {w}x{h} at x{scale}); INT8 calibration needs {min_images}"
        )
    rng = np.random.default_rng(seed)
    return [
        _random_pair(images[i % len(images)], (hr_h, hr_w), scale, rng)
        for i in tqdm(range(count), desc="calibration crops", unit="crop", disable=not progress)
    ]


def _random_pair(
    img: np.ndarray, hr_size: tuple[int, int], scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """An (HR window, LR crop) pair at a position drawn from `rng` (top, then left), the LR made
    as the benchmarks' LR images are (MATLAB-bicubic `imresize`)."""
    h, w = hr_size
    top = int(rng.integers(0, img.shape[0] - h + 1))
    left = int(rng.integers(0, img.shape[1] - w + 1))
    hr = img[top : top + h, left : left + w]
    return hr, imresize(hr, 1.0 / scale)


def calibration_crops(
    folder: str | Path,
    scale: int,
    size: tuple[int, int] = (64, 64),
    count: int = 32,
    seed: int = 0,
    min_images: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """`count` LR crops of `size` (h, w) as an (N, 3, h, w) float32 array (0..255 RGB).

    Crops are spread round-robin over the sorted images with positions drawn from
    `numpy.random.default_rng(seed)`: the same folder and seed give the same array.
    Images smaller than one HR window are skipped; too few usable ones is an error.
    """
    pairs = _crop_pairs(folder, scale, size, count, seed, min_images, progress)
    return np.stack([lr.transpose(2, 0, 1) for _, lr in pairs]).astype(np.float32)


def holdout_pairs(
    folder: str | Path,
    scale: int,
    size: tuple[int, int] = (48, 48),
    count: int = 8,
    seed: int = 1,
    min_images: int = 8,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR, LR) crop pairs from the calibration photos with another seed: what the sensitivity
    search scores against, so the benchmark sets stay untouched until the final report."""
    return _crop_pairs(folder, scale, size, count, seed, min_images, progress=False)


def graphic(seed: int, size: int = 512) -> np.ndarray:
    """A synthetic slide or screenshot, uint8 size x size x 3: flat (often saturated) colours,
    sharp-edged rectangles, ellipses and strokes, and rows of glyph-like marks.

    Photos never show the contrast such content has: calibrated on photos alone, INT8 clipped
    the activations of Set14's `ppt3` (a slide; up to 3.6x the photos' ranges) and lost 0.29 dB
    on it at x2 while losing 0.04 on photos. Held-out crops of these images let the sensitivity
    search see that. Drawn with numpy (not Pillow's fonts and shapes, which differ between
    releases), so a seed gives the same pixels wherever numpy's generator gives the same
    numbers (numpy keeps `Generator` streams within a release, not across them: NEP 19)."""
    rng = np.random.default_rng(seed)

    def colour() -> np.ndarray:  # primaries, black and white more often than not
        return rng.choice([0, 255], 3) if rng.random() < 0.6 else rng.integers(0, 256, 3)

    img = np.empty((size, size, 3), np.uint8)
    img[...] = 255 if rng.random() < 0.5 else colour()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(6, 14))):
        (y0, x0), (h, w) = rng.integers(0, size, 2), rng.integers(20, size // 2, 2)
        kind = rng.integers(0, 3)
        if kind == 0:  # rectangle
            mask = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        elif kind == 1:  # ellipse in that box
            mask = ((yy - y0 - h / 2) / (h / 2)) ** 2 + ((xx - x0 - w / 2) / (w / 2)) ** 2 <= 1
        else:  # a stroke 1-7 px wide from one corner of the box to the other
            dy, dx = float(h), float(w)
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0, 1)
            dist = np.hypot(yy - y0 - t * dy, xx - x0 - t * dx)
            mask = dist <= rng.integers(1, 8) / 2
        img[mask] = colour()
    for _ in range(int(rng.integers(4, 10))):  # lines of "text": random 7x5 glyphs, k px a dot
        k = int(rng.integers(2, 6))
        glyphs = rng.random((int(rng.integers(5, 20)), 7, 5)) < 0.45
        line = np.concatenate([np.pad(g, ((0, 0), (0, 1))) for g in glyphs], axis=1)
        mark = np.kron(line, np.ones((k, k), bool))
        top, left = rng.integers(0, size - mark.shape[0]), rng.integers(0, size // 2)
        mark = mark[:, : size - left]
        region = img[top : top + mark.shape[0], left : left + mark.shape[1]]
        region[mark] = colour()
    return img


def graphics_pairs(
    scale: int, size: tuple[int, int] = (48, 48), count: int = 8, seed: int = 2
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR, LR) crop pairs of synthetic graphics (`graphic`), LR made as the benchmarks' LR
    images are (MATLAB-bicubic `imresize`): what the sensitivity search scores besides photos."""
    h, w = size[0] * scale, size[1] * scale
    rng = np.random.default_rng(seed)
    return [
        _random_pair(graphic(seed * 1000 + i, max(512, h, w)), (h, w), scale, rng)
        for i in range(count)
    ]
