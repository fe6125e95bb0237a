"""Graphs in 0..1 (`export --io unit`, lbnet.io): the scaling folded into the first and last
convolutions, the same results as the paper's 0..255 graph, and every consumer of a graph (the
runners, FP16 conversion and its scans, INT8 calibration, engines, Triton) feeding it its own
range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
from lbnet_deploy.export.trt_ops import op_histogram
from lbnet_deploy.metadata import from_metadata, model_facts
from lbnet_deploy.model.checkpoint import load_checkpoint
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner, create_session

from .conftest import stand_in_graph, texture

SIZE = (16, 16)
# The bound: a unit graph's output, x255, within 0.01 of the 0..255 graph's
BOUND = 0.01


def _export(ckpt: Path, out: Path, io: str, size: tuple[int, int] | None = SIZE) -> Path:
    model, _ = load_checkpoint(ckpt)
    return export_onnx(model, out, ExportOptions(input_size=size, io=io)).path  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pair(checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """The 0..255 and the 0..1 graph of one random-weight LBNet-T x4, fixed 16x16."""
    folder = tmp_path_factory.mktemp("io")
    ckpt = checkpoint("random-LBNet-T-x4")
    return _export(ckpt, folder / "t4-255.onnx", "255"), _export(
        ckpt, folder / "t4-unit.onnx", "unit"
    )


def _raw(path: Path, x: np.ndarray) -> np.ndarray:
    session = create_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _batch(seed: int = 0) -> np.ndarray:
    return texture(*SIZE, seed=seed).transpose(2, 0, 1)[None].astype(np.float32)


def test_unit_graph_matches_the_255_graph_with_no_extra_node(pair) -> None:
    g255, gunit = pair
    x = _batch()
    a, b = _raw(g255, x), _raw(gunit, x / 255)
    assert 0.2 < float(b.mean()) < 0.8  # it really gives 0..1
    assert np.abs(b * 255 - a).max() <= BOUND
    m255, munit = onnx.load(g255), onnx.load(gunit)
    assert op_histogram(m255) == op_histogram(munit)  # folded: no Mul/Div node added
    assert len(m255.graph.node) == len(munit.graph.node)
    assert from_metadata({p.key: p.value for p in munit.metadata_props})["io"] == "unit"
    assert from_metadata({p.key: p.value for p in m255.metadata_props})["io"] == "255"
    # the first conv (sub_mean) takes the x255; add_mean, the last, the / 255
    for graph in (m255, munit):
        convs = [n for n in graph.graph.node if n.op_type == "Conv"]
        assert (convs[0].input[1], convs[-1].input[1]) == ("sub_mean.weight", "add_mean.weight")
    w255, wunit = ({i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
                   for g in (m255, munit))  # fmt: skip
    np.testing.assert_allclose(wunit["sub_mean.weight"], 255 * w255["sub_mean.weight"], rtol=1e-6)
    np.testing.assert_allclose(wunit["sub_mean.bias"], w255["sub_mean.bias"])
    for key in ("add_mean.weight", "add_mean.bias"):
        np.testing.assert_allclose(wunit[key], w255[key] / 255, rtol=1e-6)


def test_runners_give_0_255_for_both_kinds(pair) -> None:
    g255, gunit = pair
    x = np.concatenate([_batch(0), _batch(1)])
    want = OnnxRuntimeRunner(g255).infer(x)
    unit = OnnxRuntimeRunner(gunit)
    assert unit.model_facts.io == "unit" and unit.model_facts.peak == 1.0
    assert np.abs(unit.infer(x) - want).max() <= BOUND
    from lbnet_deploy.runtime.openvino import OpenVINORunner

    assert np.abs(OpenVINORunner(gunit).infer(x) - want).max() <= BOUND


def test_an_unknown_io_is_one_line() -> None:
    raw = {"variant": "LBNet-T", "scale": "4", "io": "0..1"}
    with pytest.raises(LBNetError, match=r"f\.onnx: metadata says io '0\.\.1'; known: unit, 255"):
        model_facts(raw, "f.onnx")
    assert model_facts({"variant": "LBNet-T", "scale": "4"}, "old.onnx").io == "255"  # older file


def test_cli_export_writes_unit_by_default_and_255_when_asked(checkpoint, tmp_path, capsys) -> None:
    ckpt = str(checkpoint("random-LBNet-T-x4"))
    out = tmp_path / "t4.onnx"
    assert main(["export", ckpt, "-o", str(out), "--input-size", "8x8"]) == 0
    assert "0..1 I/O" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0 and "io: unit" in capsys.readouterr().out
    assert main(["export", ckpt, "-o", str(out), "--input-size", "8x8", "--io", "255"]) == 0
    assert OnnxRuntimeRunner(out).model_facts.io == "255"
    with pytest.raises(SystemExit) as exit_:
        main(["export", ckpt, "-o", str(tmp_path / "x.onnx"), "--io", "1"])
    assert exit_.value.code == 2 and "invalid choice: '1'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_fp16_unit_graph_is_scanned_and_runs_in_its_range(pair, tmp_path) -> None:
    """The FP16 file of a unit graph: converted, scanned on 0..1 patterns, and within parity's
    FP16 bound of the FP32 graph; its activation ranges are the 255 graph's (the scaling lives
    in the first and last convolutions only), which they would not be, were it fed 0..255."""
    from lbnet_deploy.export.fp16 import activation_ranges, write_fp16
    from lbnet_deploy.parity import TOLERANCES

    g255, gunit = pair
    f16 = tmp_path / "unit16.onnx"
    write_fp16(gunit, f16)
    runner = OnnxRuntimeRunner(f16)
    assert runner.model_facts.precision == "fp16" and runner.model_facts.io == "unit"
    x = _batch(2)
    assert np.abs(runner.infer(x) - OnnxRuntimeRunner(g255).infer(x)).max() <= TOLERANCES["fp16"][0]
    images = [texture(*SIZE, seed=3)]
    inner = {
        r.tensor: r.max_abs
        for r in activation_ranges(onnx.load(gunit), images)
        if r.kind != "output"
    }
    paper = {r.tensor: r.max_abs for r in activation_ranges(onnx.load(g255), images)}
    shared = [t for t in inner if t in paper]
    assert len(shared) > 100
    assert all(inner[t] == pytest.approx(paper[t], rel=1e-3, abs=1e-3) for t in shared)


def test_int8_calibration_of_a_unit_graph_feeds_0_1_crops(pair, photo_folder, tmp_path) -> None:
    """Calibrated on 0..1 crops, the unit graph's INT8 file keeps the same layers float as the
    255 graph's and gives the same image, within INT8's noise."""
    from lbnet_deploy.calibration.run import calibrate_file

    g255, gunit = pair
    reports = [
        calibrate_file(
            g, photo_folder, tmp_path / f"{g.stem}-i8.onnx", samples=4, max_psnr_drop=1.0
        )
        for g in (g255, gunit)
    ]
    assert reports[0].result.float_layers == reports[1].result.float_layers
    x = _batch(4)
    a, b = (OnnxRuntimeRunner(r.path).infer(x) for r in reports)
    assert OnnxRuntimeRunner(reports[1].path).model_facts.io == "unit"
    # the same INT8 graph up to float rounding: a value on a quantization boundary may flip
    # one step (the output's INT8 steps are ~1.2 of 0..255); a graph calibrated on 0..255 crops
    # would be off by tens
    assert np.abs(a - b).max() < 4 and np.abs(a - b).mean() < 0.5


def test_engine_of_a_unit_graph_is_fed_0_1(monkeypatch, tmp_path) -> None:
    """The sidecar carries lbnet.io; the runner scales into the engine and back out of it."""
    from lbnet_deploy.export.engine_build import BuildOptions, build_engine
    from lbnet_deploy.runtime.engine import TensorRTRunner

    from .fake_tensorrt import FakeTensorRT

    FakeTensorRT().install(monkeypatch)
    src = stand_in_graph(tmp_path / "u.onnx", [1, 3, 8, 8], io="unit")
    build_engine(src, tmp_path / "u.plan", BuildOptions())
    runner = TensorRTRunner(tmp_path / "u.plan")
    assert runner.model_facts.io == "unit"
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    y = runner.infer(x)  # the fake engine is nearest-neighbour x4
    np.testing.assert_allclose(y, x.repeat(4, axis=2).repeat(4, axis=3), rtol=1e-6)
    given = [slot.host_in for slot in runner._state.slots if slot.host_in.any()]
    assert given and all(float(h.max()) <= 1.0 for h in given)  # what the engine was given
    runner.close()


def test_triton_config_carries_the_range(pair, tmp_path) -> None:
    """Every config says lbnet.io, which a client scales its pixels by: a file made before the
    key existed (here: the key removed) is 0..255 and says so."""
    from lbnet_deploy.export.triton import config_text, model_io

    text = config_text(model_io(pair[1]), "sr", 8, 1, "KIND_CPU")
    assert 'parameters { key: "lbnet.io" value: { string_value: "unit" } }' in text
    old = onnx.load(pair[0])
    kept = [p for p in old.metadata_props if p.key != "lbnet.io"]
    assert len(kept) < len(old.metadata_props)
    del old.metadata_props[:]
    old.metadata_props.extend(kept)
    onnx.save(old, tmp_path / "old.onnx")
    text = config_text(model_io(tmp_path / "old.onnx"), "sr", 8, 1, "KIND_CPU")
    assert 'parameters { key: "lbnet.io" value: { string_value: "255" } }' in text


@pytest.mark.slow  # two official checkpoints exported twice each: ~40 s on 2 cores
@pytest.mark.parametrize("name", ["LBNet-T_X4.pt", "LBNet-X2.pt"])
def test_official_checkpoints_unit_within_bound(name: str, checkpoint, tmp_path) -> None:
    from .conftest import set5_lr

    ckpt = checkpoint(name)  # skips without ../shared/weights
    scale = 4 if "X4" in name else 2
    lr = set5_lr(scale, "baby")[:32, :32].transpose(2, 0, 1)[None].astype(np.float32)
    g255 = _export(ckpt, tmp_path / "a.onnx", "255", (32, 32))
    gunit = _export(ckpt, tmp_path / "b.onnx", "unit", (32, 32))
    assert np.abs(_raw(gunit, lr / 255) * 255 - _raw(g255, lr)).max() <= BOUND


def test_a_calibration_cache_of_the_other_range_is_refused(monkeypatch, tmp_path) -> None:
    """Implicit INT8 from a cache: the input's scale says which range it was calibrated in."""
    from lbnet_deploy.export.engine_build import BuildOptions, build_engine

    from .fake_tensorrt import FakeTensorRT

    FakeTensorRT().install(monkeypatch)
    unit = stand_in_graph(tmp_path / "u.onnx", [1, 3, 16, 16], io="unit")
    paper, matching = tmp_path / "255.cache", tmp_path / "unit.cache"
    paper.write_text("TRT-101300-EntropyCalibration2\ninput: 40008102\n")  # 255 / 127
    matching.write_text("TRT-101300-EntropyCalibration2\ninput: 3c010204\n")  # 1 / 127
    with pytest.raises(LBNetError, match=r"inputs up to 255, .*takes 0\.\.1 \(lbnet\.io\)"):
        build_engine(unit, tmp_path / "u.plan", BuildOptions(calibration_cache=paper))
    assert not (tmp_path / "u.plan").exists()
    assert build_engine(unit, tmp_path / "u.plan", BuildOptions(calibration_cache=matching))
