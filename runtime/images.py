"""Image files in and out: every readable mode becomes uint8 RGB for the model, and the result
is written back in the spirit of the input.

Mode handling (the model only knows RGB):
- grayscale (L, 1, and 16-bit/32-bit I, F): upscaled as R = G = B, written back as grayscale,
  the rounded mean of the three output channels.
- alpha (RGBA, LA, PA, palettes with transparency): colour is upscaled by the model, the alpha
  channel with PIL's bicubic filter (the model was never trained on alpha), then re-attached.
- palette (P) is expanded to RGB(A); CMYK, YCbCr, LAB, HSV are converted to RGB.
- 16-bit and float grayscale are scaled to 8 bits (I;16: /257 rounded, others clipped to
  0..255); PIL itself opens 16-bit RGB PNGs as 8-bit RGB. Output is always 8 bits per channel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lbnet_deploy.errors import LBNetError

from .atomic import write_bytes_atomic

_GRAY = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class LoadedImage:
    """What the model sees (`rgb`) plus what is needed to write the result back."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray | None  # H x W uint8, or None
    grayscale: bool
    mode: str  # the file's PIL mode, for messages


def _to_uint8_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and values.max(initial=0) > 255):
        values = values / 257.0  # 16-bit range onto 8 bits
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def from_pil(img: Image.Image) -> LoadedImage:
    """Split a PIL image into model input and write-back facts (see the module docstring)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in _GRAY:
        gray = _to_uint8_gray(img)
        return LoadedImage(np.repeat(gray[..., None], 3, axis=2), None, True, mode)
    if img.mode == "LA":
        la = np.asarray(img)
        return LoadedImage(np.repeat(la[..., :1], 3, axis=2), la[..., 1].copy(), True, mode)
    if img.mode == "RGBA":
        rgba = np.asarray(img)
        return LoadedImage(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].copy(), False, mode)
    return LoadedImage(np.asarray(img.convert("RGB")), None, False, mode)


def read_image(path: str | Path) -> LoadedImage:
    """Decode `path`; any problem is one LBNetError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LBNetError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise LBNetError(f"{path} is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated data fails here, inside the try
            loaded = from_pil(img)
    except UnidentifiedImageError:
        raise LBNetError(f"{path} is not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise LBNetError(f"{path} cannot be decoded ({str(exc).strip()[:100]})") from None
    if loaded.rgb.size == 0:
        raise LBNetError(f"{path} has zero size ({loaded.rgb.shape[1]}x{loaded.rgb.shape[0]})")
    return loaded


def restore(loaded: LoadedImage, sr_rgb: np.ndarray) -> np.ndarray:
    """The upscaled RGB put back into the input's form: grayscale and/or alpha re-attached."""
    out = sr_rgb
    if loaded.grayscale:
        out = np.rint(sr_rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
    if loaded.alpha is None:
        return out
    height, width = sr_rgb.shape[:2]
    alpha = np.asarray(
        Image.fromarray(loaded.alpha).resize((width, height), Image.Resampling.BICUBIC)
    )
    return np.dstack([out, alpha])


def write_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write HxW, HxWx2, HxWx3 or HxWx4 uint8 as PNG, whole or not at all (`write_bytes_atomic`)."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    encoded = io.BytesIO()
    Image.fromarray(array).save(encoded, format="PNG")
    write_bytes_atomic(path, encoded.getvalue())
