"""Images and folders a hostile or unlucky user gives `upscale` and `eval`: one line per bad file,
a non-zero exit, the other files complete, nothing overwritten, nothing half-written.

Runs on the bicubic model (no checkpoints needed) unless a test says otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.cli import main

from ..conftest import real_checkpoint
from . import corpus

UPSCALE = ["upscale", "--model", "bicubic-x2", "-q"]


def _digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


# --- outputs that are inputs -------------------------------------------------------------


@pytest.mark.parametrize("how", ["same folder", "dot-dot path", "symlinked folder", "hard link"])
def test_output_that_is_an_input_is_refused_before_any_work(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    corpus.photo(src / "a.png")
    corpus.photo(src / "b.png", seed=1)
    out = src
    if how == "dot-dot path":
        out = src / ".." / "photos"
    elif how == "symlinked folder":
        out = tmp_path / "link"
        out.symlink_to(src)
    elif how == "hard link":
        out = tmp_path / "out"
        out.mkdir()
        os.link(src / "a.png", out / "a.png")
    before = _digest(src)
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 2
    (line,) = _errors(capsys)
    assert "would overwrite the input" in line
    assert _digest(src) == before  # not one input replaced


def test_output_beside_the_inputs_does_not_replace_an_original(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = corpus.photo(tmp_path / "a.jpg")
    original = corpus.photo(tmp_path / "a.png", 50, 50, seed=4)
    before = original.read_bytes()
    assert main([*UPSCALE, str(src), "-o", str(tmp_path)]) == 2
    assert "beside the inputs" in _errors(capsys)[0]
    assert original.read_bytes() == before
    assert main([*UPSCALE, str(corpus.photo(tmp_path / "b.jpg")), "-o", str(tmp_path)]) == 0


def test_output_file_symlinked_to_an_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = corpus.photo(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(src)
    before = src.read_bytes()
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 2
    assert "would overwrite the input" in _errors(capsys)[0]
    assert src.read_bytes() == before


def test_export_onto_its_checkpoint_is_refused(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: refused before loading")
    assert main(["export", str(ckpt), "-o", str(ckpt)]) == 2
    assert "would overwrite the input" in _errors(capsys)[0]
    assert ckpt.read_bytes() == b"not read: refused before loading"


def test_calibrate_onto_its_model_is_refused(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    args = ["calibrate", str(model), "--images", str(tmp_path), "-o"]
    assert main([*args, str(model)]) == 2
    assert main([*args, str(tmp_path / "q.onnx"), "--trt-cache", str(model)]) == 2
    assert all("would overwrite the input" in line for line in _errors(capsys))
    assert model.read_bytes() == b"x"


def test_eval_save_sr_into_the_dataset_is_refused(tmp_path: Path, capsys) -> None:
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    corpus.photo(hr / "a.png", 16, 16)
    before = _digest(hr)
    args = ["eval", "--model", "bicubic", "--scale", "2", "--dataset", str(tmp_path / "set")]
    assert main([*args, "--save-sr", str(hr), "-q"]) == 2
    assert f"--save-sr {hr} is inside the dataset" in _errors(capsys)[0]
    assert _digest(hr) == before


# --- decompression bombs and the memory budget -------------------------------------------


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ((20000, 20000), "decompression bomb"),  # over Pillow's own limit
        ((12000, 12000), "memory budget"),  # under Pillow's error limit, over ours
        ((6000, 6000), "memory budget"),  # under Pillow's warning limit too
        ((65535, 60), "memory budget"),  # a long strip
    ],
)
def test_bomb_in_a_folder_is_one_line_and_the_rest_complete(
    size: tuple[int, int], says: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    corpus.photo(src / "a.png")
    corpus.png_header_only(src / "huge.png", *size)
    corpus.photo(src / "z.png", seed=2)
    real_load = Image.Image.load

    def load(img: Image.Image):  # refused from the header: the bomb is never decoded
        assert img.size != size, "the bomb's pixels were decoded"
        return real_load(img)

    monkeypatch.setattr(Image.Image, "load", load)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out), "--memory-budget", "256"]) == 1
    (line,) = _errors(capsys)
    assert "huge.png" in line and says in line
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "z.png"]


@pytest.mark.parametrize(
    ("size", "budget", "says"),
    [((20000, 20000), [], "decompression bomb"), ((3000, 3000), ["--memory-budget", "64"],
     "memory budget")],
)  # fmt: skip
def test_bomb_in_eval_is_one_line(size, budget, says, tmp_path: Path, capsys) -> None:
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    corpus.photo(hr / "a.png", 16, 16)
    corpus.png_header_only(hr / "b.png", *size)
    report = tmp_path / "r.json"
    args = ["eval", "--model", "bicubic", "--scale", "2", "--dataset", str(tmp_path / "set")]
    assert main([*args, *budget, "--json", str(report), "-q"]) == 1  # a scored, b reported
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "b.png" in err and says in err and "scored 1 of 2" in err
    data = json.loads(report.read_text())
    assert [i["name"] for i in data["images"]] == ["a"] and data["failed"] == ["b"]


def test_image_whose_buffers_exceed_the_budget_is_refused_by_its_header(tmp_path, capsys) -> None:
    # 3000x3000 at x2 needs ~800 MB for its canvas alone: over 256 MB, refused before decoding
    corpus.png_header_only(tmp_path / "big.png", 3000, 3000)
    out = tmp_path / "out"
    assert (
        main([*UPSCALE, str(tmp_path / "big.png"), "-o", str(out), "--memory-budget", "256"]) == 1
    )
    assert "over the" in _errors(capsys)[0]
    assert not out.exists()  # the folder this run created is gone again


# --- what an image file says about itself ------------------------------------------------


def _upscale_one(path: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "out"
    assert main([*UPSCALE, str(path), "-o", str(out)]) == 0
    return np.asarray(Image.open(out / f"{path.stem}.png"))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    sr = _upscale_one(corpus.exif_rotated_jpeg(tmp_path / "phone.jpg", 12, 8), tmp_path)
    assert sr.shape[:2] == (24, 16)  # shown 8 wide, 12 high: rotated as a viewer shows it


def test_sixteen_bit_pgm_with_small_values_stays_dark(tmp_path: Path) -> None:
    sr = _upscale_one(corpus.sixteen_bit_pgm(tmp_path / "deep.pgm", value=200), tmp_path)
    assert sr.dtype == np.uint16  # a 16-bit PNG, for a 16-bit input
    assert abs(int(sr.max()) - 200) <= 1 and abs(int(sr.min()) - 200) <= 1  # 200 of 65535


def test_float_tiff_in_unit_range_is_not_black(tmp_path: Path) -> None:
    sr = _upscale_one(corpus.float_tiff(tmp_path / "f.tif", value=0.5), tmp_path)
    assert abs(float(sr.mean()) - 127.5) <= 1


def test_thirty_two_bit_integer_tiff_is_refused_not_guessed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((4, 4), 128, np.int32), mode="I").save(path)
    assert main([*UPSCALE, str(path), "-o", str(tmp_path / "out")]) == 1
    assert "32-bit integer" in _errors(capsys)[0]


def test_export_to_a_place_that_cannot_be_written_fails_before_loading(
    tmp_path: Path, capsys
) -> None:
    junk = tmp_path / "x.pt"
    junk.write_bytes(b"not a checkpoint: never read")
    (tmp_path / "file").write_text("a file")
    assert main(["export", str(junk), "-o", str(tmp_path / "file" / "x.onnx")]) == 2
    assert "not a folder" in _errors(capsys)[0]  # not the checkpoint's error: checked first


def test_animated_gif_in_a_folder_is_picked_and_warned(tmp_path: Path, caplog) -> None:
    src = tmp_path / "in"
    src.mkdir()
    corpus.animated_gif(src / "anim.gif")
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 0
    assert "3 frames; only the first" in caplog.text
    assert (out / "anim.png").is_file()


@pytest.mark.parametrize(("space", "kept"), [("sRGB", True), ("LAB", False)])
def test_icc_profile_is_carried_over_where_it_describes_the_pixels(
    space: str, kept: bool, tmp_path: Path
) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()
    src = tmp_path / "wide.jpg"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(src, icc_profile=profile)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 0
    carried = Image.open(out / "wide.png").info.get("icc_profile")
    assert carried == (profile if kept else None)  # a Lab profile does not describe RGB pixels


@pytest.mark.parametrize("kind", ["gif", "tiff", "jpeg-exif", "png"])
def test_corrupt_files_are_one_line_whatever_pillow_raises(kind: str, tmp_path: Path) -> None:
    """Seeded byte flips of small real files: every variant decodes or is one LBNetError."""
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.images import read_image

    seed_file = {
        "gif": lambda p: corpus.animated_gif(p.with_suffix(".gif")),
        "tiff": lambda p: corpus.photo(p.with_suffix(".tif")),
        "jpeg-exif": lambda p: corpus.exif_rotated_jpeg(p.with_suffix(".jpg")),
        "png": lambda p: corpus.photo(p.with_suffix(".png")),
    }[kind](tmp_path / "seed")
    data = bytearray(seed_file.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(150):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            mutated[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"m{i}{seed_file.suffix}"
        path.write_bytes(bytes(mutated))
        try:
            read_image(path)
        except LBNetError as exc:
            assert "\n" not in str(exc)


def test_symlink_loop_in_a_folder_is_one_line(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    corpus.photo(src / "a.png")
    (src / "loop.png").symlink_to("loop.png")
    out = tmp_path / "out"
    assert main([*UPSCALE, str(src), "-o", str(out)]) == 1
    (line,) = _errors(capsys)
    assert "loop.png" in line
    assert [p.name for p in out.iterdir()] == ["a.png"]


def test_a_literal_name_with_brackets_is_that_file(tmp_path: Path) -> None:
    corpus.photo(tmp_path / "img[1].png", 6, 4)
    corpus.photo(tmp_path / "img1.png", 10, 4, seed=5)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(tmp_path / "img[1].png"), "-o", str(out)]) == 0
    assert Image.open(out / "img[1].png").size == (12, 8)  # not img1.png's 20x8
    assert not (out / "img1.png").exists()


def test_outputs_that_are_inputs_of_other_commands(tmp_path: Path, capsys) -> None:
    graph = corpus.lying_graph(tmp_path / "m.onnx", real_scale=2)
    corpus.photo(tmp_path / "a.png")
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    corpus.photo(hr / "a.png", 16, 16)
    before = graph.read_bytes()
    dataset = ["--dataset", str(tmp_path / "set"), "-q"]
    cases = [
        ["eval", "--model", str(graph), *dataset, "--json", str(graph)],
        ["parity", str(graph), "--reference", "lbnet-t-x2", "--json", str(graph)],
        ["calibrate", str(graph), "--images", str(tmp_path), "-o", str(tmp_path / "q.onnx"),
         "--trt-cache", str(tmp_path / "q.onnx")],
        ["calibrate", str(graph), "--images", str(tmp_path), "-o", str(tmp_path / "q.onnx"),
         "--trt-cache", str(tmp_path / "a.png")],
        ["build", str(graph), "-o", str(tmp_path / "e.plan"), "--input-size", "16x16",
         "--timing-cache", str(graph)],
        ["build", str(graph), "-o", str(tmp_path / "e.plan"), "--input-size", "16x16",
         "--timing-cache", str(tmp_path / "e.plan.json")],
    ]  # fmt: skip
    for argv in cases:
        assert main(argv) == 2, argv
        assert "would overwrite" in _errors(capsys)[0], argv
    assert graph.read_bytes() == before
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "e.plan").exists()


# --- model files that lie ----------------------------------------------------------------


@pytest.mark.parametrize("nan", [False, True], ids=["wrong scale", "NaN output"])
def test_model_that_lies_is_one_line_per_image(nan: bool, tmp_path: Path, capsys) -> None:
    liar = corpus.lying_graph(tmp_path / "liar.onnx", real_scale=2 if nan else 3, nan=nan)
    img = corpus.photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["upscale", str(img), "-o", str(out), "--model", str(liar), "-q"]) == 1
    (line,) = _errors(capsys)
    assert ("NaN" in line) if nan else ("not scale x its input" in line)
    assert not out.exists()


# --- reports -----------------------------------------------------------------------------


def test_eval_json_of_a_perfect_image_is_valid_json(tmp_path: Path) -> None:
    # bicubic-x1 cannot be asked for; a flat image is reproduced exactly by bicubic: PSNR inf
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    Image.new("RGB", (16, 16), (90, 120, 30)).save(hr / "flat.png")
    report = tmp_path / "r.json"
    args = ["eval", "--model", "bicubic", "--scale", "2", "--dataset", str(tmp_path / "set")]
    assert main([*args, "--json", str(report), "-q"]) == 0
    data = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["images"][0]["psnr_y"] is None  # infinite: null, not the invalid `Infinity`


def test_json_folder_is_checked_before_the_run(tmp_path: Path, capsys) -> None:
    hr = tmp_path / "set" / "HR"
    hr.mkdir(parents=True)
    corpus.photo(hr / "a.png", 16, 16)
    (tmp_path / "file").write_text("a file, not a folder")
    args = ["eval", "--model", "bicubic", "--scale", "2", "--dataset", str(tmp_path / "set")]
    assert main([*args, "--json", str(tmp_path / "file" / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "not a folder" in captured.err and "error:" in captured.err
    assert "PSNR" not in captured.out and "dB" not in captured.err  # nothing was scored first


# --- interruptions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "fmt"), [(signal.SIGTERM, "png"), (signal.SIGINT, "png"), (signal.SIGTERM, "webp")]
)
def test_interrupted_upscale_leaves_no_temporaries(sig: int, fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        corpus.photo(src / f"{i:02d}.png", 160, 120, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lbnet_deploy.cli", *UPSCALE, str(src), "-o", str(out)]
    cmd += ["--format", fmt]

    def default_sigint() -> None:
        # a test run started in the background (`cmd &`, nohup) hands its children SIGINT
        # ignored, and Python then leaves it ignored: the user at a terminal has the default
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and any(out.glob(f"*.{fmt}"))):
        time.sleep(0.02)  # interrupt once it is writing
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143), err
    assert "interrupted" in err
    assert not list(out.glob(".*")), "temporaries left behind"
    for done in out.glob(f"*.{fmt}"):  # every final-named file is whole
        with Image.open(done) as img:
            img.load()
            assert img.size == (320, 240)


def test_stale_temporaries_of_our_pattern_are_cleaned(tmp_path: Path) -> None:
    from lbnet_deploy.runtime.atomic import write_bytes_atomic

    old = tmp_path / ".a.png.0123abcd.tmp"
    young = tmp_path / ".a.png.4567abcd.tmp"
    other = tmp_path / ".b.png.0123abcd.tmp"
    for p in (old, young, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    write_bytes_atomic(tmp_path / "a.png", b"whole")
    assert not old.exists()  # ours, for this file, stale
    assert young.exists()  # may be a concurrent writer's
    assert other.exists()  # another file's: cleaned when that file is written
    assert (tmp_path / "a.png").read_bytes() == b"whole"


def test_interrupt_while_creating_a_temporary_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lbnet_deploy.runtime import atomic

    real_open = os.open

    def open_then_interrupt(path: str, flags: int, mode: int = 0o777) -> int:
        os.close(real_open(path, flags, mode))  # the file exists ...
        raise KeyboardInterrupt  # ... and the signal arrives before its descriptor returns

    monkeypatch.setattr(atomic.os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []


# --- options out of range ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["export", "x.pt", "-o", "x.onnx", "--batch", "0"],
        ["export", "x.pt", "-o", "x.onnx", "--batch", "-3"],
        [*UPSCALE, "a.png", "-o", "out", "--tile", "0"],
        [*UPSCALE, "a.png", "-o", "out", "--threads", "-1"],
        [*UPSCALE, "a.png", "-o", "out", "--batch", "two"],
        ["calibrate", "m.onnx", "--images", "p", "-o", "q.onnx", "--samples", "0"],
        ["calibrate", "m.onnx", "--images", "p", "-o", "q.onnx", "--max-psnr-drop", "-0.1"],
        ["calibrate", "m.onnx", "--images", "p", "-o", "q.onnx", "--max-psnr-drop", "nan"],
        ["calibrate", "m.onnx", "--images", "p", "-o", "q.onnx", "--max-psnr-drop", "x"],
    ],
)
def test_counts_out_of_range_are_usage_errors(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert any(s in err for s in ("must be at least 1", "whole number", "dB >= 0", "of dB"))


def test_scale_mismatch_is_found_before_a_first_use_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(tmp_path / "no-weights"))  # nothing to load
    img = corpus.photo(tmp_path / "a.png")
    args = ["upscale", str(img), "-o", str(tmp_path / "o"), "--model", "lbnet-t-x2"]
    assert main([*args, "--scale", "4"]) == 2
    assert "x2 model, but --scale 4" in _errors(capsys)[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()


def test_threads_are_bounded_by_the_cpus_available() -> None:
    from lbnet_deploy.runtime.onnxrt import bounded_threads, default_threads

    assert bounded_threads(100000) == default_threads()
    assert bounded_threads(1) == 1
    assert bounded_threads(None) == default_threads()


def test_export_of_a_name_onto_the_checkpoint_it_resolves_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    weights = tmp_path / "weights"
    weights.mkdir()
    ckpt = weights / "LBNet-T_X2.pt"
    shutil.copy(real_checkpoint("LBNet-T_X2.pt"), ckpt)
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(weights))
    before = ckpt.read_bytes()
    assert main(["export", "lbnet-t-x2", "-o", str(ckpt), "--dynamic"]) == 2
    assert "would overwrite the input" in _errors(capsys)[0]
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("names", [("a.png", "a.jpg"), ("A.png", "a.jpg"), ("IMG.png", "img.PNG")])
def test_inputs_sharing_a_base_name_up_to_case_are_refused(names, tmp_path, capsys) -> None:
    """Their outputs would share a name: A.png and a.png are one file on the case-insensitive
    file systems of macOS and Windows, where the second replaced the first."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(names):
        corpus.photo(folder / name, seed=i)
    out = tmp_path / "out"
    assert main([*UPSCALE, str(folder), "-o", str(out)]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "share the base name" in line and not out.exists()
