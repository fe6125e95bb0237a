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
    pairs = []
    for i in tqdm(range(count), desc="calibration crops", unit="crop", disable=not progress):
        img = images[i % len(images)]
        top = int(rng.integers(0, img.shape[0] - hr_h + 1))
        left = int(rng.integers(0, img.shape[1] - hr_w + 1))
        hr = img[top : top + hr_h, left : left + hr_w]
        pairs.append((hr, imresize(hr, 1.0 / scale)))
    return pairs


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
