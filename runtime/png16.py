"""16-bit colour PNGs (RGB, RGBA, gray + alpha), which Pillow opens at 8 bits: their samples
read and written through pypng.

Writing (`write_png16`) hands pypng packed big-endian rows one at a time (its own packing turns
each sample into a Python int) and adds the ICC profile to its preamble.

Reading (`read_png16`) gives pypng only what the pixels are made of: the file's chunks are
walked here and pypng reads a PNG of IHDR, the image data and IEND. pypng's own handling of
the rest goes wrong for files Pillow reads: `asDirect` shifts samples down to an sBIT chunk's
depth (a 12-bit sBIT gave an image 16x too dark), an sBIT of zeros trips a formatting bug in its
error message, and a bad CRC on a chunk after the image data is refused. As Pillow does, the
image data is the first run of IDAT chunks (CRCs unchecked) and a transparent colour (tRNS)
becomes an alpha channel here.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lbnet_deploy.errors import LBNetError

_PLANES = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (3, palette: 8-bit)
_IDAT_PIECE = 1 << 16  # compressed bytes per IDAT chunk handed to pypng (it inflates per chunk)
_INFLATE_STEP = 1 << 20  # output bytes inflated at a time while the image data is measured


def read_png16(path: Path) -> tuple[np.ndarray, bool, bool]:
    """A 16-bit PNG's samples as stored (H x W x planes uint16, a tRNS colour as alpha), and
    whether it is grayscale and has alpha. Corrupt data raises (pypng's errors, ValueError):
    the caller turns that into one line."""
    import png  # pypng

    ihdr, trns, idat = _image_chunks(path.read_bytes())
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    planes = _PLANES.get(colour_type)
    if depth != 16 or planes is None:
        raise ValueError(f"not a 16-bit colour PNG (depth {depth}, colour type {colour_type})")
    expected = _inflated_size(width, height, 16 * planes, bool(interlace))
    if _inflates_past(idat, expected):
        raise LBNetError(
            f"{path} refused as a decompression bomb (its image data inflates past the "
            f"{expected} bytes of the {width}x{height} its header declares)"
        )
    clean = io.BytesIO()
    view = memoryview(idat)
    pieces = (view[i : i + _IDAT_PIECE] for i in range(0, len(idat), _IDAT_PIECE))
    png.write_chunks(clean, [(b"IHDR", ihdr), *((b"IDAT", p) for p in pieces), (b"IEND", b"")])
    view.release()
    del idat
    clean.seek(0)
    _, _, rows, _ = png.Reader(file=clean).read()
    samples = np.empty((height, width * planes), np.uint16)
    for y, row in enumerate(rows):  # pypng yields one row at a time: no list of all of them
        samples[y] = row
    samples = samples.reshape(height, width, planes)
    alpha = planes in (2, 4)
    if trns is not None and not alpha and len(trns) == 2 * planes:
        key = np.frombuffer(trns, ">u2").astype(np.uint16)
        opaque = np.where((samples == key).all(axis=2), 0, 65535).astype(np.uint16)
        samples, alpha = np.dstack([samples, opaque]), True
    return samples, planes < 3, alpha


def _inflated_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """The bytes a PNG's image data inflates to: per row (of each Adam7 pass where interlaced)
    a filter byte and the row's samples."""
    import png  # pypng

    passes = png.adam7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-max(width - x0, 0) // dx), -(-max(height - y0, 0) // dy)
        if columns and rows:  # an empty pass has no filter bytes either
            total += rows * (1 + (columns * bits_per_pixel + 7) // 8)
    return total


def _inflates_past(idat: bytes | bytearray, expected: int) -> bool:
    """Whether the zlib stream `idat` inflates to more than `expected` bytes, found out holding
    at most _INFLATE_STEP of its output at a time: pypng inflates each IDAT chunk whole and
    turns every byte into rows, so a few-KB file whose header declares 8x8 pixels could take
    gigabytes there (Pillow stops once the declared image is complete, so its check passed).
    Data after the end of the stream is ignored, as pypng and Pillow ignore it."""
    inflater = zlib.decompressobj()
    total = 0
    view = memoryview(idat)
    for start in range(0, len(view), _IDAT_PIECE):  # in pieces: unconsumed_tail is a copy
        pending: bytes | memoryview = view[start : start + _IDAT_PIECE]
        while True:
            out = inflater.decompress(pending, _INFLATE_STEP)
            total += len(out)
            if total > expected:
                return True
            if inflater.eof:
                return False
            pending = inflater.unconsumed_tail
            if not pending and len(out) < _INFLATE_STEP:  # else zlib may hold more output
                break
    return False


def _image_chunks(data: bytes) -> tuple[bytes, bytes | None, bytearray]:
    """(IHDR, tRNS or None, the first run of IDAT chunks joined) of a PNG file: the chunks that
    make its pixels, where Pillow reads them (it stops at the first chunk after the image data
    and checks no CRC there); a torn tail after the image data is no error, as in Pillow."""
    import png  # pypng

    reader = png.Reader(bytes=data)
    ihdr, trns, idat = b"", None, bytearray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # lenient: a CRC error is a warning
        while True:
            try:
                kind, body = reader.chunk(lenient=True)
            except (png.ChunkError, png.FormatError):
                if idat:
                    break
                raise
            if kind == b"IDAT":
                idat += body
            elif idat or kind == b"IEND":
                break
            elif kind == b"IHDR":
                ihdr = body
            elif kind == b"tRNS":
                trns = body
    if len(ihdr) != 13 or not idat:
        raise ValueError("no IHDR or no image data")
    return ihdr, trns, idat


def write_png16(array: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """H x W x planes uint16 (2: gray + alpha, 3: RGB, 4: RGBA) -> a 16-bit PNG's bytes, with
    the ICC profile as an iCCP chunk where given; holds one row's copy besides the file."""
    import png  # pypng

    class Writer(png.Writer):  # type: ignore[misc]
        def write_preamble(self, outfile: BinaryIO) -> None:
            super().write_preamble(outfile)  # signature, IHDR: iCCP goes before the image data
            if icc_profile:  # profile name, NUL, compression method 0 (zlib), the profile
                png.write_chunk(outfile, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))

    height, width, planes = array.shape
    writer = Writer(
        width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16, compression=6
    )
    encoded = io.BytesIO()
    writer.write_packed(encoded, (row.astype(">u2").tobytes() for row in array))
    return encoded.getvalue()
