"""`--backend auto`: the CPU backend chosen by measurement, kept per machine and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lbnet_deploy.benchmarks import choose
from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.runtime.registry import BACKENDS

from .conftest import texture

T4 = "random-LBNet-T-x4"
ACCURATE = choose.ACCURATE  # the tests that time it put it back


@pytest.fixture(autouse=True)
def _fp32_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto times FP32 contenders only, unless a test puts `ACCURATE` back."""
    monkeypatch.setattr(choose, "ACCURATE", ())


@pytest.fixture
def graph(export_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(choose, "CANDIDATES", ("ort", "openvino"))  # conftest pins ort
    return str(export_cache(T4, (16, 16)))


def _fake_timings(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float]) -> list[int]:
    """Timing that says `seconds` per backend; returns a list that counts the measurements."""
    measured: list[int] = []

    def interleaved(calls, warmup, runs):
        measured.append(1)
        for fn in calls.values():
            fn()  # the runners are real and run once
        return {name: [seconds[name]] * runs for name in calls}

    monkeypatch.setattr(choose, "interleaved", interleaved)
    return measured


def _openvino_installed() -> None:
    if BACKENDS["openvino"].missing():
        pytest.skip("openvino is not installed: nothing to choose between")


@pytest.mark.parametrize(
    ("ort_s", "openvino_s", "chosen"),
    [(1.0, 0.90, "openvino"), (1.0, 0.97, "ort"), (0.9, 1.0, "ort")],
    ids=["openvino clearly faster", "openvino within the margin", "ort faster"],
)
def test_the_clearly_fastest_backend_is_chosen(
    graph: str, monkeypatch: pytest.MonkeyPatch, ort_s: float, openvino_s: float, chosen: str
) -> None:
    _openvino_installed()
    _fake_timings(monkeypatch, {"ort": ort_s, "openvino": openvino_s})
    choice = choose.choose_backend(graph)
    assert choice.backend == chosen
    assert choice.ms == pytest.approx({"ort": ort_s * 1e3, "openvino": openvino_s * 1e3})
    assert choice.size == (16, 16)  # a fixed graph is timed at its own size
    # the command runs the chosen runner that choosing opened, not a second one
    assert choice.runner is not None
    assert choice.runner.describe()["backend"] == {"ort": "onnxruntime"}.get(chosen, chosen)
    assert ("fastest here" in choice.note()) == (min(choice.ms, key=choice.ms.get) == chosen)


def test_the_choice_is_measured_once_per_machine_and_model(
    graph: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _openvino_installed()
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    assert choose.choose_backend(graph).backend == "openvino"
    kept = choose.choose_backend(graph)
    assert kept.backend == "openvino" and kept.runner is None  # opened by the command
    assert len(measured) == 1
    assert choose.choose_backend(graph, threads=1).backend == "openvino"  # other threads
    assert len(measured) == 2
    cache = tmp_path / "cache" / "backend-choice.json"
    for broken in ("{not json", '{"k": {"backend": "auto"}}', "[1, 2]", ""):
        cache.write_text(broken)  # hand-edited or cut short: measured again, not an error
        assert choose.choose_backend(graph).backend == "openvino"
    assert len(measured) == 6
    assert len(json.loads(cache.read_text())) == 1


def test_without_a_second_backend_nothing_is_timed(
    graph: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = _fake_timings(monkeypatch, {})
    real = type(BACKENDS["ort"]).missing
    monkeypatch.setattr(
        type(BACKENDS["ort"]),
        "missing",
        lambda self: ["openvino"] if self.name.startswith("openvino") else real(self),
    )
    choice = choose.choose_backend(graph)
    assert (choice.backend, measured) == ("ort", [])
    assert "only installed CPU backend" in choice.note()
    # bf16 is computed by OpenVINO alone: chosen without timing, and opening it names what
    # is missing
    assert choose.choose_backend(graph, "bf16").backend == "openvino"


def test_engine_files_run_on_tensorrt() -> None:
    assert choose.choose_backend("t4.plan").backend == "tensorrt"


def test_the_api_opens_what_auto_chooses(graph: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import lbnet_deploy

    _openvino_installed()
    monkeypatch.setattr(choose, "choose_backend", lambda *a, **k: choose.Choice("openvino"))
    runner = lbnet_deploy.open_runner(graph, "auto")
    assert runner.describe()["backend"] == "openvino"


def test_a_cache_that_cannot_be_written_is_measured_again_not_an_error(
    graph: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog
) -> None:
    from lbnet_deploy.errors import LBNetError

    _openvino_installed()
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LBNET_CACHE_DIR", str(blocker))  # mkdir fails (as root too)
    assert choose.choose_backend(graph).backend == "openvino"

    def refuse(path, data):  # how the atomic writer reports a read-only or full disk
        raise LBNetError(f"cannot write {path}: read-only file system")

    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(choose, "write_json_atomic", refuse)
    assert choose.choose_backend(graph).backend == "openvino"
    assert len(measured) == 2 and caplog.text.count("could not keep the backend choice") == 2


def test_a_backend_that_cannot_run_the_graph_is_left_out(
    graph: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    _openvino_installed()
    from lbnet_deploy.runtime.openvino import OpenVINORunner

    def broken(self, batch):
        raise RuntimeError("the plugin gave up\nsecond line")

    monkeypatch.setattr(OpenVINORunner, "infer", broken)
    choice = choose.choose_backend(graph)
    assert choice.backend == "ort" and set(choice.ms) == {"ort"}
    assert "not timing openvino: the plugin gave up" in caplog.text
    assert choose._read_cache() == {}  # a choice made without a candidate is not kept


def test_the_request_is_checked_before_anything_is_timed(
    graph: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lbnet_deploy.errors import LBNetError

    _openvino_installed()
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    with pytest.raises(LBNetError, match="has its own precision"):
        choose.choose_backend(graph, "fp16")
    with pytest.raises(LBNetError, match="not found"):
        choose.choose_backend(str(tmp_path / "missing.onnx"))
    assert measured == []


def test_upscale_says_what_auto_chose(
    graph: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, measured = choose.measure, []
    monkeypatch.setattr(choose, "measure", lambda *a: measured.append(1) or real(*a))
    image = tmp_path / "a.png"
    Image.fromarray(texture(16, 16)).save(image)
    assert main(["upscale", str(image), "-o", str(tmp_path / "out"), "--model", graph, "-q"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    choice = choose.choose_backend(graph)  # the kept choice
    assert len(measured) == (1 if not BACKENDS["openvino"].missing() else 0)
    assert f"on {choice.backend} (" in line and choice.note() in line, line
    assert Image.open(tmp_path / "out" / "a.png").size == (64, 64)


def test_a_dynamic_graph_is_timed_on_first_runs_at_new_sizes(
    export_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole images run at their own sizes: a backend that compiles per shape pays it there."""
    import time

    _openvino_installed()
    from lbnet_deploy.runtime.openvino import OpenVINORunner

    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(choose, "CANDIDATES", ("ort", "openvino"))
    graph = str(export_cache(T4))
    seen: list[tuple[int, ...]] = []
    real = OpenVINORunner.infer

    def compiles_per_shape(self, batch):
        if batch.shape not in seen:
            seen.append(batch.shape)
            time.sleep(0.2)  # what a compile costs, made certain
        return real(self, batch)

    monkeypatch.setattr(OpenVINORunner, "infer", compiles_per_shape)
    choice = choose.choose_backend(graph, tile=16)
    assert [s[2:] for s in seen] == [(16, 16), (24, 24), (32, 32), (40, 40)]  # warm-up, 3 new
    assert choice.new_shapes and "first runs at new sizes near 16x16" in choice.note()
    assert choice.backend == "ort" and choice.ms["openvino"] >= 200
    assert choose.choose_backend(graph, tile=16).new_shapes  # kept with the choice


def test_a_checkpoint_runs_on_each_backend_in_the_form_exported_for_it(
    export_cache, checkpoint, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime gets TensorRT's batched graph, OpenVINO the flat one it fuses: each is timed
    on its own graph, and the forms are part of what the kept choice is keyed by."""
    _openvino_installed()
    monkeypatch.setattr(choose, "CANDIDATES", ("ort", "openvino"))
    for form in ("batched", "flat"):
        export_cache(T4, form=form)  # the first-use exports, shared with the other tests
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    opened: list[str] = []
    real_open = choose.open_runner
    monkeypatch.setattr(
        choose, "open_runner", lambda *a, **k: opened.append(a[1]) or real_open(*a, **k)
    )
    choice = choose.choose_backend(str(checkpoint(T4)), tile=16)
    assert choice.backend == "openvino" and opened == ["ort", "openvino"] and measured
    assert choice.runner is not None and choice.runner.model_facts.extra["form"] == "flat"
    ckpt = checkpoint(T4)
    key = choose.choice_key(ckpt, {"ort": "batched", "openvino": "flat"}, "fp32", 2, (1,))
    assert key != choose.choice_key(ckpt, ["ort", "openvino"], "fp32", 2, (1,))


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_an_fp32_accurate_compute_is_timed_only_where_measured_and_computable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bf16-attn is a candidate where PRECISION.md has it within 0.01 dB on every checkpoint,
    OpenVINO is installed and the CPU computes BF16; never where one of those is missing."""
    _openvino_installed()
    both = ["ort", "openvino"]
    monkeypatch.setattr(choose, "ACCURATE", ACCURATE)
    monkeypatch.setattr(choose, "within_bound", lambda compute: compute == "bf16-attn")
    expected = [("openvino", "bf16-attn")] if _cpu_has_bf16() else []
    assert choose._accurate_computes(both) == expected
    assert choose._accurate_computes(["ort"]) == []  # OpenVINO not installed
    monkeypatch.setattr(choose, "within_bound", lambda compute: None)  # not measured
    assert choose._accurate_computes(both) == []
    monkeypatch.setattr(choose, "within_bound", lambda compute: True)
    from lbnet_deploy.runtime import openvino

    monkeypatch.setattr(openvino, "check_device", _refuse_bf16)
    assert choose._accurate_computes(both) == []  # a CPU without BF16


def _refuse_bf16(core: object, device: str, compute: str = "fp32") -> None:
    from lbnet_deploy.errors import LBNetError

    if compute != "fp32":
        raise LBNetError("this CPU cannot compute in BF16")


def test_auto_runs_bf16_attn_where_it_is_the_fastest(
    graph: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _openvino_installed()
    if not _cpu_has_bf16():
        pytest.skip("this CPU has no BF16 (AVX512-BF16 or AMX): bf16-attn is no candidate")
    monkeypatch.setattr(choose, "ACCURATE", ACCURATE)
    monkeypatch.setattr(choose, "within_bound", lambda compute: compute == "bf16-attn")
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.8, "openvino bf16-attn": 0.5})
    choice = choose.choose_backend(graph)
    assert (choice.backend, choice.compute, choice.label) == (
        "openvino",
        "bf16-attn",
        "openvino bf16-attn",
    )
    assert choice.runner is not None and choice.runner.describe()["precision"] == "bf16-attn"
    assert "fastest here" in choice.note() and "openvino bf16-attn 500 ms" in choice.note()
    kept = choose.choose_backend(graph)  # from the cache: the command opens it, with its compute
    assert (kept.backend, kept.compute, kept.runner, len(measured)) == (
        "openvino",
        "bf16-attn",
        None,
        1,
    )
    runner, _ = choose.open_auto(graph)
    assert runner.describe()["precision"] == "bf16-attn"
    # slower than OpenVINO at FP32: FP32 it is, and the choice says no compute
    monkeypatch.setenv("LBNET_CACHE_DIR", str(Path(graph).parent / "other-cache"))
    _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5, "openvino bf16-attn": 0.8})
    assert (choose.choose_backend(graph).label, choose.choose_backend(graph).compute) == (
        "openvino",
        None,
    )


def test_precision_fp32_keeps_an_fp32_file_off_the_bf16_computes(
    graph: str, export_cache, shared_cache, checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--precision fp32` on an FP32 file: auto times the FP32 contenders only, however fast a
    BF16 compute would be; on a file of another precision it is refused in one line."""
    from lbnet_deploy.resolve import model_file

    _openvino_installed()
    monkeypatch.setattr(choose, "ACCURATE", ACCURATE)
    monkeypatch.setattr(choose, "within_bound", lambda compute: True)
    monkeypatch.setattr(choose, "_accurate_computes", lambda installed: list(ACCURATE))
    _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.8, "openvino bf16-attn": 0.1})
    choice = choose.choose_backend(graph, "fp32")
    assert (choice.label, choice.compute, sorted(choice.ms)) == (
        "openvino", None, ["openvino", "ort"]
    )  # fmt: skip
    assert choice.runner is not None and choice.runner.describe()["precision"] == "fp32"
    export_cache(T4, (16, 16))
    fp16 = model_file(str(checkpoint(T4)), input_size=(16, 16), batch=1, precision="fp16")
    with pytest.raises(LBNetError, match="is a fp16 graph: --precision fp32 takes FP32 files"):
        choose.choose_backend(str(fp16), "fp32")


def test_a_file_of_its_own_precision_is_timed_at_it_and_the_choice_kept(
    export_cache, shared_cache, checkpoint, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """An FP16 (or INT8) file: no compute can be set over it, so bf16-attn is no contender,
    and the choice between the backends that run it is kept."""
    from lbnet_deploy.resolve import model_file

    _openvino_installed()
    export_cache(T4, (16, 16))
    fp16 = model_file(str(checkpoint(T4)), input_size=(16, 16), batch=1, precision="fp16")
    monkeypatch.setattr(choose, "CANDIDATES", ("ort", "openvino"))
    monkeypatch.setattr(choose, "ACCURATE", ACCURATE)
    monkeypatch.setattr(choose, "within_bound", lambda compute: True)
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    assert choose.choose_backend(str(fp16)).backend == "openvino"
    assert choose.choose_backend(str(fp16)).backend == "openvino"
    assert len(measured) == 1 and "not timing" not in caplog.text
    # OpenVINO alone: nothing to time it against, as before there were computes
    monkeypatch.setattr(choose, "CANDIDATES", ("openvino",))
    choice = choose.choose_backend(str(fp16))
    assert (choice.backend, choice.ms, len(measured)) == ("openvino", {}, 1)
    assert "only installed CPU backend" in choice.note() and choice.runner is not None


def test_a_cached_choice_of_a_compute_auto_does_not_time_is_measured_again(
    graph: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _openvino_installed()
    monkeypatch.setattr(choose, "ACCURATE", ACCURATE)  # known, but not timed here:
    monkeypatch.setattr(choose, "within_bound", lambda compute: False)
    measured = _fake_timings(monkeypatch, {"ort": 1.0, "openvino": 0.5})
    assert choose.choose_backend(graph).backend == "openvino"
    cache = tmp_path / "cache" / "backend-choice.json"
    entries = json.loads(cache.read_text())
    for entry in entries.values():  # hand-edited: ONNX Runtime "with" OpenVINO's compute
        entry.update(backend="ort", compute="bf16-attn", ms={"ort bf16-attn": 1.0})
    cache.write_text(json.dumps(entries))
    assert choose.choose_backend(graph).backend == "openvino" and len(measured) == 2
