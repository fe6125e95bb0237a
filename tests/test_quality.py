"""Tests for the MATLAB-compatible imresize and the Y-channel PSNR/SSIM protocol.

The data tests check against files made by MATLAB and against the paper's bicubic rows, the two
references that tell whether our numbers can be compared with published ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.quality.imresize import imresize, make_lr
from lbnet_deploy.quality.metrics import mean_scores, psnr_y, rgb_to_y, ssim_y

from .conftest import DATA

DATA_DIR = DATA
SCALES = (2, 3, 4)


def _needs(dataset: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (DATA_DIR / dataset / "HR").is_dir(),
        reason=f"{dataset} images not found under {DATA_DIR} (set LBNET_DATA_DIR)",
    )


def _load(path: Path) -> np.ndarray:
    """Read RGB images as HxWx3 and grayscale ones (Set14's bridge) as HxW uint8.

    bridge's LR files are stored grayscale too, so keeping it 2-D round-trips without a
    colour conversion on either side.
    """
    with Image.open(path) as im:
        return np.asarray(im if im.mode == "L" else im.convert("RGB"))


def _hr_lr_files(dataset: str, scale: int) -> list[tuple[str, Path, Path]]:
    hr_dir = DATA_DIR / dataset / "HR"
    lr_dir = DATA_DIR / dataset / "LR_bicubic" / f"X{scale}"
    return [(hr.stem, hr, lr_dir / f"{hr.stem}x{scale}.png") for hr in sorted(hr_dir.glob("*.png"))]


@pytest.mark.parametrize(
    ("dataset", "scale"),
    [pytest.param(d, s, marks=_needs(d)) for d in ("Set5", "Set14") for s in SCALES],
)
def test_make_lr_reproduces_benchmark_lr_bit_exactly(dataset: str, scale: int) -> None:
    files = _hr_lr_files(dataset, scale)
    assert files
    mismatched = []
    for name, hr_path, lr_path in files:
        cropped, lr = make_lr(_load(hr_path), scale)
        expected = _load(lr_path)
        assert lr.dtype == np.uint8
        assert cropped.shape[:2] == (lr.shape[0] * scale, lr.shape[1] * scale)
        if lr.shape != expected.shape or not np.array_equal(lr, expected):
            mismatched.append(name)
    assert not mismatched, f"LR differs from the MATLAB file for {mismatched}"


def test_make_lr_crops_bottom_right_to_a_multiple_of_scale() -> None:
    hr = np.arange(11 * 7 * 3, dtype=np.uint8).reshape(11, 7, 3)
    cropped, lr = make_lr(hr, 3)
    assert np.array_equal(cropped, hr[:9, :6])
    assert lr.shape == (3, 2, 3)


def test_make_lr_rejects_a_fractional_scale() -> None:
    with pytest.raises(LBNetError, match="integer scale"):
        make_lr(np.zeros((8, 8), dtype=np.uint8), 2.5)  # type: ignore[arg-type]


def test_imresize_scale_one_is_the_identity() -> None:
    # The cubic kernel is 1 at offset 0 and 0 at every other integer offset.
    img = np.random.default_rng(0).integers(0, 256, size=(13, 9, 3), dtype=np.uint8)
    assert np.array_equal(imresize(img, 1.0), img)


def test_imresize_keeps_a_constant_image_constant() -> None:
    # Normalised weights, including the mirrored ones at the edges, sum to 1.
    img = np.full((10, 14), 77.0)
    for scale in (0.25, 1 / 3, 0.5, 2.0, 3.0):
        out = imresize(img, scale)
        assert out.dtype == np.float64
        assert out.shape == (math.ceil(10 * scale), math.ceil(14 * scale))
        np.testing.assert_allclose(out, 77.0, rtol=0, atol=1e-12)


def test_imresize_uint8_clips_overshoot_and_float_does_not() -> None:
    # Bicubic rings past a hard edge; uint8 output saturates as MATLAB's does.
    img = np.zeros((8, 8), dtype=np.uint8)
    img[:, 4:] = 255
    as_float = imresize(img.astype(np.float64), 4.0)
    assert as_float.min() < 0 and as_float.max() > 255
    as_uint8 = imresize(img, 4.0)
    assert as_uint8.dtype == np.uint8
    assert as_uint8.min() == 0 and as_uint8.max() == 255


def test_rgb_to_y_uses_the_bt601_studio_range() -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(
        rgb_to_y(rgb), [[16.0, 16.0 + 219.859 * 255 / 256, 16.0 + 65.738 * 255 / 256]]
    )


def test_rgb_to_y_treats_grayscale_as_equal_channels() -> None:
    # as the pipeline behind the paper's LBNet rows, which reads every image as RGB
    gray = np.random.default_rng(1).integers(0, 256, size=(5, 6), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(gray), rgb_to_y(np.stack([gray] * 3, axis=-1)))


def test_psnr_of_identical_images_is_infinite() -> None:
    img = np.random.default_rng(2).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    assert psnr_y(img, img.copy(), shave=2) == math.inf


def test_psnr_of_a_unit_y_offset_is_48_13_db() -> None:
    # Equal channels raised by 256 / 219.859 raise Y by exactly 1, so MSE = 1.
    hr = np.full((16, 16, 3), 100.0)
    sr = hr + 256.0 / 219.859
    assert psnr_y(sr, hr, shave=0) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert psnr_y(sr, hr, shave=0) == pytest.approx(48.13, abs=0.005)


def test_psnr_ignores_the_shaved_border() -> None:
    hr = np.full((12, 12, 3), 50, dtype=np.uint8)
    sr = hr.copy()
    sr[:2] = 0
    sr[:, -2:] = 255
    assert psnr_y(sr, hr, shave=2) == math.inf
    assert psnr_y(sr, hr, shave=1) < 20


def test_ssim_of_identical_images_is_one() -> None:
    img = np.random.default_rng(3).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    assert ssim_y(img, img.copy(), shave=4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term() -> None:
    # With no variance in either image SSIM reduces to (2ab + C1) / (a^2 + b^2 + C1).
    a_gray, b_gray = 60, 180
    a, b = (16 + 219.859 * v / 256 for v in (a_gray, b_gray))
    c1 = (0.01 * 255) ** 2
    sr = np.full((24, 24), a_gray, dtype=np.uint8)
    hr = np.full((24, 24), b_gray, dtype=np.uint8)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim_y(sr, hr, shave=2) == pytest.approx(expected, abs=1e-9)


def test_ssim_matches_a_direct_2d_window() -> None:
    # Brute-force ssim_index.m: every 11x11 'valid' window with the 2-D Gaussian weights.
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, size=(16, 19), dtype=np.uint8)
    sr = np.clip(hr + rng.normal(0, 20, size=hr.shape), 0, 255).astype(np.uint8)
    x, y = rgb_to_y(sr), rgb_to_y(hr)
    k = np.arange(11) - 5.0
    window = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx, vy = (window * px * px).sum() - mx**2, (window * py * py).sum() - my**2
            cov = (window * px * py).sum() - mx * my
            values.append(
                ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    assert ssim_y(sr, hr, shave=0) == pytest.approx(np.mean(values), abs=1e-12)


@pytest.mark.parametrize("metric", [psnr_y, ssim_y])
def test_metrics_reject_mismatched_shapes(metric: Callable[..., float]) -> None:
    with pytest.raises(LBNetError, match=r"\(20, 20, 3\).*\(20, 21, 3\)"):
        metric(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21, 3), np.uint8), 2)


# The paper's Bicubic row (LBNet, IJCAI 2022), Set5 x4: 28.42 / 0.8104. (Its Set14 26.00 scored
# bridge's gray pixels as Y; with R = G = B, as behind the paper's LBNet rows, bicubic gives 26.09.)
@pytest.mark.parametrize(("dataset", "psnr", "ssim"), [("Set5", 28.42, 0.8104)])
def test_bicubic_x4_reproduces_the_papers_row(dataset: str, psnr: float, ssim: float) -> None:
    if not (DATA_DIR / dataset / "HR").is_dir():
        pytest.skip(f"{dataset} missing in {DATA_DIR}")
    pairs = []
    for _, hr_path, lr_path in _hr_lr_files(dataset, 4):
        hr = _load(hr_path)
        height, width = hr.shape[:2]
        pairs.append((imresize(_load(lr_path), 4), hr[: height - height % 4, : width - width % 4]))
    scores = mean_scores(pairs, shave=4)
    assert scores.psnr == pytest.approx(psnr, abs=0.02)
    assert scores.ssim == pytest.approx(ssim, abs=0.002)
