"""Hostile and unusual inputs, generated at test time (no binary fixtures in the repository)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header claims width x height (a decompression bomb:
    a real one decodes to gigabytes; this one would fail to decode, but must never get there)."""

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(png_file([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")]))
    return path


def png_file(chunks: Sequence[tuple[bytes, bytes]], bad_crc: Sequence[bytes] = ()) -> bytes:
    """A PNG file of these (type, data) chunks; those whose type is in `bad_crc` get a wrong
    CRC."""
    data = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        crc = (zlib.crc32(kind + body) ^ (kind in bad_crc)) & 0xFFFFFFFF
        data += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return data


def photo(path: Path, width: int = 12, height: int = 8, seed: int = 0) -> Path:
    """A small RGB image with some texture."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def exif_rotated_jpeg(path: Path, width: int = 12, height: int = 8) -> Path:
    """A JPEG stored width x height whose EXIF orientation (6) says: show it rotated 90 degrees."""
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes())
    return path


def sixteen_bit_pgm(path: Path, value: int = 200, size: int = 6) -> Path:
    """A 16-bit PGM (maxval 65535) whose samples all happen to be <= 255: a very dark image."""
    header = f"P5\n{size} {size}\n65535\n".encode()
    path.write_bytes(header + struct.pack(f">{size * size}H", *([value] * size * size)))
    return path


def float_tiff(path: Path, value: float = 0.5, size: int = 6) -> Path:
    """A 32-bit float grayscale TIFF in the 0..1 convention."""
    Image.fromarray(np.full((size, size), value, np.float32), mode="F").save(path)
    return path


def animated_gif(path: Path, frames: int = 3) -> Path:
    images = [Image.new("RGB", (6, 6), (40 * i, 0, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def lying_graph(
    path: Path, *, claimed_scale: int = 2, real_scale: int = 3, nan: bool = False
) -> Path:
    """An ONNX file with lbnet.* metadata for a x`claimed_scale` model whose graph upsamples by
    `real_scale` (nearest), or returns NaN everywhere (`nan`): it loads and runs, and lies."""
    lr = helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, None, None])
    sr = helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, None, None])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, real_scale, real_scale])
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest")]
    inits = [scales]
    if nan:
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
        nodes += [
            helper.make_node("Mul", ["up", "zero"], ["z"]),
            helper.make_node("Div", ["z", "z"], ["sr"]),
        ]
        inits.append(zero)
    else:
        nodes.append(helper.make_node("Identity", ["up"], ["sr"]))
    graph = helper.make_graph(nodes, "liar", [lr], [sr], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    facts = {"variant": "LBNet-T", "scale": claimed_scale, "n_feats": 18, "heads": 6,
             "attn_dim": 162, "input_size": "dynamic", "batch": "1"}  # fmt: skip
    helper.set_model_props(model, {f"lbnet.{k}": str(v) for k, v in facts.items()})
    onnx.save(model, path)
    return path


def png16(path: Path, samples: np.ndarray, icc_profile: bytes | None = None) -> Path:
    """A 16-bit PNG of H x W (gray), H x W x 2 (gray + alpha), x3 (RGB) or x4 (RGBA) uint16
    samples, written by pypng (PIL has no 16-bit colour mode), with an iCCP chunk if given."""
    import png

    h, w = samples.shape[:2]
    planes = 1 if samples.ndim == 2 else samples.shape[2]
    writer = png.Writer(w, h, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16)
    with open(path, "wb") as fh:
        writer.write(fh, samples.reshape(h, w * planes))
    if icc_profile:
        chunks = list(png.Reader(filename=str(path)).chunks())
        chunks.insert(1, (b"iCCP", b"p\0\0" + zlib.compress(icc_profile)))
        with open(path, "wb") as fh:
            png.write_chunks(fh, chunks)
    return path


def read_png16(path: Path) -> np.ndarray:
    """A PNG's samples at their own depth (pypng), H x W x planes."""
    import png

    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
    return np.vstack([np.asarray(r, dtype) for r in rows]).reshape(h, w, info["planes"])


def png_with_chunks(
    path: Path,
    before_idat: Sequence[tuple[bytes, bytes]] = (),
    after_idat: Sequence[tuple[bytes, bytes]] = (),
    bad_crc: Sequence[bytes] = (),
) -> Path:
    """`path` rewritten with extra chunks around its image data; a chunk whose type is in
    `bad_crc` gets a wrong CRC."""
    import png

    chunks = list(png.Reader(filename=str(path)).chunks())
    chunks[1:1] = before_idat
    chunks[-1:-1] = after_idat
    path.write_bytes(png_file(chunks, bad_crc))
    return path


def png16_bomb(path: Path, width: int = 8, height: int = 8, extra: int = 20_000_000) -> Path:
    """A 16-bit RGB PNG whose image data holds the declared width x height (zeros) and then
    `extra` more zero bytes: a few KB that pypng, left alone, inflates whole into rows."""
    raw = b"\0" * (height * (1 + width * 6) + extra)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(png_file([(b"IHDR", ihdr), (b"IDAT", zlib.compress(raw, 9)), (b"IEND", b"")]))
    return path


def gray_icc() -> bytes:
    """A minimal ICC v2 grayscale display profile (gamma 2.2): header, tag table and the desc,
    wtpt, kTRC and cprt tags. ImageCms can only make RGB, Lab and XYZ profiles."""

    def xyz(x: float, y: float, z: float) -> bytes:
        return struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))  # s15Fixed16

    d50 = xyz(0.9642, 1.0, 0.8249)
    text = b"gray gamma 2.2\0"
    tags = {  # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67),
        b"wtpt": b"XYZ \0\0\0\0" + d50,
        b"kTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, 563),  # one gamma, u8Fixed8: 2.2
        b"cprt": b"text\0\0\0\0none\0",
    }
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags.items():
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", 128 + 4 + 12 * len(tags) + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", 128 + len(table) + len(body)) + b"lcms" + struct.pack(">I", 0x02100000)
        + b"mntrGRAYXYZ " + bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4) + d50
        + bytes(4 + 16 + 28)
    )  # fmt: skip
    return header + table + body
