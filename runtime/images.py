"""Image files in and out: every readable mode becomes uint8 RGB for the model, and the result
is written back in the spirit of the input.

Mode handling (the model only knows RGB):
- grayscale (L, 1, and 16-bit/32-bit I, F): upscaled as R = G = B, written back as grayscale,
  the rounded mean of the three output channels.
- alpha (RGBA, LA, PA, palettes with transparency): colour is upscaled by the model, the alpha
  channel with PIL's bicubic filter (the model was never trained on alpha), then re-attached.
- palette (P) is expanded to RGB(A); CMYK, YCbCr, LAB, HSV are converted to RGB.
- 16-bit grayscale (I;16*, and I, which PIL uses for 16-bit PNG/PGM) is scaled to 8 bits
  by /257, whatever values the file happens to hold (a dark 16-bit image stays dark); float
  grayscale (F) in 0..1 is taken as 0..1, other float data as 0..255. PIL itself opens 16-bit
  RGB PNGs as 8-bit RGB; 32-bit integer TIFFs are refused (no agreed range). Output is always
  8 bits per channel.
- EXIF orientation is applied on read (Pillow's ImageOps.exif_transpose), so a phone photo
  comes out the way it is shown, not the way its sensor stored it.
- Animated and multi-page files: the first frame, with a warning.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lbnet_deploy.errors import LBNetError

from .atomic import write_bytes_atomic

_GRAY = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
log = logging.getLogger("lbnet_deploy")


@dataclass(frozen=True)
class LoadedImage:
    """What the model sees (`rgb`) plus what is needed to write the result back."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray | None  # H x W uint8, or None
    grayscale: bool
    mode: str  # the file's PIL mode, for messages
    icc_profile: bytes | None = None  # the file's colour profile, carried over to the output


def _to_uint8_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        if not np.isfinite(values).all():
            raise ValueError("float image with NaN or infinite pixels")
        if values.max(initial=0) <= 1.0:
            values = values * 255.0  # float images are 0..1 by convention (TIFF, EXR tools)
    else:  # I;16* and I: PIL opens 16-bit PNG, PGM and TIFF as these; judged by the mode, not
        values = values / 257.0  # by the values (a dark 16-bit image has values <= 255)
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


def read_image(
    path: str | Path, max_pixels: int | None = None, limit: str = "the limit"
) -> LoadedImage:
    """Decode `path`; any problem is one LBNetError line naming the file.

    `max_pixels`: refuse larger images from their header, before any pixel is decoded (a
    20000x20000 PNG of a few KB is a decompression bomb); `limit` names where it comes from in
    the message. Pillow's own bomb limit (about 179 MP) applies as well, reported the same way."""
    path = Path(path)
    if not path.is_file():
        raise LBNetError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise LBNetError(f"{path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # one line per file: Pillow's warnings (corrupt EXIF, sizes near its bomb limit,
            # which still applies as an error) would add more
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            loaded = _decode(path, max_pixels, limit)
    except LBNetError:
        raise
    except UnidentifiedImageError:
        raise LBNetError(f"{path} is not an image PIL can read") from None
    except Image.DecompressionBombError as exc:  # not an OSError
        raise LBNetError(f"{path} refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # corrupt data: OSError, but also KeyError, struct.error, ...
        detail = str(exc).strip()[:100] or type(exc).__name__
        raise LBNetError(f"{path} cannot be decoded ({detail})") from None
    if loaded.rgb.size == 0:
        raise LBNetError(f"{path} has zero size ({loaded.rgb.shape[1]}x{loaded.rgb.shape[0]})")
    return loaded


def _frames(img: Image.Image) -> int:
    try:
        return int(getattr(img, "n_frames", 1))
    except Exception:  # a corrupt frame table: the first frame may still decode
        return 1


def _decode(path: Path, max_pixels: int | None, limit: str) -> LoadedImage:
    """`read_image`'s decoding; its errors are turned into one line there."""
    with Image.open(path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise LBNetError(
                f"{path} is {width}x{height} ({width * height / 1e6:.1f} MP), over the "
                f"{max_pixels / 1e6:.1f} MP of {limit}"
            )
        frames = _frames(img)
        if frames > 1:
            log.warning("%s has %d frames; only the first is upscaled", path, frames)
        tags = getattr(img, "tag_v2", None)
        if img.mode == "I" and tags is not None and tuple(tags.get(258, ())) == (32,):
            # 32-bit integer samples have no agreed range (16-bit ones end at 65535): refuse
            # rather than guess a black or a saturated image
            raise LBNetError(f"{path} has 32-bit integer samples; convert it to 8 or 16 bits")
        img.load()  # decode now: truncated data fails here, inside the try
        ImageOps.exif_transpose(img, in_place=True)  # EXIF orientation, in place: no copy
        loaded = from_pil(img)
        icc = img.info.get("icc_profile")
        if isinstance(icc, bytes) and icc and _profile_fits(icc, loaded.grayscale):
            loaded = replace(loaded, icc_profile=icc)  # the pixels stay in it: so must the PNG
    return loaded


def _profile_fits(icc: bytes, grayscale: bool) -> bool:
    """Keep a colour profile only where the output's pixels are still in its colour space
    (a CMYK or Lab profile does not describe the RGB pixels we write)."""
    from PIL import ImageCms

    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except Exception:  # an unreadable profile: not carried over
        return False
    return space == ("GRAY" if grayscale else "RGB")


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


def write_png_atomic(path: str | Path, array: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write HxW, HxWx2, HxWx3 or HxWx4 uint8 as PNG, whole or not at all (`write_bytes_atomic`),
    with `icc_profile` embedded where given."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    encoded = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    Image.fromarray(array).save(encoded, format="PNG", **extra)
    write_bytes_atomic(path, encoded.getvalue())
