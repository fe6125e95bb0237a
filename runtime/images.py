"""Image files in and out: every readable mode becomes uint8 RGB for the model, and the result
is written back in the spirit of the input.

Mode handling (the model only knows RGB):
- grayscale (L, 1, and 16-bit/32-bit I, F): upscaled as R = G = B, written back as grayscale,
  the rounded mean of the three output channels.
- alpha (RGBA, LA, PA, palettes with transparency): colour is upscaled by the model, the alpha
  channel with PIL's bicubic filter (the model was never trained on alpha), then re-attached.
- palette (P) is expanded to RGB(A); CMYK, YCbCr, LAB, HSV are converted to RGB.
- 16-bit images: grayscale (I;16*, and I, which PIL uses for 16-bit PNG/PGM/TIFF) and 16-bit
  colour PNGs (RGB, RGBA, gray+alpha; PIL itself would open them at 8 bits, so pypng decodes
  them) keep their 16 bits (`LoadedImage.deep`: the model is fed v / 257, whatever values the
  file happens to hold: a dark 16-bit image stays dark) and `rgb` is rint(v / 257). 16-bit
  colour TIFFs are read at 8 bits (PIL). Float grayscale (F) in 0..1 is taken as 0..1, other
  float data as 0..255; 32-bit integer TIFFs are refused (no agreed range).
- Output (`OutputFormat`): PNG (16 bits per channel for 16-bit inputs), JPEG and WebP (quality
  1..100), TIFF; the input's ICC profile is carried over. JPEG, WebP and TIFF hold 8 bits per
  channel here: a 16-bit input is written at 8 bits with a warning; JPEG has no alpha channel,
  so an image with alpha is refused there (one line; the other files go on).
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
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from lbnet_deploy.errors import LBNetError

from .atomic import write_bytes_atomic
from .png16 import read_png16, write_png16
from .upscaler import PLAIN, Footprint

_GRAY = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# the largest ICC profile carried over: Pillow refuses a PNG whose iCCP inflates past this
# (so our own output could not be read back), and JPEG's 8-bit marker count wraps past 16 MB
MAX_PROFILE = PngImagePlugin.MAX_TEXT_CHUNK
log = logging.getLogger("lbnet_deploy")


@dataclass(frozen=True)
class LoadedImage:
    """What the model sees (`rgb`) plus what is needed to write the result back."""

    rgb: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray | None  # H x W uint8, or None
    grayscale: bool
    mode: str  # the file's PIL mode, for messages
    icc_profile: bytes | None = None  # the file's colour profile, carried over to the output
    # a 16-bit file's samples: H x W x 3 uint16 colour and H x W uint16 alpha (None: 8-bit)
    deep: np.ndarray | None = None
    deep_alpha: np.ndarray | None = None

    @property
    def model_input(self) -> np.ndarray:
        """What the Upscaler is fed: `rgb`, or a 16-bit file's colour (uint16: the model gets
        v / 257, converted per tile)."""
        return self.rgb if self.deep is None else self.deep


def _to_uint8_gray(img: Image.Image) -> np.ndarray:
    """1, L and F (16-bit modes: `from_pil`) -> uint8."""
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("float image with NaN or infinite pixels")
    if values.max(initial=0) <= 1.0:
        values = values * 255.0  # float images are 0..1 by convention (TIFF, EXR tools)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def from_pil(img: Image.Image) -> LoadedImage:
    """Split a PIL image into model input and write-back facts (see the module docstring)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode.startswith("I"):  # I;16* and I: PIL opens 16-bit PNG, PGM and TIFF as these
        # (32-bit integer files were refused before); v / 257 whatever the values (a dark
        # 16-bit image has values <= 255)
        deep = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        gray = to_8bit(deep)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        return LoadedImage(rgb, None, True, mode, deep=np.repeat(deep[..., None], 3, axis=2))
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
        # PIL decodes 16-bit colour PNGs to 8 bits ("RGB;16B" raw data into an RGB image)
        deep_png = img.format == "PNG" and img.mode != "I;16" and _raw_mode(img).endswith(";16B")
        img.load()  # decode now: truncated data fails here, inside the try
        orientation = img.getexif().get(ExifTags.Base.Orientation)
        ImageOps.exif_transpose(img, in_place=True)  # EXIF orientation, in place: no copy
        loaded = from_pil(img)
        if deep_png:
            loaded = _with_png16(loaded, path, orientation)
        icc = img.info.get("icc_profile")
        if isinstance(icc, bytes) and len(icc) > MAX_PROFILE:
            log.warning(
                "%s: its ICC profile (%.1f MB) is not carried over: over the %d MB Pillow reads "
                "back from a PNG (and JPEG's 255 markers end at 16 MB)",
                path, len(icc) / 2**20, MAX_PROFILE >> 20,
            )  # fmt: skip
        elif isinstance(icc, bytes) and icc and _profile_fits(icc, loaded.grayscale):
            loaded = replace(loaded, icc_profile=icc)  # the pixels stay in it: so must the PNG
    return loaded


def _raw_mode(img: Image.Image) -> str:
    """The raw mode of an opened, not yet loaded file's first tile ("" where none)."""
    tile = getattr(img, "tile", None)
    return str(tile[0][3]) if tile and len(tile[0]) > 3 else ""


# EXIF orientation -> the transposition that shows the image upright: the table of
# ImageOps.exif_transpose (private there), for the 16-bit samples PIL does not hold
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _with_png16(loaded: LoadedImage, path: Path, orientation: object) -> LoadedImage:
    """`loaded` with a 16-bit colour PNG's own samples (`png16.read_png16`: PIL has no 16-bit
    colour mode), turned upright as PIL turned `rgb`; `rgb` (and an alpha) become their
    rint(v / 257)."""
    samples, grayscale, has_alpha = read_png16(path)
    method = _UPRIGHT.get(orientation)  # type: ignore[call-overload]
    if method is not None:  # per plane, by PIL's own transposition of a 16-bit image
        planes_up = [
            np.asarray(Image.fromarray(samples[..., c]).transpose(method))
            for c in range(samples.shape[2])
        ]
        samples = np.dstack(planes_up)
    # copies of their own: a view would keep the whole samples array (alpha included) alive
    colour = (
        samples[..., :1].repeat(3, axis=2) if grayscale else np.ascontiguousarray(samples[..., :3])
    )
    alpha = samples[..., -1].copy() if has_alpha else None
    del samples
    return replace(
        loaded,
        grayscale=grayscale,
        rgb=to_8bit(colour),
        alpha=None if alpha is None else to_8bit(alpha),
        deep=colour,
        deep_alpha=alpha,
    )


def to_8bit(samples: np.ndarray) -> np.ndarray:
    """16-bit samples -> uint8 by rint(v / 257) (65535 -> 255 exactly), as (v + 128) // 257
    (v / 257 is never a half), 64 rows at a time: a whole-image temporary would cost 4 bytes
    per sample (the float route took 16)."""
    out = np.empty(samples.shape, np.uint8)
    for top in range(0, len(samples), 64):
        wide = samples[top : top + 64].astype(np.uint32)
        wide += 128
        wide //= 257
        out[top : top + 64] = wide
    return out


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
    """The upscaled RGB (uint8, or uint16 from a 16-bit input) put back into the input's form:
    grayscale and/or alpha re-attached, alpha at the result's depth. Integer and in-place
    arithmetic: every full-size float temporary costs 4 bytes per output pixel and channel."""
    out = sr_rgb
    if loaded.grayscale:  # the rounded mean: (sum + 1) // 3 is rint(sum / 3), never a half
        total = sr_rgb.sum(axis=2, dtype=np.uint32)
        total += 1
        total //= 3
        out = total.astype(sr_rgb.dtype)
        del total
    if loaded.alpha is None:
        return out
    size = (sr_rgb.shape[1], sr_rgb.shape[0])
    bicubic = Image.Resampling.BICUBIC
    if sr_rgb.dtype == np.uint16:  # PIL's float mode resizes 16-bit values with every filter
        alpha16 = loaded.deep_alpha
        if alpha16 is None:  # an 8-bit alpha beside a 16-bit result (uint8 * 257 overflows)
            alpha16 = loaded.alpha.astype(np.uint16) * 257
        resized = Image.fromarray(alpha16.astype(np.float32)).resize(size, bicubic)
        alpha = np.rint(np.asarray(resized))
        del resized
        np.clip(alpha, 0, 65535, out=alpha)
    else:
        alpha = np.asarray(Image.fromarray(loaded.alpha).resize(size, bicubic))
    planes = out.reshape(*out.shape[:2], -1)  # gray: one plane
    with_alpha = np.empty((*planes.shape[:2], planes.shape[2] + 1), sr_rgb.dtype)
    with_alpha[..., :-1] = planes
    with_alpha[..., -1] = alpha
    return with_alpha


# --format: the file formats outputs are written in, and their name suffixes
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff"}
DEEP_FORMATS = ("png",)  # where a 16-bit input stays 16-bit here
DEFAULT_QUALITY = 95  # JPEG and WebP; above 95 JPEG grows and gains little (Pillow's advice)
# the largest side each format's encoder writes (libjpeg's JPEG_MAX_DIMENSION, libwebp's
# WEBP_MAX_DIMENSION); PNG and TIFF hold more than any budget here
MAX_SIDE = {"jpg": 65500, "webp": 16383}


@dataclass(frozen=True)
class OutputFormat:
    """How results are written (`upscale --format/--quality`): a file format and, for the lossy
    ones (jpg, webp), the quality 1..100; checked when made, before any work."""

    name: str = "png"
    quality: int | None = None  # None: DEFAULT_QUALITY where it applies

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise LBNetError(f"output format is one of {', '.join(FORMATS)}, not {self.name!r}")
        if self.quality is not None:
            if self.name not in ("jpg", "webp"):
                raise LBNetError(f"--quality applies to jpg and webp, not to {self.name}")
            if not 1 <= self.quality <= 100:
                raise LBNetError(f"--quality must be 1..100, got {self.quality}")

    @property
    def extension(self) -> str:
        return FORMATS[self.name]

    def bits(self, image: LoadedImage) -> int:
        """Bits per sample of `image`'s result in this format: 16 for a 16-bit input into a
        format that keeps them, else 8."""
        return 16 if image.deep is not None and self.name in DEEP_FORMATS else 8

    def footprint(self, image: LoadedImage) -> Footprint:
        """The host memory `image` takes besides the model, written in this format: the peaks
        measured per LR and output pixel (README, Memory) with about 10% to spare."""
        if self.name == "webp":  # libwebp's encoder: 28 per output pixel, 50-61 with alpha
            sr = 64 if image.alpha is not None else 30
        else:  # 16-bit PNG: the canvas and the 16-bit result 18, alpha re-attached 20
            sr = 22 if self.bits(image) == 16 else PLAIN.sr
        # a 16-bit input's decoding: 31 per LR pixel (Pillow's 8-bit view, pypng, the samples)
        return Footprint(lr=PLAIN.lr if image.deep is None else 36, sr=sr)

    def holds(self, image: LoadedImage, source: str | Path, scale: int) -> str | None:
        """None where `source`'s x`scale` result can be written as it is; else what happens (a
        warning) or, for alpha into JPEG or a side over the format's limit, an LBNetError."""
        if self.name == "jpg" and image.alpha is not None:
            raise LBNetError(
                f"{source} has an alpha channel ({image.mode}), which JPEG cannot hold: use "
                "--format png, webp or tiff"
            )
        height, width = (scale * n for n in image.rgb.shape[:2])
        limit = MAX_SIDE.get(self.name)
        if limit is not None and max(height, width) > limit:
            raise LBNetError(
                f"{source} gives {width}x{height} at x{scale}, over the {limit} pixels per side "
                f"{self.name} can hold: use --format png or tiff"
            )
        notes = []
        if image.deep is not None and self.name not in DEEP_FORMATS:
            notes.append(f"16-bit input written at 8 bits per channel ({self.name}; png keeps 16)")
        if self.name == "webp" and image.grayscale and image.icc_profile:
            notes.append("its grayscale ICC profile is left out: WebP has no grayscale (RGB)")
        return "; ".join(notes) or None

    def encode(self, array: np.ndarray, icc_profile: bytes | None = None) -> bytes:
        """HxW, HxWx2, HxWx3 or HxWx4 uint8 (uint16: PNG only) -> the file's bytes, with the
        ICC profile embedded where given."""
        if array.dtype == np.uint16:
            if self.name not in DEEP_FORMATS:
                raise ValueError(f"{self.name} output is 8-bit here")
            return _png16(array, icc_profile)
        if array.dtype != np.uint8:
            raise ValueError(f"expected uint8 or uint16 pixels, got {array.dtype}")
        if self.name == "webp" and (array.ndim == 2 or array.shape[2] == 2):
            # WebP has no grayscale: made RGB(A) here, as Pillow would, but without the gray
            # profile Pillow would keep (it no longer describes the pixels)
            gray = array.reshape(*array.shape[:2], -1)
            array = np.dstack([gray[..., :1]] * 3 + [gray[..., 1:]])
            if icc_profile and not _profile_fits(icc_profile, grayscale=False):
                icc_profile = None
        options: dict[str, object] = {"icc_profile": icc_profile} if icc_profile else {}
        if self.name in ("jpg", "webp"):
            options["quality"] = self.quality or DEFAULT_QUALITY
        if self.name == "tiff":
            options["compression"] = (
                "tiff_adobe_deflate"  # lossless, as PNG; TIFF's default is none
            )
        encoded = io.BytesIO()
        pil_format = {"jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "png": "PNG"}[self.name]
        # C order: Image.fromarray copies any other layout once more before its own copy
        Image.fromarray(np.ascontiguousarray(array)).save(encoded, format=pil_format, **options)
        return encoded.getvalue()


PNG = OutputFormat()  # the default: what `upscale` writes unless told


def _png16(array: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A 16-bit PNG: grayscale through PIL (its I;16 mode), colour and gray+alpha through pypng
    (`png16.write_png16`: PIL has no 16-bit colour mode)."""
    if array.ndim == 2:
        encoded = io.BytesIO()
        extra = {"icc_profile": icc_profile} if icc_profile else {}
        Image.fromarray(np.ascontiguousarray(array)).save(encoded, format="PNG", **extra)
        return encoded.getvalue()
    return write_png16(array, icc_profile)


def write_image_atomic(
    path: str | Path,
    array: np.ndarray,
    icc_profile: bytes | None = None,
    output: OutputFormat = PNG,
) -> None:
    """Write `array` in `output`'s format (`OutputFormat.encode`), whole or not at all
    (`write_bytes_atomic`); an encoder's refusal is one line naming the file."""
    try:
        encoded = output.encode(array, icc_profile)
    except (OSError, ValueError) as exc:  # the encoders' limits (sizes, profiles) and errors
        detail = str(exc).strip()[:100] or type(exc).__name__
        raise LBNetError(f"cannot write {path} as {output.name} ({detail})") from None
    write_bytes_atomic(path, encoded)
