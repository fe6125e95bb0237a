"""`upscale --format png|jpg|webp|tiff --quality --suffix`: every format round-trips, 16-bit
inputs give 16-bit PNGs, the ICC profile travels, and what a format cannot hold is said (a
warning, or one line for that file); names and qualities that would go wrong are refused before
any work. On the bicubic model (no checkpoints): its x2 of a flat image is that flat image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.runtime.images import OutputFormat, read_image

from ..conftest import texture
from . import corpus

UPSCALE = ["upscale", "--model", "bicubic-x2", "-q"]
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


@pytest.mark.parametrize(
    ("fmt", "pil_format", "min_psnr"),
    [("png", "PNG", None), ("tiff", "TIFF", None), ("jpg", "JPEG", 30.0), ("webp", "WEBP", 30.0)],
)
def test_each_format_round_trips_with_its_profile(fmt, pil_format, min_psnr, tmp_path) -> None:
    """Lossless formats give the PNG's pixels exactly, lossy ones close to them at the default
    quality; each file is what its name says, the ICC profile inside."""
    src = tmp_path / "in.png"
    Image.fromarray(texture(48, 40)).save(src, icc_profile=SRGB)
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / "ref")]) == 0
    reference = np.asarray(Image.open(tmp_path / "ref" / "in.png"))
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / fmt), "--format", fmt]) == 0
    (out,) = (tmp_path / fmt).iterdir()
    assert out.name == f"in{OutputFormat(fmt).extension}"
    with Image.open(out) as img:
        assert img.format == pil_format and img.size == (80, 96)
        assert img.info.get("icc_profile") == SRGB
        pixels = np.asarray(img.convert("RGB"))
    if min_psnr is None:
        np.testing.assert_array_equal(pixels, reference)
    else:
        assert _psnr(pixels, reference) > min_psnr


def test_quality_changes_jpeg_and_webp(tmp_path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)).save(src)
    for fmt in ("jpg", "webp"):
        sizes = []
        for quality in (20, 95):
            out = tmp_path / f"{fmt}{quality}"
            args = [*UPSCALE, str(src), "-o", str(out), "--format", fmt, "--quality", str(quality)]
            assert main(args) == 0
            sizes.append(next(out.iterdir()).stat().st_size)
        assert sizes[0] < sizes[1] * 0.7, (fmt, sizes)


@pytest.mark.parametrize(("planes", "mode"), [(1, "I;16"), (2, "RGBA"), (3, "RGB"), (4, "RGBA")])
def test_16_bit_png_in_gives_16_bit_png_out(planes: int, mode: str, tmp_path) -> None:
    """Flat 16-bit samples that 8 bits cannot hold (1000 is 3.89 of 255) come back as they are,
    alpha included, at 16 bits; the 8-bit route would give 1028 (4 x 257)."""
    shape = (6, 5) if planes == 1 else (6, 5, planes)
    values = np.array([1000, 40000, 777, 65535][:planes], np.uint16)
    src = corpus.png16(tmp_path / "deep.png", np.broadcast_to(values, shape).copy(), SRGB)
    with Image.open(src) as img:
        assert img.mode == mode  # what PIL alone makes of it (RGB, RGBA: 8 bits)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 0
    samples = corpus.read_png16(out / "deep.png")
    assert samples.dtype == np.uint16 and samples.shape == (12, 10, planes)
    np.testing.assert_array_equal(samples, np.broadcast_to(values, samples.shape))
    with Image.open(out / "deep.png") as img:  # an RGB profile does not describe gray pixels
        assert img.info.get("icc_profile") == (SRGB if planes >= 3 else None)


def test_16_bit_png_through_lbnet_is_its_unrounded_output(export_cache, tmp_path) -> None:
    """Through a (random-weight) LBNet graph: the 16-bit file holds the model's output on the
    16-bit input, x257 and rounded, not the 8-bit result widened."""
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.runtime.upscaler import Upscaler

    graph = str(export_cache("random-LBNet-T-x4"))
    deep = (np.random.default_rng(0).random((8, 6, 3)) * 65535).astype(np.uint16)
    src = corpus.png16(tmp_path / "deep.png", deep)
    out = tmp_path / "out"
    assert (
        main(["upscale", str(src), "-o", str(out), "--model", graph, "--backend", "ort", "-q"]) == 0
    )
    got = corpus.read_png16(out / "deep.png")
    want = Upscaler(open_runner(graph, "ort")).upscale_float(deep.astype(np.float32) / 257)
    want = np.clip(np.rint(want.transpose(1, 2, 0) * 257), 0, 65535)
    assert got.dtype == np.uint16 and np.abs(got.astype(float) - want).max() <= 1
    assert len(np.unique(got % 257)) > 100  # not multiples of 257: not an 8-bit result


def test_16_bit_gradient_keeps_detail_8_bits_would_lose(tmp_path) -> None:
    ramp = np.linspace(10000, 10256, 32).astype(np.uint16)  # one 8-bit step over 32 pixels
    src = corpus.png16(tmp_path / "ramp.png", np.tile(ramp[None, :, None], (8, 1, 3)))
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / "out")]) == 0
    row = corpus.read_png16(tmp_path / "out" / "ramp.png")[4, 8:56, 0].astype(int)
    assert len(np.unique(row)) > 20  # 8 bits would give 2 values
    assert np.all(np.diff(row) >= 0)  # still a ramp


def test_16_bit_into_8_bit_formats_is_said_and_rounded(tmp_path, caplog) -> None:
    src = corpus.png16(tmp_path / "deep.png", np.full((6, 5, 3), 1000, np.uint16))
    for fmt in ("jpg", "webp", "tiff"):
        out = tmp_path / fmt
        assert main([*UPSCALE, str(src), "-o", str(out), "--format", fmt]) == 0
        assert f"16-bit input written at 8 bits per channel ({fmt}" in caplog.text
        with Image.open(next(out.iterdir())) as img:
            assert img.mode == "RGB"
            assert np.abs(np.asarray(img).astype(int) - 4).max() <= 1  # 1000 / 257 = 3.9


def test_alpha_into_jpeg_is_one_line_and_the_rest_complete(tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGBA", (6, 6), (10, 20, 30, 128)).save(src / "a.png")
    corpus.photo(src / "b.png")
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out), "--format", "jpg"]) == 1
    (line,) = _errors(capsys)
    assert "a.png has an alpha channel (RGBA), which JPEG cannot hold" in line
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "jpg", "--quality", "0"], "--quality must be 1..100, got 0"),
        (["--format", "webp", "--quality", "101"], "--quality must be 1..100, got 101"),
        (["--quality", "90"], "--quality applies to jpg and webp, not to png"),
        (["--suffix", "/x"], "--suffix '/x' must be plain text, not a path"),
        (["--suffix", "../x"], "must be plain text, not a path"),
        (["--suffix", ".."], "must be plain text, not a path"),
    ],
)
def test_bad_format_options_are_refused_before_any_work(args, message, tmp_path, capsys) -> None:
    src = corpus.photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out), *args]) == 2
    (line,) = _errors(capsys)
    assert message in line
    assert not out.exists()


def test_bad_format_and_quality_words_are_usage_errors(tmp_path, capsys) -> None:
    src = str(corpus.photo(tmp_path / "a.png"))
    for args in (["--format", "gif"], ["--format", "jpg", "--quality", "high"]):
        with pytest.raises(SystemExit) as exit_:
            main([*UPSCALE, src, "-o", str(tmp_path / "out"), *args])
        assert exit_.value.code == 2
    assert "invalid choice: 'gif'" in capsys.readouterr().err


def test_suffix_puts_outputs_beside_their_inputs(tmp_path) -> None:
    src = corpus.photo(tmp_path / "a.png")
    before = src.read_bytes()
    assert main([*UPSCALE, str(src), "-o", str(tmp_path), "--suffix", "_x2"]) == 0
    assert src.read_bytes() == before
    with Image.open(tmp_path / "a_x2.png") as img:
        assert img.size == (24, 16)


@pytest.mark.parametrize(
    ("names", "args"),
    [
        (["a.png", "a_x2.png"], ["--suffix", "_x2"]),  # a.png -> a_x2.png, an input
        (["a.jpg"], ["--format", "jpg"]),  # a.jpg -> a.jpg
        (["a.tiff"], ["--format", "tiff"]),
        (["a.JPG.png", "a.JPG"], ["--suffix", ".JPG"]),  # a.JPG.png -> a.JPG.png
    ],
)
def test_a_suffix_or_format_that_names_an_input_is_refused(names, args, tmp_path, capsys) -> None:
    paths = [corpus.photo(tmp_path / n, seed=i) for i, n in enumerate(names)]
    before = {p: p.read_bytes() for p in paths}
    inputs = [str(p) for p in paths]
    assert main([*UPSCALE, *inputs, "-o", str(tmp_path), *args]) == 2
    (line,) = _errors(capsys)
    assert "would overwrite the input" in line
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_16_bit_png_exif_orientation_is_applied_to_its_samples(tmp_path) -> None:
    """The 16-bit samples are turned upright as PIL turns the 8-bit view (EXIF 6: 90 degrees)."""
    deep = np.zeros((4, 6, 3), np.uint16)
    deep[0, :, 0] = 60000  # a red top row, stored 6 wide and 4 high
    exif = Image.Exif()
    exif[0x0112] = 6
    src = corpus.png_with_chunks(  # the eXIf chunk holds the TIFF data only
        corpus.png16(tmp_path / "turned.png", deep), before_idat=[(b"eXIf", exif.tobytes()[6:])]
    )
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 0
    shown = corpus.read_png16(out / "turned.png")
    assert shown.shape == (12, 8, 3)  # shown 4 wide, 6 high
    assert shown[:, -1, 0].min() > 50000 and shown[:, 0, 0].max() < 10000  # top row -> right


def test_16_bit_png_with_sbit_is_read_at_its_stored_values(tmp_path) -> None:
    """An sBIT chunk (12 significant bits) says how the samples were made, not how to read
    them: the samples are read as stored, as Pillow's 8-bit view shows them (pypng's asDirect
    shifted them down to 0..4095: 16x too dark)."""
    import png

    twelve = np.random.default_rng(3).integers(0, 4096, (6, 5 * 3), np.uint16)
    src = tmp_path / "sbit.png"
    with open(src, "wb") as fh:  # pypng scales 12-bit values to 16 and writes sBIT 12
        png.Writer(5, 6, greyscale=False, bitdepth=12).write(fh, twelve)
    assert b"sBIT" in src.read_bytes()
    _, _, rows, _ = png.Reader(filename=str(src)).read()
    stored = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(6, 5, 3)
    loaded = read_image(src)
    np.testing.assert_array_equal(loaded.deep, stored)
    with Image.open(src) as img:
        shown = np.asarray(img.convert("RGB")).astype(int)
    assert np.abs(loaded.rgb.astype(int) - shown).max() <= 1


@pytest.mark.parametrize(
    ("extra", "bad_crc"),
    [
        ({"before_idat": [(b"sBIT", b"\0\0\0")]}, ()),  # a pypng error-message bug showed
        ({"after_idat": [(b"tEXt", b"k\0v")]}, (b"tEXt",)),  # Pillow reads it
        ({}, (b"IDAT",)),  # Pillow checks no CRC of the image data
        ({"before_idat": [(b"bKGD", b"\0")]}, ()),  # malformed, ignored by Pillow
        ({"before_idat": [(b"sBIT", b"\x0c\x0c")]}, ()),
    ],
)
def test_16_bit_png_reads_what_pillow_reads(extra, bad_crc, tmp_path) -> None:
    """Chunks that do not make the pixels do not stop a 16-bit PNG Pillow reads."""
    deep = (np.random.default_rng(4).random((6, 5, 3)) * 65535).astype(np.uint16)
    src = corpus.png_with_chunks(corpus.png16(tmp_path / "odd.png", deep), bad_crc=bad_crc, **extra)
    with Image.open(src) as img:
        img.load()
    np.testing.assert_array_equal(read_image(src).deep, deep)


def test_16_bit_rgb_transparent_colour_becomes_alpha(tmp_path) -> None:
    deep = np.full((4, 4, 3), 1000, np.uint16)
    deep[0, 0] = (7, 8, 9)
    src = corpus.png_with_chunks(
        corpus.png16(tmp_path / "key.png", deep), before_idat=[(b"tRNS", b"\0\x07\0\x08\0\x09")]
    )
    loaded = read_image(src)
    assert loaded.deep_alpha is not None and loaded.deep_alpha[0, 0] == 0
    assert (loaded.deep_alpha.ravel()[1:] == 65535).all()


def test_16_bit_png_bomb_is_refused_before_it_is_inflated(tmp_path, capsys) -> None:
    """8x8 declared, 20 MB of image data: one line, holding at most a step of the inflated data
    (pypng inflated it whole and made rows of it: 1.34 GB for 100 MB, then a pypng error)."""
    import tracemalloc

    (tmp_path / "in").mkdir()
    bomb = corpus.png16_bomb(tmp_path / "in" / "bomb.png")
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(LBNetError, match=r"bomb\.png refused as a decompression bomb"):
            read_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak
    corpus.photo(tmp_path / "in" / "fine.png")
    assert main([*UPSCALE, str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 1
    (line,) = _errors(capsys)
    assert "bomb.png refused as a decompression bomb" in line
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["fine.png"]


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (9, 7), (16, 16)])
def test_interlaced_16_bit_png_is_read_whole(size, tmp_path) -> None:
    """Adam7 data is measured pass by pass (empty passes have no filter bytes): an interlaced
    file is read, not taken for a bomb."""
    import png

    w, h = size
    deep = (np.random.default_rng(5).random((h, w, 3)) * 65535).astype(np.uint16)
    src = tmp_path / "adam7.png"
    with open(src, "wb") as fh:
        png.Writer(w, h, greyscale=False, bitdepth=16, interlace=True).write(
            fh, deep.reshape(h, w * 3)
        )
    np.testing.assert_array_equal(read_image(src).deep, deep)


@pytest.mark.parametrize(("fmt", "width"), [("webp", 8192), ("jpg", 32751)])
def test_a_size_the_format_cannot_hold_is_one_line_before_the_model(
    fmt, width, tmp_path, capsys
) -> None:
    """WebP ends at 16383 pixels a side and JPEG at 65500: x2 of these is over by a few; it
    was a traceback (WebP) or stopped the batch (JPEG's OSError), with no file after it."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (width, 2), (90, 90, 90)).save(src / "a_wide.png")
    corpus.photo(src / "b.png")
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out), "--format", fmt]) == 1
    (line,) = _errors(capsys)
    limit = {"webp": 16383, "jpg": 65500}[fmt]
    assert f"a_wide.png gives {2 * width}x4 at x2, over the {limit} pixels per side" in line
    assert [p.name for p in out.iterdir()] == [f"b{OutputFormat(fmt).extension}"]


def test_an_encoder_error_is_one_line_for_that_file(tmp_path, capsys, monkeypatch) -> None:
    encode = OutputFormat.encode

    def failing(self, array, icc_profile=None):
        if array.shape[1] == 24:  # a.png, 12 wide
            raise OSError("broken data stream when writing image file")
        return encode(self, array, icc_profile)

    monkeypatch.setattr(OutputFormat, "encode", failing)
    src = tmp_path / "in"
    src.mkdir()
    corpus.photo(src / "a.png", width=12)
    corpus.photo(src / "b.png", width=10)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out), "--format", "jpg"]) == 1
    (line,) = _errors(capsys)
    assert "cannot write" in line and "a.jpg as jpg (broken data stream" in line
    assert [p.name for p in out.iterdir()] == ["b.jpg"]


def test_a_16_bit_image_is_planned_with_its_own_footprint(tmp_path, capsys) -> None:
    """140x140 at x2 in a 2 MB budget (0.26 MB of it the bicubic model's floor): the 8-bit
    image's buffers fit (1.7 MB), the 16-bit one's (16-bit samples in, a 16-bit PNG out: 2.3 MB)
    do not, and that is one line, not an overrun."""
    rng = np.random.default_rng(6)
    eight = tmp_path / "eight.png"
    Image.fromarray(rng.integers(0, 256, (140, 140, 3), np.uint8)).save(eight)
    deep = corpus.png16(tmp_path / "deep.png", rng.integers(0, 65536, (140, 140, 3), np.uint16))
    budget = ["--memory-budget", "2"]
    assert main([*UPSCALE, str(eight), "-o", str(tmp_path / "a"), *budget]) == 0
    assert main([*UPSCALE, str(deep), "-o", str(tmp_path / "b"), *budget]) == 1
    (line,) = _errors(capsys)
    assert "a 140x140 image needs 2 MB for its own buffers at x2" in line


def test_restore_puts_an_8_bit_alpha_beside_a_16_bit_result() -> None:
    """The public `restore` with an 8-bit alpha and a uint16 result: the alpha at 16 bits
    (uint8 * 257 raised OverflowError under NumPy 2)."""
    from lbnet_deploy.runtime.images import LoadedImage, restore

    alpha = np.full((3, 4), 200, np.uint8)
    loaded = LoadedImage(np.zeros((3, 4, 3), np.uint8), alpha, False, "RGBA")
    out = restore(loaded, np.full((6, 8, 3), 1000, np.uint16))
    assert out.dtype == np.uint16 and out.shape == (6, 8, 4)
    assert (out[..., :3] == 1000).all() and (out[..., 3] == 200 * 257).all()


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_a_grayscale_profile_stays_out_of_an_rgb_webp(mode, tmp_path, caplog) -> None:
    """WebP has no grayscale: the result is RGB(A), and the gray profile, which does not
    describe RGB pixels, is left out with a warning (PNG keeps both gray and profile)."""
    gray = corpus.gray_icc()
    src = tmp_path / "g.png"
    Image.new(mode, (6, 5), (90, 200)[: len(mode)]).save(src, icc_profile=gray)
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / "w"), "--format", "webp"]) == 0
    assert "its grayscale ICC profile is left out: WebP has no grayscale" in caplog.text
    with Image.open(tmp_path / "w" / "g.webp") as img:
        assert img.mode == ("RGB" if mode == "L" else "RGBA")
        assert img.info.get("icc_profile") is None
        assert np.abs(np.asarray(img)[..., :3].astype(int) - 90).max() <= 2
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / "p")]) == 0
    with Image.open(tmp_path / "p" / "g.png") as img:
        assert img.mode == mode and img.info.get("icc_profile") == gray


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_a_profile_too_large_to_read_back_is_left_out(fmt, tmp_path, caplog) -> None:
    """A valid 2 MB RGB profile (sRGB and padding): carried into a PNG, Pillow (and so we)
    could not open the result again; it is left out with a warning, and the output reads."""
    import struct

    big = bytearray(SRGB) + bytes(2 * 2**20)
    big[:4] = struct.pack(">I", len(big))  # the profile's own size field
    src = tmp_path / "big.tiff"
    Image.fromarray(texture(12, 10)).save(src, icc_profile=bytes(big))
    assert read_image(src).icc_profile is None
    assert "its ICC profile (2.0 MB) is not carried over" in caplog.text
    assert main([*UPSCALE, str(src), "-o", str(tmp_path / "o"), "--format", fmt]) == 0
    out = next((tmp_path / "o").iterdir())
    assert read_image(out).rgb.shape == (24, 20, 3)


@pytest.mark.parametrize("out", ["sub", "."])
def test_a_suffix_too_long_for_a_file_name_is_refused_before_any_work(
    out, tmp_path, capsys, monkeypatch
) -> None:
    """A 300-character --suffix: the model ran, then every file failed ("File name too long";
    with -o . the top-level handler caught it). A name that fits but whose temporary does not
    (14 bytes more) is refused too."""
    monkeypatch.chdir(tmp_path)
    src = corpus.photo(tmp_path / "a.png")
    for suffix in ("x" * 300, "x" * (255 - len("a.png") - 13)):
        assert main([*UPSCALE, str(src), "-o", out, "--suffix", suffix]) == 2
        (line,) = _errors(capsys)
        assert "bytes long;" in line and "at most (its temporary adds 14)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert main([*UPSCALE, str(src), "-o", out, "--suffix", "x" * (255 - 5 - 14)]) == 0
