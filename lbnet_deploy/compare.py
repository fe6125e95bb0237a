"""`eval --compare DIR`: per image, one PNG of side-by-side crops (bicubic, each model or
precision given, HR), each captioned with its name and its PSNR-Y on the whole image, so a user
sees what FP16 or INT8 cost where it shows.

The crop is the window where the results differ most: between the first model and the others
(their summed absolute difference, RGB), or, with one model, between it and HR. Panels are
magnified by pixel repetition (no interpolation hides the difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lbnet_deploy.runtime.images import write_image_atomic

CROP = 96  # HR pixels per side (the whole image where it is smaller)
ZOOM = 2  # shown at 2x, by repetition
CAPTION = 36  # pixels of caption below each panel
GAP = 4


@dataclass(frozen=True)
class Panel:
    label: str
    image: np.ndarray  # H x W x 3 uint8, the size of HR
    psnr_y: float | None = None  # None: the reference itself (HR)


def window(a: np.ndarray, b: np.ndarray, size: int) -> tuple[int, int]:
    """(top, left) of the size x size window with the largest summed |a - b| (an integral
    image: every window's sum in one pass); the first such window."""
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(axis=2)
    table = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def sheet(panels: list[Panel], crop: int = CROP) -> np.ndarray:
    """The side-by-side crops with captions, as one uint8 RGB image; panels[0] is bicubic,
    panels[1] the first model, panels[-1] HR."""
    hr = panels[-1].image
    size = min(crop, *hr.shape[:2])
    models = panels[1:-1]
    other = models[1].image if len(models) > 1 else hr
    top, left = window(models[0].image, other, size)
    side = size * ZOOM
    canvas = Image.new("RGB", (len(panels) * (side + GAP) - GAP, side + CAPTION), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)  # a scalable font from Pillow 10.1 (FreeType)
    for i, panel in enumerate(panels):
        part = panel.image[top : top + size, left : left + size].repeat(ZOOM, 0).repeat(ZOOM, 1)
        x = i * (side + GAP)
        canvas.paste(Image.fromarray(np.ascontiguousarray(part)), (x, 0))
        score = "reference" if panel.psnr_y is None else f"PSNR-Y {panel.psnr_y:.3f} dB"
        draw.text((x + 2, side + 2), _fit(draw, panel.label, font, side), fill="black", font=font)
        draw.text((x + 2, side + 18), score, fill="black", font=font)
    return np.asarray(canvas)


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> str:
    """`text`, shortened from the left with "..." until it fits `width` pixels."""
    while len(text) > 4 and draw.textlength(text, font=font) > width - 4:
        text = "..." + text[4:]
    return text


def write_sheet(path: Path, panels: list[Panel]) -> None:
    write_image_atomic(path, sheet(panels))
