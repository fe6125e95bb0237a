"""The OpenVINO backend on the weight-free graphs: same output as the reference, the precision
it says, bounded compiled shapes, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.loaders import open_runner

from .conftest import RANDOM_TOL, foreign_graph, texture

ov = pytest.importorskip("openvino", reason="openvino is not installed (lbnet-deploy[openvino])")

from lbnet_deploy.runtime.openvino import COMPILED_SHAPES, OpenVINORunner  # noqa: E402

T4 = "random-LBNet-T-x4"


def _cpu_has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _batch(h: int, w: int, n: int = 1, seed: int = 0) -> np.ndarray:
    return np.stack([texture(h, w, seed + i).transpose(2, 0, 1) for i in range(n)]).astype(
        np.float32
    )


def test_matches_the_reference_on_dynamic_and_fixed_graphs(export_cache, checkpoint) -> None:
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    reference = TorchRunner(checkpoint(T4))
    dyn = OpenVINORunner(export_cache(T4))
    fixed = OpenVINORunner(export_cache(T4, (16, 16)))
    assert dyn.input_size is None and fixed.input_size == (16, 16) and fixed.max_batch == 1
    assert (dyn.scale, dyn.model_facts.variant, dyn.model_facts.precision) == (4, "LBNet-T", "fp32")
    for runner, batch in (
        (dyn, _batch(37, 29)),
        (dyn, _batch(16, 24, n=2)),
        (fixed, _batch(16, 16, n=3)),
    ):
        out = runner.infer(batch)
        assert out.shape == (batch.shape[0], 3, 4 * batch.shape[2], 4 * batch.shape[3])
        assert np.abs(out - reference.infer(batch)).max() < RANDOM_TOL
    with pytest.raises(ValueError, match="takes"):
        fixed.infer(_batch(16, 20))


def test_names_and_checkpoints_run_in_the_form_openvino_fuses(
    export_cache, checkpoint, shared_cache
) -> None:
    """OpenVINO is given the flat attention (fused into one kernel there; README "CPU
    backends"), with the head dim padded for BF16; ONNX Runtime keeps TensorRT's form."""
    for form in ("batched", "flat"):
        export_cache(T4, form=form)  # the first-use exports, shared with the other tests
    ckpt = str(checkpoint(T4))
    assert open_runner(ckpt, "ort").model_facts.extra["form"] == "batched"
    runner = open_runner(ckpt, "openvino")
    assert runner.model_facts.extra["form"] == "flat"
    assert (
        np.abs(runner.infer(_batch(21, 17)) - open_runner(ckpt, "ort").infer(_batch(21, 17))).max()
        < RANDOM_TOL
    )
    from lbnet_deploy.runtime.registry import BACKENDS

    assert BACKENDS["openvino"].form("bf16") == "flat16"


def test_results_are_copies_not_the_requests_buffer(export_cache) -> None:
    runner = OpenVINORunner(export_cache(T4))
    first = runner.infer(_batch(16, 16, seed=1))
    kept = first.copy()
    runner.infer(_batch(16, 16, seed=2))  # same shape: same request, its buffer rewritten
    assert np.array_equal(first, kept)


def test_a_shape_is_compiled_for_when_it_runs_again_and_few_are_kept(export_cache) -> None:
    """Whole images of many sizes run on the graph compiled once with its dynamic dims (a
    compile costs more than such a run) and keep no compiled model each; a shape that runs
    twice in a row (tiles) gets its own, and only the last few stay."""
    runner = OpenVINORunner(export_cache(T4))
    assert runner.describe()["compiled_dynamic"]
    for h in (8, 12, 16):
        runner.infer(_batch(h, 8))
    assert runner.describe()["compiled_shapes"] == []
    for h in (8, 8, 12, 12, 16, 16, 16):
        out = runner.infer(_batch(h, 8))
        assert out.shape == (1, 3, 4 * h, 32)
    shapes = runner.describe()["compiled_shapes"]
    assert shapes == [[1, 3, 12, 8], [1, 3, 16, 8]] and len(shapes) == COMPILED_SHAPES
    # a new runner's first run (the dynamic compile) and the static one compute the same
    fresh = OpenVINORunner(export_cache(T4))
    assert np.abs(fresh.infer(_batch(16, 8)) - runner.infer(_batch(16, 8))).max() < RANDOM_TOL


def test_fp32_is_asked_for_explicitly(export_cache) -> None:
    """OpenVINO's CPU plugin computes in BF16 by default on AMX/AVX512-BF16 CPUs."""
    runner = OpenVINORunner(export_cache(T4))
    assert runner._config["INFERENCE_PRECISION_HINT"] == "f32"  # what compile_model is given
    runner.infer(_batch(8, 8))
    runner.infer(_batch(8, 8))  # the second run at a shape compiles for it
    for request in (runner._dynamic, *runner._compiled.values()):
        hint = request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        assert str(hint) in ("<Type: 'float32'>", "f32", "float32")


@pytest.mark.parametrize("compute", ["bf16", "bf16-attn"])
def test_bf16_on_a_cpu_without_it_is_refused_before_any_export(
    checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compute: str
) -> None:
    """A name or checkpoint is exported in a form of its own for BF16: a CPU that cannot
    compute BF16 (faked here, on any CPU) is one line before that export, not after it."""
    from lbnet_deploy.runtime import openvino

    real = openvino.core

    class NoBF16:
        def __init__(self) -> None:
            self.core = real()

        def __getattr__(self, name: str):
            return getattr(self.core, name)

        def get_property(self, device: str, key: str):
            value = self.core.get_property(device, key)
            return (
                [c for c in value if c != "BF16"] if key == "OPTIMIZATION_CAPABILITIES" else value
            )

    monkeypatch.setattr(openvino, "core", NoBF16)
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(LBNetError, match="cannot compute in BF16"):
        open_runner(str(checkpoint(T4)), "openvino", precision=compute)
    assert not list(tmp_path.rglob("*.onnx"))  # nothing exported


@pytest.mark.skipif(_cpu_has_bf16(), reason="this CPU computes BF16: the refusal is not tested")
def test_bf16_refused_where_the_cpu_has_none(export_cache, tmp_path: Path, capsys) -> None:
    with pytest.raises(LBNetError, match="cannot compute in BF16"):
        OpenVINORunner(export_cache(T4), compute="bf16")
    photo = tmp_path / "bf16.png"
    Image.fromarray(texture(8, 8)).save(photo)
    args = ["upscale", str(photo), "-o", str(photo.parent / "out-bf16"), "--model"]
    assert main([*args, str(export_cache(T4)), "--backend", "openvino", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot compute in BF16" in err[0]
    assert not (photo.parent / "out-bf16" / "bf16.png").exists()


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no BF16 (AVX512-BF16 or AMX)")
def test_bf16_runs_and_says_so(export_cache, checkpoint) -> None:
    from lbnet_deploy.parity import TOLERANCES, compare
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    runner = open_runner(str(export_cache(T4)), "openvino", precision="bf16")
    assert runner.model_facts.precision == "bf16"
    batch = _batch(24, 24)
    max_abs, _, psnr, _ = compare(runner.infer(batch), TorchRunner(checkpoint(T4)).infer(batch))
    assert max_abs <= TOLERANCES["bf16"][0] and psnr >= TOLERANCES["bf16"][1]


def test_bf16_only_where_a_backend_computes_it(export_cache) -> None:
    for compute in ("bf16", "bf16-attn"):
        with pytest.raises(LBNetError, match=f"{compute} runs on the openvino backend, not ort"):
            open_runner(str(export_cache(T4)), "ort", precision=compute)


def test_bf16_attn_converts_the_attention_and_nothing_else(export_cache) -> None:
    """bf16-attn: each MatMul -> (key mask) -> Softmax -> MatMul chain takes BF16 inputs and
    gives an f32 result; every other node keeps its precision. Dynamic flat graph (the mask,
    the Transposes) and fixed batched graph (5-D runs)."""
    from lbnet_deploy.runtime.openvino import attention_in_bf16

    for graph in (export_cache(T4, form="flat"), export_cache(T4, (16, 16))):
        model = ov.Core().read_model(str(graph))
        kinds = [n.get_type_name() for n in model.get_ordered_ops()]
        assert attention_in_bf16(model) == kinds.count("Softmax") > 0
        bf16 = [
            n for n in model.get_ordered_ops()
            if n.get_type_name() != "Convert" and n.get_output_element_type(0) == ov.Type.bf16
        ]  # fmt: skip
        chain = [n.get_type_name() for n in bf16 if n.get_type_name() != "Transpose"]
        assert sorted(set(chain)) == (
            ["Add", "MatMul", "Softmax"] if "Add" in chain else ["MatMul", "Softmax"]
        )
        assert chain.count("MatMul") == 2 * kinds.count("Softmax")
        assert chain.count("MatMul") < kinds.count("MatMul")  # the linear layers stay f32
        assert model.output(0).get_element_type() == ov.Type.f32
    no_attention = ov.Model([ov.opset13.relu(p := ov.opset13.parameter([1, 3], np.float32))], [p])
    assert attention_in_bf16(no_attention) == 0


def test_bf16_attn_converts_the_linear_layers_and_not_the_convolutions(export_cache) -> None:
    """linear_in_bf16, in every attention form: each MatMul by a weight of the ONNX graph (the
    linear layers, 36 in LBNet-T: the batched form's keys take the weight on the left) takes
    BF16 inputs and gives f32 to its readers; the attention's products, Convs, Softmax keep f32."""
    from lbnet_deploy.runtime.openvino import linear_in_bf16

    for form in ("batched", "flat", "flat16"):
        path = export_cache(T4, (16, 16), form=form)
        graph = onnx.load(path).graph
        weights = {i.name for i in graph.initializer}
        onnx_linears = sum(
            n.op_type == "MatMul" and any(i in weights for i in n.input) for n in graph.node
        )
        model = ov.Core().read_model(str(path))
        assert linear_in_bf16(model) == onnx_linears == 36, form
        bf16 = [
            n.get_type_name()
            for n in model.get_ordered_ops()
            if n.get_type_name() != "Convert" and n.get_output_element_type(0) == ov.Type.bf16
        ]
        assert bf16 == ["MatMul"] * 36, form
        ops = model.get_ordered_ops()
        kept = [n for n in ops if n.get_type_name() in ("Convolution", "Softmax")]
        assert kept and all(n.get_output_element_type(0) == ov.Type.f32 for n in kept)
        assert model.output(0).get_element_type() == ov.Type.f32
        assert linear_in_bf16(model) == 0  # done once: the products are BF16 now, not f32


def test_bf16_attn_on_a_graph_without_our_attention_is_one_line(monkeypatch) -> None:
    from openvino import opset13 as op

    from lbnet_deploy.runtime import openvino as backend

    s = op.parameter([2, 4, 4], np.float32)
    v = op.parameter([2, 4, 4], np.float32)
    # Softmax as the right operand (v @ softmax(s)): not the attention chain, left alone
    model = ov.Model(
        [op.matmul(v, op.softmax(op.matmul(s, s, False, False), -1), False, False)], [s, v]
    )
    with pytest.raises(LBNetError, match="no attention found to compute in BF16"):
        backend.set_compute(model, "bf16-attn", "g.onnx")
    assert all(n.get_output_element_type(0) == ov.Type.f32 for n in model.get_ordered_ops())

    def refused(model: object) -> int:  # OpenVINO's own type check failing, whatever why
        raise RuntimeError("Check 'element::Type::merge' failed\nat line 2")

    monkeypatch.setattr(backend, "attention_in_bf16", refused)
    with pytest.raises(LBNetError, match=r"g.onnx: cannot compute its Transformer in BF16 \(Check"):
        backend.set_compute(model, "bf16-attn", "g.onnx")
    backend.set_compute(model, "fp32", "g.onnx")  # nothing to do


def test_bf16_attn_leaves_every_other_reader_in_fp32() -> None:
    """A Transpose or a score that something else reads too: that reader keeps its f32 (the
    Convert goes after the Transpose; a chain whose scores are read elsewhere stays FP32)."""
    from openvino import opset13 as op

    from lbnet_deploy.runtime.openvino import attention_in_bf16

    def attention(shared_scores: bool) -> ov.Model:
        q, k, v = (op.parameter([2, 4, 8], np.float32, name=n) for n in "qkv")
        qt = op.transpose(q, op.constant(np.array([0, 2, 1])))  # also an output below
        scores = op.matmul(qt, op.transpose(k, op.constant(np.array([0, 2, 1]))), True, False)
        out = op.matmul(op.softmax(scores, -1), v, False, False)
        extra = [qt, scores] if shared_scores else [qt]
        return ov.Model([out, *extra], [q, k, v])

    for shared_scores in (False, True):
        model = attention(shared_scores)
        x = [
            np.random.default_rng(i).standard_normal((2, 4, 8)).astype(np.float32) for i in range(3)
        ]
        f32 = {"INFERENCE_PRECISION_HINT": "f32"}
        before = ov.Core().compile_model(attention(shared_scores), "CPU", f32)(x)
        assert attention_in_bf16(model) == (0 if shared_scores else 1)
        assert all(o.get_element_type() == ov.Type.f32 for o in model.outputs)
        after = ov.Core().compile_model(model, "CPU", f32)(x)
        assert np.array_equal(after[1], before[1])  # the shared Transpose's own output, exact
        assert np.abs(after[0] - before[0]).max() < 0.05  # the attention, BF16 or not


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no BF16 (AVX512-BF16 or AMX)")
def test_bf16_attn_runs_the_transformer_in_bf16_and_the_rest_in_fp32(
    export_cache, checkpoint
) -> None:
    from collections import Counter

    from lbnet_deploy.parity import TOLERANCES, compare
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    export_cache(T4, form="flat")  # the first-use export, shared
    runner = open_runner(str(checkpoint(T4)), "openvino", precision="bf16-attn")
    assert runner.model_facts.precision == "bf16-attn"
    assert runner.model_facts.extra["form"] == "flat"
    batch = _batch(24, 24)
    max_abs, _, psnr, _ = compare(runner.infer(batch), TorchRunner(checkpoint(T4)).infer(batch))
    assert max_abs <= TOLERANCES["bf16-attn"][0] and psnr >= TOLERANCES["bf16-attn"][1]
    compiled = runner._dynamic.get_compiled_model()  # type: ignore[attr-defined]
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in (
        "f32",
        "float32",
        "<Type: 'float32'>",
    )
    ran = Counter(
        (info["layerType"].astype(str), info["runtimePrecision"].astype(str))
        for info in (n.get_rt_info() for n in compiled.get_runtime_model().get_ordered_ops())
    )
    assert ran[("Subgraph", "bf16")] >= 6  # the attention kernels, one per block at least
    assert ran[("FullyConnected", "bf16")] == 36 and ran[("FullyConnected", "f32")] == 0
    assert ran[("Convolution", "f32")] > 0 and ran[("Convolution", "bf16")] == 0
    # bench's OpenVINO profile compiles it the same way
    from lbnet_deploy.benchmarks.profile import profile_openvino

    path = str(runner.describe()["path"])
    top = profile_openvino(path, batch, threads=1, compute="bf16-attn", runs=1)["top"]
    assert any(t["op"].startswith("Subgraph (") and "bf16" in t["op"] for t in top)


def test_a_device_openvino_lacks_is_one_line(export_cache) -> None:
    have = ov.Core().available_devices
    if any(d.startswith("NPU") for d in have):
        pytest.skip("this machine has an NPU")
    with pytest.raises(LBNetError, match="OpenVINO has no NPU device here"):
        open_runner(str(export_cache(T4)), "openvino-npu")


def test_foreign_and_broken_files_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a model at all")
    with pytest.raises(LBNetError, match="not a readable ONNX model"):
        OpenVINORunner(junk)
    with pytest.raises(LBNetError, match="not found"):
        OpenVINORunner(tmp_path / "missing.onnx")
    with pytest.raises(LBNetError, match="not exported by lbnet-deploy"):
        OpenVINORunner(foreign_graph(tmp_path / "foreign.onnx"))


def test_upscale_and_parity_on_openvino(export_cache, checkpoint, tmp_path: Path, capsys) -> None:
    model = str(export_cache(T4))
    photo = tmp_path / "p.png"
    Image.fromarray(texture(20, 24)).save(photo)
    out = tmp_path / "out"
    assert (
        main(["upscale", str(photo), "-o", str(out), "--model", model, "--backend", "openvino"])
        == 0
    )
    assert Image.open(out / "p.png").size == (96, 80)
    assert "on openvino (OpenVINO CPU (fp32))" in capsys.readouterr().out
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(texture(64, 64)).save(folder / "a.png")
    args = ["parity", model, "--reference", str(checkpoint(T4)), "--images", str(folder)]
    assert main([*args, "--backend", "openvino", "--sizes", "16x16,9x13"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_fp16_graphs_run_and_bf16_is_for_fp32_graphs_only(
    export_cache, shared_cache, checkpoint
) -> None:
    from lbnet_deploy.resolve import model_file
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    export_cache(T4, (16, 16))
    fp16 = model_file(str(checkpoint(T4)), input_size=(16, 16), batch=1, precision="fp16")
    runner = OpenVINORunner(fp16)
    assert runner.model_facts.precision == "fp16"
    batch = _batch(16, 16)
    assert np.abs(runner.infer(batch) - TorchRunner(checkpoint(T4)).infer(batch)).max() < 2.0
    with pytest.raises(LBNetError, match="is a fp16 graph: --precision bf16 computes an FP32"):
        OpenVINORunner(fp16, compute="bf16")
    with pytest.raises(LBNetError, match="is a fp16 graph: --precision bf16-attn computes an FP32"):
        OpenVINORunner(fp16, compute="bf16-attn")


def test_other_backends_refuse_a_compute_precision(export_cache) -> None:
    from lbnet_deploy.runtime.registry import get_backend

    with pytest.raises(LBNetError, match="does not compute in bf16"):
        get_backend("ort").open(export_cache(T4), 1, "bf16")
