"""Model files that are plausible but malformed: checkpoints, ONNX metadata, engine sidecars.
Each is one line and a non-zero exit from every command that reads it, never a traceback.
Weight-free: the checkpoints are random LBNets, the graphs tiny stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from lbnet_deploy.cli import main

from . import corpus


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lbnet-deploy: error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("input_size", "banana", "not HxW"),
        ("input_size", "0x16", "out of range"),
        ("precision", "int4", "precision 'int4'"),
        ("scale", "seven", "not a number"),
        ("scale", "7", "scale 7"),
        ("variant", "SwinIR", "variant 'SwinIR'"),
        ("heads", "-2", "out of range"),
        ("batch", "many", "not a number"),
    ],
)
def test_onnx_metadata_that_lies_is_one_line(
    key: str, value: str, says: str, tmp_path: Path, capsys
) -> None:
    path = corpus.lying_graph(tmp_path / "m.onnx", real_scale=2)
    graph = onnx.load(path)
    props = {p.key: p.value for p in graph.metadata_props} | {f"lbnet.{key}": value}
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, path)
    img = corpus.photo(tmp_path / "a.png")
    assert main(["upscale", str(img), "-o", str(tmp_path / "o"), "--model", str(path)]) == 2
    assert says in _one_error(capsys)
    assert main(["triton", str(path), "--repository", str(tmp_path)]) == 2
    assert says in _one_error(capsys)


def test_graph_whose_shape_contradicts_its_metadata(tmp_path: Path, capsys) -> None:
    path = corpus.lying_graph(tmp_path / "m.onnx", real_scale=2)
    graph = onnx.load(path)
    for d, v in zip(graph.graph.input[0].type.tensor_type.shape.dim[2:], (32, 32), strict=True):
        d.dim_value = v
    onnx.helper.set_model_props(
        graph, {**{p.key: p.value for p in graph.metadata_props}, "lbnet.input_size": "64x64"}
    )
    onnx.save(graph, path)
    img = corpus.photo(tmp_path / "a.png")
    assert main(["upscale", str(img), "-o", str(tmp_path / "o"), "--model", str(path)]) == 2
    assert "contradicts itself" in _one_error(capsys)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01garbage", b"just some text that protobuf may parse"],
    ids=["empty", "binary", "text"],
)
def test_info_on_files_that_are_not_onnx(content: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    assert main(["info", str(path)]) == 2
    _one_error(capsys)


def test_info_ranges_on_a_foreign_graph(tmp_path: Path, capsys) -> None:
    path = corpus.lying_graph(tmp_path / "m.onnx")
    graph = onnx.load(path)
    del graph.metadata_props[:]
    onnx.save(graph, path)
    corpus.photo(tmp_path / "a.png")
    assert main(["info", str(path), "--ranges", "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not exported by lbnet-deploy" in err and "Traceback" not in err


GOOD_SIDECAR = {
    "lbnet": {"variant": "LBNet-T", "scale": "4", "heads": "6", "n_feats": "18"},
    "tensorrt": "10.3.0",
    "gpu": "Orin",
    "compute_capability": "8.7",
    "onnx_sha256": "0" * 64,
    "input_shape": [1, 3, 96, 96],
    "precision": "fp16",
    "strongly_typed": True,
}


@pytest.mark.parametrize(
    "change",
    [
        lambda d: [d],  # a JSON list
        lambda d: {**d, "lbnet": None},
        lambda d: {**d, "lbnet": {"scale": 4}},  # a number where a string belongs
        lambda d: {**d, "input_shape": [3, 96, 96]},
        lambda d: {**d, "input_shape": [1, 3, -1, 96]},
        lambda d: {**d, "input_shape": "1x3x96x96"},
        lambda d: {**d, "dtypes": ["int8", "int8"]},
        lambda d: {**d, "tensorrt": 10},
        lambda d: {**d, "lbnet": {**d["lbnet"], "precision": "fp8"}},
        lambda d: {**d, "strongly_typed": "no"},
        lambda d: {**d, "builder_flags": [1, {}]},
        lambda d: {**d, "dla_core": "0"},
        lambda d: {**d, "dla_core": -1},
        lambda d: {**d, "dla_core": True},
        lambda d: "NESTED",  # JSON nested deeper than the parser's stack (written raw below)
    ],
)
def test_sidecar_that_lies_is_one_line(change, tmp_path: Path, capsys) -> None:
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"engine bytes")
    changed = change(dict(GOOD_SIDECAR))
    text = "[" * 100000 + "]" * 100000 if changed == "NESTED" else json.dumps(changed)
    (tmp_path / "e.plan.json").write_text(text)
    assert main(["info", str(engine)]) == 2
    _one_error(capsys)
    assert main(["triton", str(engine), "--repository", str(tmp_path)]) == 2
    _one_error(capsys)


def test_empty_engine_with_a_good_sidecar(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"")
    (tmp_path / "e.plan.json").write_text(json.dumps(GOOD_SIDECAR))
    assert main(["info", str(engine)]) == 2
    assert "empty" in _one_error(capsys)


def test_sidecar_control_case_is_accepted(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"engine bytes")
    (tmp_path / "e.plan.json").write_text(json.dumps(GOOD_SIDECAR))
    assert main(["info", str(engine)]) == 0  # the cases above fail for their change alone


def test_sidecar_that_is_not_text(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"engine bytes")
    (tmp_path / "e.plan.json").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["info", str(engine)]) == 2
    _one_error(capsys)


def test_triton_refuses_a_gpu_engine_on_cpu(tmp_path: Path, capsys) -> None:
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"engine bytes")
    (tmp_path / "e.plan.json").write_text(json.dumps(GOOD_SIDECAR))
    assert main(["triton", str(engine), "--repository", str(tmp_path), "--cpu"]) == 2
    assert "GPUs only" in _one_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["e.plan", "e.plan.json"]


@pytest.mark.parametrize("name", ['a"b', "a b", "../up", ".hidden", "x/y", "a\\b", "é"])
def test_triton_model_names_that_would_break_the_config(name: str, tmp_path: Path, capsys) -> None:
    graph = corpus.lying_graph(tmp_path / "m.onnx", real_scale=2)
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(["triton", str(graph), "--repository", str(repo), "--name", name]) == 2
    _one_error(capsys)
    assert list(repo.iterdir()) == []


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight LBNet-T x2 saved as the official checkpoints are (a bare state dict)."""
    import torch

    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.lbnet import LBNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    torch.save(LBNet(describe("LBNet-T", 2)).state_dict(), path)
    return path


def test_checkpoint_with_one_tensor_of_the_wrong_shape(
    random_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import torch

    state = torch.load(random_checkpoint, weights_only=True)
    key = next(k for k, v in state.items() if v.ndim == 4 and v.shape[-1] == 3)
    state[key] = torch.zeros(*state[key].shape[:2], 5, 5)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    assert main(["export", str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    line = _one_error(capsys)
    assert "does not match" in line and "size mismatch" in line
    assert not (tmp_path / "x.onnx").exists()


def test_checkpoint_with_nan_weights_writes_no_image(
    random_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import torch

    state = torch.load(random_checkpoint, weights_only=True)
    key = next(k for k, v in state.items() if k.endswith("weight") and v.ndim == 4)
    state[key] = torch.full_like(state[key], float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    img = corpus.photo(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["upscale", str(img), "-o", str(out), "--model", str(bad), "--backend", "torch"]
    assert main([*args, "-q"]) == 1
    assert "NaN" in _one_error(capsys)
    assert not out.exists()
