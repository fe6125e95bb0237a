"""`lbnet-deploy triton`: the config.pbtxt we write is parsed with Triton's own ModelConfig
message (tritonclient[grpc]), for an engine and for fixed- and dynamic-batch ONNX graphs."""

from __future__ import annotations

import os
import stat

import pytest
from google.protobuf import text_format

from lbnet_deploy.cli import main
from lbnet_deploy.export.engine_build import BuildOptions, build_engine
from lbnet_deploy.runtime.trt_common import EngineFacts

from .conftest import stand_in_graph as graph
from .fake_tensorrt import FakeTensorRT


def config_proto() -> object:
    """Triton's ModelConfig message module (skips the test where tritonclient is missing)."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2")


def parse(path) -> object:
    return text_format.Parse(path.read_text(), config_proto().ModelConfig())


def test_engine_becomes_a_tensorrt_plan_model(monkeypatch, tmp_path, capsys) -> None:
    FakeTensorRT().install(monkeypatch)
    engine = tmp_path / "t.plan"
    build_engine(graph(tmp_path / "g.onnx", [2, 3, 16, 24], "fp16"), engine, BuildOptions())
    repo = tmp_path / "repo"
    repo.mkdir()
    mask = os.umask(0o022)
    try:
        assert main(["triton", str(engine), "--repository", str(repo)]) == 0
    finally:
        os.umask(mask)
    out = capsys.readouterr().out
    assert "TensorRT 10.13.0.35" in out and "compute capability 8.9" in out
    folder = repo / "lbnet_t_x4_fp16"
    assert (folder / "1" / "model.plan").read_bytes() == engine.read_bytes()
    config = parse(folder / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 0
    assert list(config.input[0].dims) == [2, 3, 16, 24] and config.input[0].name == "input"
    assert list(config.output[0].dims) == [2, 3, 64, 96]
    assert config.parameters["lbnet.scale"].string_value == "4"
    assert config.instance_group[0].kind == config_proto().ModelInstanceGroup.KIND_GPU
    assert (
        stat.S_IMODE(folder.stat().st_mode) == 0o755
    )  # not mkdtemp's 0700: Triton's user reads it
    # the folder exists now: refused, nothing changed, no staging left behind
    assert main(["triton", str(engine), "--repository", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == ["lbnet_t_x4_fp16"]


def test_dynamic_batch_onnx_uses_tritons_batching(tmp_path) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    repo = tmp_path / "repo"
    repo.mkdir()
    args = ["triton", str(src), "--repository", str(repo), "--name", "sr", "--max-batch", "4"]
    assert main([*args, "--cpu", "--instances", "2"]) == 0
    config = parse(repo / "sr" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert list(config.input[0].dims) == [3, -1, -1]  # batch is Triton's
    assert config.HasField("dynamic_batching")
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == config_proto().ModelInstanceGroup.KIND_CPU
    assert (repo / "sr" / "1" / "model.onnx").read_bytes() == src.read_bytes()


def test_bad_inputs_are_one_line_errors(tmp_path, capsys) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 8, 8])
    (tmp_path / "e.plan").write_bytes(b"engine")
    no_scale = EngineFacts({"variant": "LBNet-T"}, "10.13.0.35", "G", "8.9", "", (1, 3, 8, 8),
                           "fp32", True)  # fmt: skip
    (tmp_path / "e.plan.json").write_text(no_scale.to_json())
    cases = [
        (["triton", str(src), "--repository", str(tmp_path / "nope")], "does not exist"),
        (["triton", str(tmp_path / "x.bin"), "--repository", str(tmp_path)], "give an engine"),
        (["triton", str(tmp_path / "x.plan"), "--repository", str(tmp_path)], "not found"),
        (["triton", str(src), "--repository", str(tmp_path), "--name", "../up"], "plain folder"),
        (
            ["triton", str(tmp_path / "e.plan"), "--repository", str(tmp_path)],
            "names no model scale",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.plan", "e.plan.json", "g.onnx"]
