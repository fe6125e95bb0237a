"""PSNR and SSIM on the luma (Y) channel: the evaluation protocol of LBNet and most SR papers.

Papers score only Y (BT.601, as MATLAB's ``rgb2ycbcr``), with ``scale`` pixels shaved off every
border, and SSIM as Wang et al.'s reference ``ssim_index.m``. Each of these choices moves the
numbers by more than the differences the papers report, so all of them are reproduced here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lbnet_deploy.errors import LBNetError

_PEAK = 255.0
# ssim_index.m defaults: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 16..235 scale from an HxWx3 RGB or HxW grayscale image (0..255).

    A grayscale image counts as R = G = B, as in the pipeline behind the paper's LBNet rows
    (images are read as RGB): Set14 x4 with the official LBNet-T gives 28.536 dB this way, the
    paper 28.54. Taking gray pixels as Y instead gives 0.094 dB less on Set14 (bridge +1.32 dB
    the other way); the paper's older Bicubic row (26.00) was scored that way, ours gives 26.09.
    """
    x = img.astype(np.float64)
    if x.ndim == 3 and x.shape[2] == 3:
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
    elif x.ndim == 2:
        r = g = b = x
    else:
        raise LBNetError(f"expected an HxWx3 RGB or HxW grayscale image, got shape {img.shape}")
    return 16.0 + (65.738 * r + 129.057 * g + 25.064 * b) / 256.0


def shaved_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    """Y channels of both images with ``shave`` pixels cut from every border.

    The border is cut because upscalers cannot reconstruct it from neighbours they do not have.
    """
    if sr.shape != hr.shape:
        raise LBNetError(f"SR and HR images differ in shape: SR {sr.shape}, HR {hr.shape}")
    if shave < 0:
        raise LBNetError(f"shave must be >= 0, got {shave}")
    height, width = hr.shape[:2]
    if min(height, width) <= 2 * shave:
        raise LBNetError(f"shaving {shave} pixels leaves nothing of an image of shape {hr.shape}")
    crop = (slice(shave, height - shave), slice(shave, width - shave))
    return rgb_to_y(sr)[crop], rgb_to_y(hr)[crop]


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR in dB (peak 255) between the Y channels of two same-shape images (0..255 values).

    ``shave`` pixels are ignored at every border; identical crops give ``inf``.
    """
    y_sr, y_hr = shaved_y(sr, hr, shave)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(_PEAK**2 / mse))


def _gaussian_taps() -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)``; its outer product is the window."""
    offsets = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * _SSIM_SIGMA**2))
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """MATLAB's ``filter2(outer(taps, taps), x, 'valid')`` as two 1-D passes.

    The Gaussian window is separable, so 2 x 11 multiplies per pixel replace 11 x 11.
    """
    rows = sliding_window_view(x, taps.size, axis=0) @ taps
    return sliding_window_view(rows, taps.size, axis=1) @ taps


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Mean SSIM between the Y channels of two same-shape images (0..255 values).

    Follows Wang et al.'s ``ssim_index.m``: Gaussian-weighted local statistics over 'valid'
    11x11 windows only, on unrounded Y, with ``shave`` border pixels ignored first.
    """
    y_sr, y_hr = shaved_y(sr, hr, shave)
    if min(y_hr.shape) < _SSIM_WINDOW:
        raise LBNetError(
            f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after shaving, "
            f"got {y_hr.shape} from an image of shape {hr.shape}"
        )
    taps = _gaussian_taps()
    mu_sr = _filter_valid(y_sr, taps)
    mu_hr = _filter_valid(y_hr, taps)
    var_sr = _filter_valid(y_sr * y_sr, taps) - mu_sr * mu_sr
    var_hr = _filter_valid(y_hr * y_hr, taps) - mu_hr * mu_hr
    cov = _filter_valid(y_sr * y_hr, taps) - mu_sr * mu_hr
    ssim_map = ((2.0 * mu_sr * mu_hr + _SSIM_C1) * (2.0 * cov + _SSIM_C2)) / (
        (mu_sr * mu_sr + mu_hr * mu_hr + _SSIM_C1) * (var_sr + var_hr + _SSIM_C2)
    )
    return float(np.mean(ssim_map))


@dataclass(frozen=True)
class Scores:
    """Mean PSNR (dB) and SSIM over a test set, the two numbers a paper's table reports."""

    psnr: float
    ssim: float


def mean_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]], shave: int) -> Scores:
    """Average :func:`psnr_y` and :func:`ssim_y` over ``(sr, hr)`` pairs, per image as papers do."""
    psnrs: list[float] = []
    ssims: list[float] = []
    for sr, hr in pairs:
        psnrs.append(psnr_y(sr, hr, shave))
        ssims.append(ssim_y(sr, hr, shave))
    if not psnrs:
        raise LBNetError("no images to score")
    return Scores(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))
