"""`lbnet-deploy upscale` and `parity` as a user runs them (in-process through `main`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.cli import main

from .conftest import DATA, needs_data, needs_weights

pytestmark = [needs_weights, needs_data]

SET5_X4 = DATA / "Set5" / "LR_bicubic" / "X4"


@pytest.fixture
def t4_dynamic(export_cache) -> str:
    return str(export_cache("LBNet-T_X4.pt", None))


def test_upscale_every_set5_image(t4_dynamic: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["upscale", str(SET5_X4), "-o", str(out), "--model", t4_dynamic, "-q"]) == 0
    for lr_path in sorted(SET5_X4.glob("*.png")):
        lr = Image.open(lr_path)
        sr = Image.open(out / lr_path.name)
        assert sr.size == (4 * lr.size[0], 4 * lr.size[1])
        assert sr.mode == "RGB"
    assert "upscaled 5 image(s)" in capsys.readouterr().out


def test_named_model_is_exported_once_then_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    image = SET5_X4 / "birdx4.png"
    args = ["upscale", str(image), "--model", "lbnet-t-x2", "-q", "-o"]
    assert main([*args, str(tmp_path / "a")]) == 0
    assert "first use" in capsys.readouterr().err
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    assert main([*args, str(tmp_path / "b")]) == 0
    assert "first use" not in capsys.readouterr().err
    a = np.asarray(Image.open(tmp_path / "a" / "birdx4.png"))
    assert a.shape == (144, 144, 3)
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / "birdx4.png")))


def test_precision_fp16_converts_the_named_graph_once(
    t4_dynamic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    import onnx

    from lbnet_deploy.resolve import cached_onnx_path
    from lbnet_deploy.weights import sha256_file

    from .conftest import WEIGHTS

    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    sha = sha256_file(WEIGHTS / "LBNet-T_X4.pt")
    fp32 = cached_onnx_path(sha, "dynamic", "dyn", "fp32")
    fp32.parent.mkdir(parents=True)
    shutil.copyfile(t4_dynamic, fp32)  # the FP32 export a first run would have made
    image = str(SET5_X4 / "birdx4.png")
    args = ["upscale", image, "--model", "lbnet-t-x4", "-q", "-o"]
    assert main([*args, str(tmp_path / "h"), "--precision", "fp16"]) == 0
    assert "to FP16" in capsys.readouterr().err
    fp16 = cached_onnx_path(sha, "dynamic", "dyn", "fp16")
    meta = {p.key: p.value for p in onnx.load(fp16, load_external_data=False).metadata_props}
    assert meta["lbnet.precision"] == "fp16"
    assert main([*args, str(tmp_path / "h2"), "--precision", "fp16"]) == 0
    assert "to FP16" not in capsys.readouterr().err  # cached
    assert main([*args, str(tmp_path / "f")]) == 0
    half = np.asarray(Image.open(tmp_path / "h" / "birdx4.png")).astype(int)
    full = np.asarray(Image.open(tmp_path / "f" / "birdx4.png")).astype(int)
    assert np.abs(half - full).max() <= 1  # FP16 measured within 0.26 of FP32 (0..255)
    assert main(["upscale", image, "--model", t4_dynamic, "--precision", "fp16", "-o",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "has its own precision" in capsys.readouterr().err


def test_bad_inputs_fail_cleanly(t4_dynamic: str, tmp_path: Path, capsys) -> None:
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    bird = str(SET5_X4 / "birdx4.png")
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
    Image.open(SET5_X4 / "headx4.png").crop((0, 0, 20, 12)).save(folder / "head.png")
    out = tmp_path / "out"
    assert main(["upscale", str(folder), "--model", t4_dynamic, "-o", str(out), "-q"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["head.png"]
    assert "bad.png" in capsys.readouterr().err


def test_parity_passes_for_fp32_and_fails_a_tight_bound(
    export_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LBNET_DATA_DIR", str(DATA))
    model = str(export_cache("LBNet-T_X4.pt", (64, 64)))
    report = tmp_path / "p.json"
    assert main(["parity", model, "--reference", "lbnet-t-x4", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] and data["max_abs"] <= 0.01 and len(data["cases"]) == 5
    assert main(["parity", model, "--reference", "lbnet-t-x4", "--max-abs", "0"]) == 1


def test_parity_refuses_a_reference_of_another_scale(export_cache, capsys) -> None:
    model = str(export_cache("LBNet-T_X4.pt", (64, 64)))
    assert main(["parity", model, "--reference", "lbnet-t-x2"]) == 2
    assert "x4 but the reference is x2" in capsys.readouterr().err


def test_export_fp16_through_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "f16.onnx"
    args = ["export", "lbnet-t-x4", "-o", str(out), "--input-size", "24x24", "--precision", "fp16"]
    assert main(args) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "precision: fp16" in text and "fp16_keep_ops: LayerNormalization" in text


def test_calibrate_through_the_cli(export_cache, tmp_path: Path, capsys) -> None:
    import onnx

    from lbnet_deploy.calibration.trt_cache import read_cache

    fp32 = str(export_cache("LBNet-T_X4.pt", (24, 24)))
    out, cache = tmp_path / "i8.onnx", tmp_path / "i8.cache"
    photos = str(DATA / "SunHays80")
    args = ["calibrate", fp32, "--images", photos, "-o", str(out), "--samples", "8"]
    assert main([*args, "--trt-cache", str(cache)]) == 0
    assert "held-out PSNR drop" in capsys.readouterr().out
    graph = onnx.load(out)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["lbnet.precision"] == "int8" and "lbnet.int8_excluded" in meta
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    version, scales = read_cache(cache)
    assert version >= 10_00_00 and scales and all(s > 0 for s in scales.values())
    # an INT8 graph is not calibrated again
    assert main(["calibrate", str(out), "--images", photos, "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not an lbnet-deploy FP32 graph" in capsys.readouterr().err
