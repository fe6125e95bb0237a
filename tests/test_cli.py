"""`lbnet-deploy upscale` and `parity` as a user runs them (in-process through `main`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.cli import main

from .conftest import RANDOM_TOL, texture

T4 = "random-LBNet-T-x4"


@pytest.fixture
def t4_dynamic(export_cache) -> str:
    return str(export_cache(T4))


def test_upscale_a_folder_of_images_of_every_size(t4_dynamic: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(1, 1), (3, 5), (37, 29), (64, 48)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(texture(h, w, seed=i)).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    assert main(["upscale", str(folder), "-o", str(out), "--model", t4_dynamic, "-q"]) == 0
    for i, (h, w) in enumerate(sizes):
        sr = Image.open(out / f"img{i}.png")
        assert sr.size == (4 * w, 4 * h) and sr.mode == "RGB"
    assert "upscaled 4 image(s)" in capsys.readouterr().out


def test_a_checkpoint_is_exported_once_then_cached(
    checkpoint, export_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    from lbnet_deploy.export import onnx_export

    exported: list[Path] = []
    graph = export_cache(T4)  # the run's export of the same file, made before the patch

    def export_copy(model, path, options) -> None:
        exported.append(Path(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # as export_onnx's save does
        shutil.copyfile(graph, path)

    monkeypatch.setattr(onnx_export, "export_onnx", export_copy)
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    image = tmp_path / "lr.png"
    Image.fromarray(texture(20, 24)).save(image)
    args = ["upscale", str(image), "--model", str(checkpoint(T4)), "-q", "-o"]
    assert main([*args, str(tmp_path / "a")]) == 0
    assert "first use" in capsys.readouterr().err
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert cached == exported and len(cached) == 1  # exported into the cache, dynamic
    assert "-dynamic-bdyn-fp32-" in cached[0].name
    assert main([*args, str(tmp_path / "b")]) == 0
    assert "first use" not in capsys.readouterr().err and len(exported) == 1
    a = np.asarray(Image.open(tmp_path / "a" / "lr.png"))
    assert a.shape == (80, 96, 3)
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / "lr.png")))


def test_precision_fp16_converts_the_cached_graph_once(
    checkpoint, t4_dynamic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    import onnx

    from lbnet_deploy.resolve import cached_onnx_path
    from lbnet_deploy.weights import sha256_file

    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = str(checkpoint(T4))
    sha = sha256_file(ckpt)
    fp32 = cached_onnx_path(sha, "dynamic", "dyn", "fp32")
    fp32.parent.mkdir(parents=True)
    shutil.copyfile(t4_dynamic, fp32)  # the FP32 export a first run would have made
    image = tmp_path / "lr.png"
    Image.fromarray(texture(24, 20)).save(image)
    args = ["upscale", str(image), "--model", ckpt, "-q", "-o"]
    assert main([*args, str(tmp_path / "h"), "--precision", "fp16"]) == 0
    assert "to FP16" in capsys.readouterr().err
    fp16 = cached_onnx_path(sha, "dynamic", "dyn", "fp16")
    meta = {p.key: p.value for p in onnx.load(fp16, load_external_data=False).metadata_props}
    assert meta["lbnet.precision"] == "fp16"
    assert main([*args, str(tmp_path / "h2"), "--precision", "fp16"]) == 0
    assert "to FP16" not in capsys.readouterr().err  # cached
    assert main([*args, str(tmp_path / "f")]) == 0
    half = np.asarray(Image.open(tmp_path / "h" / "lr.png")).astype(int)
    full = np.asarray(Image.open(tmp_path / "f" / "lr.png")).astype(int)
    assert 0 < np.abs(half - full).max() <= 2  # FP16 ran (differs), and stays close
    assert main(["upscale", str(image), "--model", t4_dynamic, "--precision", "fp16", "-o",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "has its own precision" in capsys.readouterr().err


def test_bad_inputs_fail_cleanly(t4_dynamic: str, tmp_path: Path, capsys) -> None:
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    bird = str(tmp_path / "bird.png")
    Image.fromarray(texture(72, 72)).save(bird)
    cases = [
        ([str(tmp_path / "missing.png")], "input not found"),
        ([str(noise)], "not an image"),
        ([bird, "--scale", "2"], "x4 model, but --scale 2"),
        ([bird, "--tile", "900"], "over the memory budget"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        assert main(["upscale", *args, "--model", t4_dynamic, "-o", str(out), "-q"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) <= 3 and message in err[0], err
        assert not out.exists() or not any(out.iterdir()), args


def test_one_bad_file_does_not_stop_a_folder(t4_dynamic: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"not a png")
    Image.fromarray(texture(12, 20)).save(folder / "head.png")
    out = tmp_path / "out"
    assert main(["upscale", str(folder), "--model", t4_dynamic, "-o", str(out), "-q"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["head.png"]
    assert "bad.png" in capsys.readouterr().err


def test_parity_passes_for_fp32_and_fails_a_tight_bound(
    export_cache, checkpoint, tmp_path: Path
) -> None:
    model = str(export_cache(T4, (16, 16)))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(texture(96, 80, seed=i)).save(photos / f"p{i}.png")
    report = tmp_path / "p.json"
    args = ["parity", model, "--reference", str(checkpoint(T4)), "--images", str(photos)]
    assert main([*args, "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] and 0 < data["max_abs"] <= RANDOM_TOL
    assert len(data["cases"]) == 3
    assert main([*args, "--max-abs", "0"]) == 1


def test_parity_refuses_a_reference_of_another_scale(export_cache, checkpoint, capsys) -> None:
    model = str(export_cache(T4, (16, 16)))
    assert main(["parity", model, "--reference", str(checkpoint("random-LBNet-T-x2"))]) == 2
    assert "x4 but the reference is x2" in capsys.readouterr().err


def test_calibrate_through_the_cli(
    export_cache, photo_folder: Path, tmp_path: Path, capsys
) -> None:
    import onnx

    from lbnet_deploy.calibration.trt_cache import read_cache

    fp32 = str(export_cache(T4, (16, 16)))  # calibration time grows with the crop: small
    out, cache = tmp_path / "i8.onnx", tmp_path / "i8.cache"
    args = ["calibrate", fp32, "--images", str(photo_folder), "-o", str(out), "--samples", "8"]
    args += ["--max-psnr-drop", "99"]  # random weights: no search for float layers (test_int8's)
    assert main([*args, "--trt-cache", str(cache)]) == 0
    assert "held-out PSNR drop" in capsys.readouterr().out
    graph = onnx.load(out)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["lbnet.precision"] == "int8" and meta["lbnet.int8_float_layers"] == ""
    assert meta["lbnet.int8_mac_share"] == "1.0000" and meta["lbnet.int8_placement"] == "tensorrt"
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "100.0% of the conv and linear multiply-adds run INT8" in shown
    assert "int8_float_layers: none" in shown
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    version, scales = read_cache(cache)
    assert version >= 10_00_00 and scales and all(s > 0 for s in scales.values())
    # an INT8 graph is not calibrated again
    again = ["calibrate", str(out), "--images", str(photo_folder), "-o", str(tmp_path / "x.onnx")]
    assert main(again) == 2
    assert "not an lbnet-deploy FP32 graph" in capsys.readouterr().err


def test_parity_photos_default_to_set5_where_the_data_is_else_matplotlibs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lbnet_deploy.parity import default_images

    hr = tmp_path / "Set5" / "HR"
    hr.mkdir(parents=True)
    for name in ("b.png", "a.png"):
        Image.fromarray(texture(8, 8)).save(hr / name)
    monkeypatch.setenv("LBNET_DATA_DIR", str(tmp_path))
    assert default_images() == [hr / "a.png", hr / "b.png"]
    monkeypatch.setenv("LBNET_DATA_DIR", str(tmp_path / "elsewhere"))
    (photo,) = default_images()
    assert photo.name == "grace_hopper.jpg" and Image.open(photo).size[0] > 64


def test_no_help_text_shows_an_unfilled_placeholder() -> None:
    """No option's help shows a "{NAME}" left from a string meant to be an f-string (export's
    --io said "(default {IO_FOR_TOOLS})")."""
    import argparse
    import re

    from lbnet_deploy.cli import build_parser

    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands.choices) > 5
    for name, sub in commands.choices.items():
        for action in sub._actions:  # argparse fills %(...)s itself; braces are ours
            assert not re.search(r"\{[A-Za-z_][A-Za-z0-9_.]*\}", action.help or ""), (name, action)
