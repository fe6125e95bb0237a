"""MATLAB-compatible bicubic ``imresize``, in numpy.

Super-resolution benchmarks make their low-resolution inputs with MATLAB's
``imresize(hr, 1/s, 'bicubic')``, and score bicubic upsampling the same way. PIL's and OpenCV's
bicubic differ from MATLAB (no antialiasing, another kernel or pixel-centre convention), which
shifts PSNR by tenths of a dB; this module follows MATLAB's algorithm so our LR images match the
published ones bit for bit and our numbers compare with the papers'.
"""

from __future__ import annotations

import math

import numpy as np

from lbnet_deploy.errors import LBNetError

# Support of the cubic kernel in input pixels when upscaling; downscaling widens it by 1/scale.
_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, the one MATLAB's 'bicubic' uses."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return inner + outer


def _weights_matrix(n_in: int, scale: float) -> np.ndarray:
    """Dense (n_out, n_in) matrix whose rows hold each output pixel's input weights.

    A dense matrix turns the resize into one matrix product per axis; its zero entries add
    exact zeros, so it forms the same weighted sums as MATLAB's per-pixel index/weight lists.
    """
    n_out = math.ceil(n_in * scale)
    if scale < 1.0:
        # Antialiasing: stretch the kernel by 1/scale so it low-passes before subsampling.
        width = _KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
    else:
        width = _KERNEL_WIDTH
        kernel = _cubic

    # MATLAB's 1-based mapping of output pixel centres to input coordinates.
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Out-of-range taps read the image mirrored at its edges (edge pixel repeated), as MATLAB.
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * n_in)]

    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n_out)[:, None], columns.shape)
    # Mirrored taps can land on the same input pixel twice: their weights must add up.
    np.add.at(matrix, (rows, columns), weights)
    return matrix


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to 0..255 and round half away from zero, as MATLAB's conversion to uint8 does.

    After clipping every value is non-negative, where floor(x + 0.5) is that rounding
    (numpy's ``round`` rounds halves to even instead).
    """
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize an HxW or HxWxC image by ``scale`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    The output is ``ceil(H * scale)`` by ``ceil(W * scale)``. A uint8 image is resized in float64
    and returned as uint8; MATLAB also rounds to uint8 between the row and the column pass, and
    that rounding (and its clipping of bicubic overshoot) is needed to match its files bit for
    bit. Any other dtype is resized in float64 without rounding or clipping.
    """
    if img.ndim not in (2, 3):
        raise LBNetError(f"imresize needs an HxW or HxWxC image, got shape {img.shape}")
    if not scale > 0:
        raise LBNetError(f"imresize needs a positive scale, got {scale}")
    if min(img.shape[:2]) < 1:
        raise LBNetError(f"imresize got an empty image of shape {img.shape}")

    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    # MATLAB resizes the axis with the smaller scale first and, with equal scales, rows first;
    # the order changes the uint8 rounding in between, so it matters for bit-exactness.
    for axis in (0, 1):
        matrix = _weights_matrix(out.shape[axis], scale)
        out = np.moveaxis(np.tensordot(matrix, out, axes=(1, axis)), 0, axis)
        if is_uint8:
            out = _to_uint8(out)
    return out


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(cropped_hr, lr)``: the benchmark protocol's HR/LR pair for an integer scale.

    HR is cropped at its bottom and right edges to a multiple of ``scale`` so LR x scale has
    exactly HR's size; LR is the MATLAB bicubic downscale of that crop.
    """
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 1:
        raise LBNetError(f"make_lr needs an integer scale >= 1, got {scale!r}")
    height, width = hr.shape[:2]
    if height < scale or width < scale:
        raise LBNetError(f"image of shape {hr.shape} is smaller than the scale {scale}")
    cropped = hr[: height - height % scale, : width - width % scale]
    return cropped, imresize(cropped, 1.0 / scale)
