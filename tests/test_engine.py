"""TensorRT engine build and runtime, against the recording fake in fake_tensorrt.py (TensorRT
cannot be installed here; test_gpu.py builds and runs real engines where it can)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lbnet_deploy.cli import main
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.engine_build import BuildOptions, build_engine
from lbnet_deploy.runtime.engine import TensorRTRunner
from lbnet_deploy.runtime.trt_common import EngineFacts, read_facts, sidecar_path
from lbnet_deploy.runtime.upscaler import Upscaler

from .conftest import stand_in_graph as graph
from .fake_tensorrt import FakeTensorRT


@pytest.fixture(params=["cuda-python", "pycuda"])
def fake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    """Fake TensorRT over each CUDA binding: every engine test runs against both."""
    return FakeTensorRT(cuda=request.param).install(monkeypatch)


@pytest.mark.parametrize("installed", ["cuda-python", "pycuda"])
def test_the_cuda_layer_is_the_installed_binding_or_the_one_asked_for(
    installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lbnet_deploy.runtime.cuda_layer import load_cuda

    FakeTensorRT(cuda=installed).install(monkeypatch)
    monkeypatch.delenv("LBNET_CUDA", raising=False)
    layer = load_cuda()
    assert layer.name == installed and layer.facts(0).name == "Fake GPU"
    assert layer.facts(0).compute_capability == "8.9" and layer.facts(0).memory_mb == 16384
    other = "pycuda" if installed == "cuda-python" else "cuda-python"
    monkeypatch.setenv("LBNET_CUDA", other)
    with pytest.raises(LBNetError, match=f"{other} is not installed .*cuda-python"):
        load_cuda()
    monkeypatch.setenv("LBNET_CUDA", "cupy")
    with pytest.raises(LBNetError, match="choose cuda-python or pycuda"):
        load_cuda()
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delenv("LBNET_CUDA")
    with pytest.raises(LBNetError, match=r"cuda-python \(or pycuda\) is not installed"):
        load_cuda()


def test_page_locked_buffers_of_the_cuda_python_layer_are_real_memory(monkeypatch) -> None:
    """The numpy view over cuMemAllocHost's block: shape, dtype, writes land in the block."""
    from lbnet_deploy.runtime.cuda_layer import load_cuda

    fake = FakeTensorRT(cuda="cuda-python").install(monkeypatch)
    layer = load_cuda()
    host = layer.host_empty((2, 3, 4), np.float16)
    assert host.shape == (2, 3, 4) and host.dtype == np.float16
    host[...] = np.arange(24).reshape(2, 3, 4)
    pointer = layer.malloc(host.nbytes)
    stream = layer.stream()
    layer.htod_async(pointer, host, stream)
    back = layer.host_empty((2, 3, 4), np.float16)
    layer.dtoh_async(back, pointer, stream)
    stream.synchronize()
    np.testing.assert_array_equal(back, host)
    layer.free_host(host)
    layer.free_host(back)
    layer.free(pointer)
    assert len(fake.called("host_free")) == 2 and fake.memory == {}


def test_strongly_typed_build_sets_no_precision_flag(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision="fp16")
    facts = build_engine(src, tmp_path / "g.plan", BuildOptions(workspace_mb=512))
    assert fake.called("create_network") == [(1 << 1,)]  # STRONGLY_TYPED
    assert fake.called("set_flag") == []  # precision is in the graph
    assert fake.called("clear_flag") == [("TF32",)]  # FP32 layers stay FP32
    assert fake.called("set_memory_pool_limit") == [("WORKSPACE", 512 * 2**20)]
    assert facts.strongly_typed and facts.precision == "fp16"
    assert facts.input_shape == (1, 3, 16, 16) and facts.compute_capability == "8.9"
    written = EngineFacts.from_json(sidecar_path(tmp_path / "g.plan").read_text())
    assert written == facts and (tmp_path / "g.plan").stat().st_size > 0


def test_jetpack6_tensorrt_builds_strongly_typed_too(monkeypatch, tmp_path) -> None:
    fake = FakeTensorRT(version="10.3.0.26", compute_capability=(8, 7)).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision="fp16")
    facts = build_engine(src, tmp_path / "g.plan", BuildOptions())
    assert fake.called("create_network") == [(1 << 1,)] and fake.called("set_flag") == []
    assert facts.strongly_typed


def test_dla_build_runs_on_the_core_with_gpu_fallback_and_serves_there(
    monkeypatch, tmp_path, capsys
) -> None:
    """A Jetson Orin (2 DLA cores): `build --dla-core 1` as trtexec --useDLACore=1
    --allowGPUFallback; the sidecar says so and the runner deserializes on that core."""
    fake = FakeTensorRT(version="10.3.0.26", compute_capability=(8, 7), dla_cores=2)
    fake.install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision="fp16")
    args = ["build", str(src), "-o", str(tmp_path / "g.plan"), "--dla-core", "1"]
    assert main(args) == 0
    assert "DLA core 1 with GPU fallback" in capsys.readouterr().out
    assert fake.called("dla") == [("DLA", 1)]
    assert fake.called("set_flag") == [("GPU_FALLBACK",)]  # strongly typed: no precision flag
    assert read_facts(tmp_path / "g.plan").dla_core == 1
    runner = TensorRTRunner(tmp_path / "g.plan")
    assert fake.called("deserialize_cuda_engine")[-1][1] == 1  # runtime.DLA_core set first
    runner.close()
    gpu = tmp_path / "gpu.plan"
    assert main(["build", str(src), "-o", str(gpu)]) == 0 and read_facts(gpu).dla_core is None


@pytest.mark.parametrize(
    ("dla_cores", "core", "precision", "says"),
    [
        (2, 0, "fp32", "DLA runs FP16 and INT8 layers"),
        (2, 2, "fp16", "this device has DLA cores 0..1"),
        (0, 0, "fp16", "this device has no DLA"),
        (2, -1, "fp16", "--dla-core -1: this device has DLA cores 0..1"),
    ],
)
def test_dla_builds_that_cannot_work_are_refused_before_the_build(
    dla_cores, core, precision, says, monkeypatch, tmp_path, capsys
) -> None:
    fake = FakeTensorRT(dla_cores=dla_cores).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision=precision)
    assert main(["build", str(src), "-o", str(tmp_path / "g.plan"), "--dla-core", str(core)]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert fake.called("build_serialized_network") == []
    assert not (tmp_path / "g.plan").exists()


@pytest.mark.parametrize(
    ("precision", "flag"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8"])]
)
def test_weakly_typed_fallback_sets_only_the_graphs_flag(
    monkeypatch, tmp_path, precision, flag
) -> None:
    fake = FakeTensorRT(version="10.3.0.26", compute_capability=(8, 7)).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision=precision)
    facts = build_engine(src, tmp_path / "g.plan", BuildOptions(weakly_typed=True))
    assert fake.called("create_network") == [(0,)]
    assert [a[0] for a in fake.called("set_flag")] == flag
    assert not facts.strongly_typed and list(facts.builder_flags) == flag and not facts.tf32


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_weakly_typed_refused_on_tensorrt_11(monkeypatch, tmp_path, precision: str) -> None:
    """11.x is always strongly typed: an fp32 build must not be recorded as weakly typed."""
    FakeTensorRT(version="11.4.0", calibrators=False).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision=precision)
    with pytest.raises(LBNetError, match="builds strongly typed only"):
        build_engine(src, tmp_path / "g.plan", BuildOptions(weakly_typed=True))
    assert list(tmp_path.iterdir()) == [src]


def test_tf32_flag_cleared_only_where_it_exists(monkeypatch, tmp_path) -> None:
    fake = FakeTensorRT(version="11.4.0", calibrators=False, tf32_flag=False).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    facts = build_engine(src, tmp_path / "g.plan", BuildOptions())
    assert facts.strongly_typed and fake.called("clear_flag") == []


def test_dynamic_graph_gets_one_fixed_profile(fake, tmp_path) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    with pytest.raises(LBNetError, match="dynamic size: give the engine's --input-size"):
        build_engine(src, tmp_path / "d.plan", BuildOptions())
    facts = build_engine(src, tmp_path / "d.plan", BuildOptions(input_size=(24, 32), batch=2))
    (_, _, profiles) = fake.called("build_serialized_network")[0]
    assert profiles == [{"input": [[2, 3, 24, 32]] * 3}]  # min = opt = max
    assert facts.input_shape == (2, 3, 24, 32)


def test_fixed_graph_refuses_a_different_size(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    with pytest.raises(LBNetError, match="fixed at 16x16"):
        build_engine(src, tmp_path / "g.plan", BuildOptions(input_size=(32, 32)))
    with pytest.raises(LBNetError, match="batch is fixed at 1"):
        build_engine(src, tmp_path / "g.plan", BuildOptions(batch=4))
    assert list(tmp_path.iterdir()) == [src]


def test_parser_rejection_is_one_line_and_leaves_nothing(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], op="Col2Im")
    with pytest.raises(LBNetError, match=r"parser rejected .*No importer .* Col2Im"):
        build_engine(src, tmp_path / "g.plan", BuildOptions())
    assert list(tmp_path.iterdir()) == [src]


def test_failed_build_leaves_nothing(monkeypatch, tmp_path) -> None:
    FakeTensorRT(fail_build=True).install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    with pytest.raises(LBNetError, match="could not build an engine"):
        build_engine(src, tmp_path / "g.plan", BuildOptions())
    assert list(tmp_path.iterdir()) == [src]


def test_timing_cache_is_read_and_written_back(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    cache = tmp_path / "timing.cache"
    build_engine(src, tmp_path / "g.plan", BuildOptions(timing_cache=cache))
    assert fake.called("create_timing_cache") == [(b"",)] and cache.read_bytes() == b"+tuned"
    cache.write_bytes(b"old")
    build_engine(src, tmp_path / "g.plan", BuildOptions(timing_cache=cache))
    assert fake.called("create_timing_cache")[-1] == (b"old",)
    assert cache.read_bytes() == b"old+tuned"


def test_foreign_timing_cache_is_replaced_with_a_warning(fake, tmp_path, caplog) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"foreign")  # the fake refuses caches starting with "foreign"
    build_engine(src, tmp_path / "g.plan", BuildOptions(timing_cache=cache))
    assert "does not fit this GPU/TensorRT" in caplog.text  # a warning of the library's log
    assert cache.read_bytes() == b"+tuned"


def test_calibration_cache_builds_implicit_int8_weakly_typed(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-101300-EntropyCalibration2\ninput: 40008102\n")
    facts = build_engine(src, tmp_path / "g.plan", BuildOptions(calibration_cache=cache))
    assert fake.called("create_network") == [(0,)]  # calibrators need weak typing
    assert [a[0] for a in fake.called("set_flag")] == ["INT8"]
    assert fake.called("read_calibration_cache") == [(cache.read_bytes(),)]
    assert facts.precision == "int8" and facts.lbnet["precision"] == "int8"


def test_calibration_cache_is_restamped_profiled_and_its_coverage_reported(
    fake, tmp_path, caplog
) -> None:
    """TensorRT skips a cache stamped for another version; a dynamic graph needs a calibration
    profile (NvInfer.h); names that are no tensor of the graph are reported."""
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\ninput: 40008102\nmade_up: 3c010a14\n")
    options = BuildOptions(calibration_cache=cache, input_size=(16, 16), batch=1)
    with caplog.at_level("INFO", logger="lbnet_deploy"):
        build_engine(src, tmp_path / "d.plan", options)
    (replayed,) = fake.called("read_calibration_cache")
    assert replayed[0].decode().splitlines()[0] == "TRT-101300-EntropyCalibration2"  # 10.13
    assert "input: 40008102" in replayed[0].decode()
    assert len(fake.called("set_calibration_profile")) == 1
    assert "1 name no tensor of it (e.g. 'made_up')" in caplog.text


def test_calibration_cache_refused_where_it_cannot_work(monkeypatch, tmp_path) -> None:
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-101300-EntropyCalibration2\n")
    FakeTensorRT().install(monkeypatch)
    fp16 = graph(tmp_path / "h.onnx", [1, 3, 16, 16], precision="fp16")
    with pytest.raises(LBNetError, match="goes with an FP32 graph"):
        build_engine(fp16, tmp_path / "h.plan", BuildOptions(calibration_cache=cache))
    FakeTensorRT(version="11.4.0", calibrators=False).install(monkeypatch)
    fp32 = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    with pytest.raises(LBNetError, match=r"no calibrators .*build the Q/DQ graph"):
        build_engine(fp32, tmp_path / "g.plan", BuildOptions(calibration_cache=cache))


def nearest(x: np.ndarray, s: int) -> np.ndarray:
    return x.repeat(s, axis=-2).repeat(s, axis=-1)


def test_runner_moves_batches_through_device_memory(fake, tmp_path) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    build_engine(src, tmp_path / "d.plan", BuildOptions(input_size=(8, 12), batch=2))
    runner = TensorRTRunner(tmp_path / "d.plan", cuda_graph=False)
    assert (runner.input_size, runner.max_batch, runner.scale) == ((8, 12), 2, 4)
    facts = runner.describe()
    assert facts["backend"] == "tensorrt" and facts["heads"] == 6 and facts["gpu"] == "Fake GPU"
    # a dynamic input: one execution context (concurrent ones would need a profile each)
    assert facts["streams"] == 1 and facts["cuda_graph"] is False
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 8, 12)).astype(np.float32)
    y = runner.infer(x)  # 3 images through a batch-2 engine: two runs, the last zero-padded
    np.testing.assert_array_equal(y, nearest(x, 4))
    assert len(fake.called("execute_async_v3")) == 2
    assert fake.called("set_input_shape") == [("input", (2, 3, 8, 12))]
    assert len(fake.called("mem_alloc")) == 2  # buffers allocated once, reused
    io_bytes = 2 * 3 * 8 * 12 * 4 * (1 + 16)  # input + 4x output, float32
    assert runner.device_peak_mb() == pytest.approx(io_bytes / 2**20)
    pushes, pops = fake.called("ctx.push"), fake.called("ctx.pop")
    # load, then each run's enqueue and its wait (another thread may wait): each balanced
    assert len(pushes) == len(pops) == 5
    runner.close()  # frees the device buffers inside the context, once
    runner.close()
    assert len(fake.called("free")) == 2 and fake.memory == {}
    assert len(fake.called("ctx.push")) == len(fake.called("ctx.pop")) == 6
    with pytest.raises(LBNetError, match="was closed"):
        runner.infer(x)


def _batches(count: int, shape: tuple[int, ...] = (2, 3, 16, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(0, 255, shape).astype(np.float32) for _ in range(count)]


def test_cuda_graphs_are_captured_once_per_stream_and_replayed_per_batch(fake, tmp_path) -> None:
    """trtexec's sequence per slot: one enqueue outside capture, a thread-local capture of
    upload + engine (the download goes to whichever output buffer is free, after the replay),
    the graph kept as an executable; each batch replays it, and what it returns is what the
    enqueued path returns, bit for bit."""
    build_engine(graph(tmp_path / "g.onnx", [2, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    plain = TensorRTRunner(tmp_path / "g.plan", cuda_graph=False)
    expected = [plain.infer(x) for x in _batches(5)]
    plain.close()
    fake.calls.clear()
    runner = TensorRTRunner(tmp_path / "g.plan")
    assert runner.streams == 2 and runner.cuda_graph and runner.describe()["cuda_graph"] is True
    # thread-local capture: the enum for cuda-python, its value (1) through ctypes for pycuda
    mode = "1" if fake.cuda == "pycuda" else "CU_STREAM_CAPTURE_MODE_THREAD_LOCAL"
    assert fake.called("begin_capture") == [(mode,)] * 2
    assert len(fake.called("instantiate")) == 2 and len(fake.called("graph_destroy")) == 2
    assert len(fake.called("execute_async_v3")) == 4  # per slot: once before, once captured
    for x, want in zip(_batches(5), expected, strict=True):
        np.testing.assert_array_equal(runner.infer(x), want)  # new data each time: replayed
    assert len(fake.called("graph_launch")) == 5 and len(fake.called("execute_async_v3")) == 4
    runner.close()
    assert len(fake.called("graph_exec_destroy")) == 2 and fake.graphs == {}
    # two contexts' input buffers, three output buffers
    assert fake.memory == {} and len(fake.called("host_free")) == 5


@pytest.mark.parametrize(
    ("cuda", "failure"),
    [
        *((c, f) for c in ("cuda-python", "pycuda") for f in ("capture_fails", "invalidated")),
        ("pycuda", "no_libcuda"),  # cuda-python has the graph calls itself
    ],
)
def test_a_graph_that_cannot_be_captured_is_one_line_and_the_runner_enqueues(
    cuda, failure, tmp_path, caplog, monkeypatch
) -> None:
    """TensorRT refusing to enqueue under capture (an engine with work that cannot be captured),
    a capture the driver invalidates, or (pycuda) no driver library to call: one warning, no
    graph left behind, the same output as without graphs."""
    from lbnet_deploy.runtime import cuda_layer

    fake = FakeTensorRT(cuda=cuda).install(monkeypatch)
    build_engine(graph(tmp_path / "g.onnx", [2, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    fake.capture_fails, fake.capture_invalidated = (
        failure == "capture_fails",
        failure == "invalidated",
    )
    if failure == "no_libcuda":

        def missing() -> None:
            raise OSError("libcuda.so.1: cannot open shared object file")

        monkeypatch.setattr(cuda_layer, "_libcuda", missing)
    with caplog.at_level("WARNING", logger="lbnet_deploy"):
        runner = TensorRTRunner(tmp_path / "g.plan")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no CUDA graph" in warnings[0] and "\n" not in warnings[0]
    assert not runner.cuda_graph and fake.graphs == {}
    x = _batches(1)[0]
    np.testing.assert_array_equal(runner.infer(x), nearest(x, 4))
    assert fake.called("graph_launch") == []
    runner.close()


def test_a_capture_whose_work_raises_is_ended_and_its_graph_destroyed(fake) -> None:
    from lbnet_deploy.runtime.cuda_layer import capture, load_cuda

    layer = load_cuda()
    stream = layer.stream()

    def broken() -> bool:
        raise LBNetError("CUDA call failed: CUDA_ERROR_ILLEGAL_ADDRESS")

    with pytest.raises(LBNetError, match="ILLEGAL_ADDRESS"):
        capture(layer, stream, broken)
    with pytest.raises(LBNetError, match="could not be enqueued under capture"):
        capture(layer, stream, lambda: False)
    assert len(fake.called("end_capture")) == len(fake.called("graph_destroy")) == 2
    assert fake.called("instantiate") == [] and fake.graphs == {}
    assert fake.streams[stream.handle].captured is None  # out of capture mode


def test_streams_run_batches_at_once_and_fewer_when_contexts_run_out(
    fake, tmp_path, monkeypatch, caplog
) -> None:
    from tests import fake_tensorrt

    build_engine(graph(tmp_path / "g.onnx", [1, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    runner = TensorRTRunner(tmp_path / "g.plan", streams=3)
    assert runner.streams == 3 and len(fake.called("mem_alloc")) == 6
    assert len({h for _, h, _, _ in fake.timeline}) == 3  # each slot's own stream
    runner.close()
    with pytest.raises(LBNetError, match="streams must be at least 1"):
        TensorRTRunner(tmp_path / "g.plan", streams=0)
    made: list[int] = []
    create = fake_tensorrt._Engine.create_execution_context

    def second_fails(self):  # device memory for one context only
        made.append(1)
        return create(self) if len(made) == 1 else None

    monkeypatch.setattr(fake_tensorrt._Engine, "create_execution_context", second_fails)
    with caplog.at_level("WARNING", logger="lbnet_deploy"):
        runner = TensorRTRunner(tmp_path / "g.plan")
    assert runner.streams == 1 and "device memory for 1 execution contexts only" in caplog.text
    x = _batches(1, (1, 3, 16, 16))[0]
    np.testing.assert_array_equal(runner.infer(x), nearest(x, 4))
    runner.close()


def test_upscaler_overlaps_host_work_with_the_device_bit_for_bit(fake, tmp_path) -> None:
    """A fake GPU that takes 40 ms per batch: while it runs batch k the Upscaler merges batch
    k-1 (measured: a merge inside an engine run) and the other stream uploads batch k+1 (an
    upload inside an engine run on another stream); the image is the one-stream image exactly."""
    from lbnet_deploy.runtime import tiling

    build_engine(graph(tmp_path / "g.onnx", [2, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    image = np.random.default_rng(3).integers(0, 256, (50, 61, 3), dtype=np.uint8)
    serial = Upscaler(
        TensorRTRunner(tmp_path / "g.plan", streams=1), overlap=4, batch=2, in_flight=1
    )
    assert serial.in_flight == 1
    expected = serial.upscale(image)
    serial.runner.close()  # type: ignore[attr-defined]
    fake.device_ms, fake.timeline[:] = 40.0, []
    merges: list[tuple[float, float]] = []
    add = tiling.Merger.add

    def timed_add(self, tile, sr) -> None:
        start = time.perf_counter()
        add(self, tile, sr)
        merges.append((start, time.perf_counter()))

    upscaler = Upscaler(TensorRTRunner(tmp_path / "g.plan"), overlap=4, batch=2)
    # one more than the two streams: each batch in flight holds one of the three output
    # buffers until merged
    assert upscaler.plan(50, 61).in_flight == 3
    tiling.Merger.add = timed_add  # type: ignore[method-assign]
    try:
        out = upscaler.upscale(image)
    finally:
        tiling.Merger.add = add  # type: ignore[method-assign]
    np.testing.assert_array_equal(out, expected)
    runs = [(h, a, b) for what, h, a, b in fake.timeline if what == "engine"]
    uploads = [(h, a, b) for what, h, a, b in fake.timeline if what == "htod"]
    # a run per batch of 2 tiles, and each slot's run before its capture
    assert len(runs) == len(upscaler.plan(50, 61).grid.tiles()) // 2 + 2
    assert any(a < m0 and m1 < b for _, a, b in runs for m0, m1 in merges)
    assert any(h != hu and a < u0 < b for h, a, b in runs for hu, u0, _ in uploads)


def test_upscaler_tiles_through_a_fixed_engine(fake, tmp_path) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    build_engine(src, tmp_path / "g.plan", BuildOptions())
    image = np.random.default_rng(1).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    out = Upscaler(TensorRTRunner(tmp_path / "g.plan"), overlap=4).upscale(image)
    assert out.shape == (148, 180, 3)
    np.testing.assert_array_equal(out, nearest(image.transpose(2, 0, 1), 4).transpose(1, 2, 0))


def test_runner_refuses_mismatched_engines(monkeypatch, tmp_path) -> None:
    FakeTensorRT().install(monkeypatch)
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    engine = tmp_path / "g.plan"
    build_engine(src, engine, BuildOptions())
    FakeTensorRT(version="10.3.0").install(monkeypatch)
    with pytest.raises(LBNetError, match=r"built with TensorRT 10.13.0.35, this is 10.3.0"):
        TensorRTRunner(engine)
    FakeTensorRT(version="10.13.0.36").install(monkeypatch)  # patch releases refuse too
    with pytest.raises(LBNetError, match=r"this is 10.13.0.36: rebuild"):
        TensorRTRunner(engine)
    FakeTensorRT(compute_capability=(8, 7), gpu_name="Orin").install(monkeypatch)
    with pytest.raises(LBNetError, match=r"compute capability 8.9 .*this Orin is 8.7"):
        TensorRTRunner(engine)
    FakeTensorRT().install(monkeypatch)
    side = sidecar_path(engine)
    facts = json.loads(side.read_text())
    side.write_text(json.dumps({**facts, "input_shape": [1, 3, 32, 32]}))
    with pytest.raises(LBNetError, match="do not belong together"):
        TensorRTRunner(engine)
    side.unlink()
    with pytest.raises(LBNetError, match=r"no g.plan.json beside it"):
        TensorRTRunner(engine)
    engine.write_bytes(b"\x00garbage")
    side.write_text(json.dumps(facts))
    with pytest.raises(LBNetError, match="could not deserialize"):
        TensorRTRunner(engine)


def test_cli_build_info_and_upscale_with_an_engine(fake, tmp_path, capsys) -> None:
    from PIL import Image

    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16], precision="fp16")
    assert main(["build", str(src), "-o", str(tmp_path / "g.plan")]) == 0
    assert "built fp16 engine" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "g.plan")]) == 0
    info = capsys.readouterr().out
    assert "LBNet-T x4" in info and "tensorrt: 10.13.0.35" in info
    Image.fromarray(np.full((20, 21, 3), 77, np.uint8)).save(tmp_path / "a.png")
    # an engine file picks the tensorrt backend by itself
    code = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                 "--model", str(tmp_path / "g.plan"), "-q"])  # fmt: skip
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (80, 84, 3)
    assert main(["build", str(src), "-o", str(tmp_path / "g.bin")]) == 2
    assert "name the engine file .engine, .plan, .trt" in capsys.readouterr().err


def test_no_cuda_graph_enqueues_engines_and_is_refused_elsewhere(
    fake, tmp_path, capsys, monkeypatch
) -> None:
    from PIL import Image

    from lbnet_deploy import resolve

    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    assert main(["build", str(src), "-o", str(tmp_path / "g.plan")]) == 0
    Image.fromarray(np.full((20, 21, 3), 77, np.uint8)).save(tmp_path / "a.png")
    run = ["upscale", str(tmp_path / "a.png"), "--model", str(tmp_path / "g.plan"), "-q"]
    fake.calls.clear()
    assert main([*run, "-o", str(tmp_path / "plain"), "--no-cuda-graph"]) == 0
    assert "cuda_graph" not in capsys.readouterr().err
    assert fake.called("begin_capture") == fake.called("graph_launch") == []
    assert main([*run, "-o", str(tmp_path / "graphs")]) == 0
    assert fake.called("begin_capture") and fake.called("graph_launch")
    for name in ("plain", "graphs"):
        assert np.asarray(Image.open(tmp_path / name / "a.png")).shape == (80, 84, 3)
    monkeypatch.setattr(resolve, "model_file", lambda *a, **k: pytest.fail("exported first"))
    refused = [
        ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "x"), "--model", str(src),
         "--backend", "ort", "--no-cuda-graph"],
        ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "x"), "--no-cuda-graph"],
        ["parity", str(src), "--reference", "lbnet-t-x4", "--no-cuda-graph"],
    ]  # fmt: skip
    for args in refused:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "--no-cuda-graph is for TensorRT engines" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_onnx_on_tensorrt_backend_builds_once_and_caches(fake, tmp_path, monkeypatch) -> None:
    from lbnet_deploy.loaders import open_runner

    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "cache"))
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    first = open_runner(str(src), "tensorrt", tile=24, batch=2)
    second = open_runner(str(src), "tensorrt", tile=24, batch=2)
    assert first.input_size == second.input_size == (24, 24) and first.max_batch == 2
    assert len(fake.called("build_serialized_network")) == 1
    names = sorted(p.name for p in (tmp_path / "cache" / "engines").iterdir())
    assert len(names) == 2 and names[0].endswith(".plan") and names[1] == names[0] + ".json"
    assert "-2x3x24x24-trt10.13.0.35-v" in names[0] and names[0].endswith("-sm8.9.plan")


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on our machines (and true on a GPU machine too for these tests): no TensorRT."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_without_tensorrt_the_error_says_what_to_install(no_tensorrt, tmp_path, capsys) -> None:
    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    assert main(["build", str(src), "-o", str(tmp_path / "g.plan")]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "lbnet-deploy[trt]" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [src]


def test_bench_times_engines_only_where_tensorrt_runs(monkeypatch, photo_folder) -> None:
    from lbnet_deploy.benchmarks.models import skip_reason

    monkeypatch.setenv("LBNET_CALIB_DIR", str(photo_folder))  # INT8 engines need photos

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert "TensorRT is not installed" in (skip_reason("tensorrt", "fp32") or "")
    FakeTensorRT().install(monkeypatch)
    assert skip_reason("tensorrt", "int8") is None
    assert skip_reason("tensorrt", "fp16") is None


def test_tensorrt_backend_fails_before_any_download_or_export(no_tensorrt, monkeypatch) -> None:
    from lbnet_deploy import resolve
    from lbnet_deploy.loaders import open_runner

    monkeypatch.setattr(resolve, "model_file", lambda *a, **k: pytest.fail("exported first"))
    with pytest.raises(LBNetError, match="TensorRT is not installed"):
        open_runner("lbnet-t-x4", "tensorrt")


def test_serving_an_engine_needs_no_torch_onnx_or_onnxruntime(fake, tmp_path) -> None:
    """The Jetson case: upscale with an engine where only numpy, TensorRT and a CUDA binding
    exist (the fixture's)."""
    import subprocess
    import sys

    from PIL import Image

    from .conftest import REPO

    build_engine(graph(tmp_path / "g.onnx", [1, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    Image.fromarray(np.full((20, 21, 3), 9, np.uint8)).save(tmp_path / "a.png")
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'onnxruntime'): sys.modules[name] = None\n"
        "from tests.fake_tensorrt import FakeTensorRT\n"
        f"FakeTensorRT(cuda={fake.cuda!r}).install_for_good()\n"
        "from lbnet_deploy.cli import main\n"
        f"code = main(['upscale', r'{tmp_path / 'a.png'}', '-o', r'{tmp_path / 'out'}',\n"
        f"             '--model', r'{tmp_path / 'g.plan'}', '-q'])\n"
        "assert code == 0 and all(sys.modules[n] is None for n in ('torch', 'onnx'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert Image.open(tmp_path / "out" / "a.png").size == (84, 80)


def test_failed_rebuild_keeps_the_old_engine_and_sidecar(fake, tmp_path, monkeypatch) -> None:
    from lbnet_deploy.runtime import atomic

    src = graph(tmp_path / "g.onnx", [1, 3, 16, 16])
    engine = tmp_path / "g.plan"
    build_engine(src, engine, BuildOptions())
    before = engine.read_bytes(), sidecar_path(engine).read_text()
    written: list[int] = []

    def disk_full_on_second_file(fd: int, mode: int) -> None:
        written.append(fd)
        if len(written) == 2:  # the engine's temporary is complete, the sidecar's fails
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fchmod", disk_full_on_second_file)
    with pytest.raises(LBNetError, match=r"g\.plan\.json \(No space left on device\)"):
        build_engine(src, engine, BuildOptions(tf32=True))  # a different sidecar
    assert (engine.read_bytes(), sidecar_path(engine).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.plan", "g.plan.json"]


def test_bad_build_settings_fail_before_building(fake, tmp_path) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    cases = [
        (BuildOptions(input_size=(16, 16), batch=0), "--batch must be at least 1"),
        (BuildOptions(input_size=(0, 16)), "--input-size must be at least 1x1"),
        (BuildOptions(input_size=(16, 16), workspace_mb=-5), "--workspace must be at least 1"),
        (BuildOptions(input_size=(16, 16), timing_cache=tmp_path / "no" / "t.cache"),
         "timing cache folder does not exist"),
        (BuildOptions(input_size=(16, 16), calibration_cache=tmp_path / "c.cache"),
         "calibration cache not found"),
    ]  # fmt: skip
    for options, message in cases:
        with pytest.raises(LBNetError, match=message):
            build_engine(src, tmp_path / "d.plan", options)
    assert fake.called("build_serialized_network") == []
    assert list(tmp_path.iterdir()) == [src]


def test_engines_get_the_usual_file_permissions(fake, tmp_path) -> None:
    mask = os.umask(0o022)
    try:
        build_engine(
            graph(tmp_path / "g.onnx", [1, 3, 16, 16]), tmp_path / "g.plan", BuildOptions()
        )
    finally:
        os.umask(mask)
    for path in (tmp_path / "g.plan", tmp_path / "g.plan.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def _fixed_runner(tmp_path: Path) -> TensorRTRunner:
    build_engine(graph(tmp_path / "g.onnx", [1, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    return TensorRTRunner(tmp_path / "g.plan")


def test_close_frees_the_page_locked_host_buffers_too(fake, tmp_path) -> None:
    """Page-locked memory is freed with the device buffers, inside the context (left on the
    runner, it was freed later on whatever thread collected it)."""
    runner = _fixed_runner(tmp_path)
    runner.infer(np.zeros((1, 3, 16, 16), np.float32))
    streams = runner.streams
    runner.close()
    # an input buffer per context, one output buffer more than the contexts
    assert len(fake.called("host_free")) == 2 * streams + 1
    assert runner._state.slots == [] and streams == 2
    for use in (lambda: runner.infer(np.zeros((1, 3, 16, 16), np.float32)), runner.layers):
        with pytest.raises(LBNetError, match="was closed"):  # layers() was a bare IndexError
            use()


def test_runner_is_safe_across_threads(fake, tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runner = _fixed_runner(tmp_path)
    batches = [np.full((1, 3, 16, 16), v, np.float32) for v in range(12)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(runner.infer, batches))
    for value, out in enumerate(outs):  # the fake upsamples: every output is its own input's
        assert out.shape == (1, 3, 64, 64) and np.all(out == value)


def test_a_lease_is_read_in_its_output_buffer_which_takes_nothing_else_until_released(
    fake, tmp_path
) -> None:
    """`submit` downloads a batch's output into a page-locked output buffer and leaves it
    there (no copy: the Upscaler merges from there), keeping the buffer until the lease is
    released while the contexts run other batches; `close` waits for a lease as for a batch
    under way."""
    import threading

    runner = _fixed_runner(tmp_path)  # batch 1, two contexts, three output buffers
    assert runner.streams == 2 and runner.leases == 3
    x = np.full((1, 3, 16, 16), 7, np.float32)
    leases = [runner.submit(x + i).wait() for i in range(3)]
    buffers = [output.array for output in runner._state.outputs]
    owners = [[np.shares_memory(leased.out, b) for b in buffers] for leased in leases]
    assert sorted(owners) == [[False, False, True], [False, True, False], [True, False, False]]
    assert [float(leased.out.mean()) for leased in leases] == [7, 8, 9]
    assert not any(leased.owned for leased in leases)
    # every buffer leased, every context free again: a fourth batch waits for a buffer
    assert runner._free_out.qsize() == 0 and runner._free.qsize() == runner.streams
    first, *rest = leases
    first.release()
    first.release()  # idempotent
    np.testing.assert_array_equal(runner.infer(x + 3), nearest(x + 3, 4))
    assert [float(leased.out.mean()) for leased in rest] == [8, 9]  # untouched meanwhile
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (runner.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.2)  # waits for the leases
    for leased in rest:
        leased.release()
    closer.join(5)
    assert closed.is_set() and runner._state.slots == runner._state.outputs == []
    with pytest.raises(LBNetError, match="was closed"):
        runner.submit(x)


@pytest.mark.parametrize("io", ["255", "unit"])
def test_fp16_outputs_are_copied_out_and_one_context_lends_two_buffers(
    fake, tmp_path, io: str
) -> None:
    """An engine with FP16 outputs converts them: its leases are copies and free the buffer at
    once. One context has two output buffers, so the Upscaler merges one batch while the
    device runs the next, as with two; a unit-range engine's leases repeat."""
    import onnx
    from onnx import TensorProto

    src = graph(tmp_path / "h.onnx", [1, 3, 16, 16], io=io)
    model = onnx.load(src)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(model, src)
    build_engine(src, tmp_path / "h.plan", BuildOptions())
    half = TensorRTRunner(tmp_path / "h.plan")
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 16, 16)).astype(np.float32)
    expected = half.infer(x)
    with half.submit(x).wait() as leased:
        assert not half.lends_buffers and leased.owned and leased.out.dtype == np.float32
        assert half._free_out.qsize() == half.leases
        np.testing.assert_array_equal(leased.out, expected)
    half.close()
    build_engine(graph(tmp_path / "g.onnx", [1, 3, 16, 16], io=io), tmp_path / "g.plan",
                 BuildOptions())  # fmt: skip
    two, one = TensorRTRunner(tmp_path / "g.plan"), TensorRTRunner(tmp_path / "g.plan", streams=1)
    assert two.lends_buffers and one.lends_buffers and (one.streams, one.leases) == (1, 2)
    expected = two.infer(x)
    for _ in range(4):  # scaled to 0..255 in the buffer each time, from the device's new copy
        with two.submit(x).wait() as leased:
            assert not leased.owned
            np.testing.assert_array_equal(leased.out, expected)
    image = np.random.default_rng(1).integers(0, 256, (40, 37, 3), dtype=np.uint8)
    assert Upscaler(two, overlap=4).plan(40, 37).in_flight == 3
    assert Upscaler(one, overlap=4).plan(40, 37).in_flight == 2  # the context and one more
    np.testing.assert_array_equal(
        Upscaler(one, overlap=4).upscale(image), Upscaler(two, overlap=4).upscale(image)
    )
    two.close()
    one.close()


def test_an_execution_context_that_cannot_be_made_is_one_line(fake, tmp_path, monkeypatch) -> None:
    from tests import fake_tensorrt

    build_engine(graph(tmp_path / "g.onnx", [1, 3, 16, 16]), tmp_path / "g.plan", BuildOptions())
    monkeypatch.setattr(fake_tensorrt._Engine, "create_execution_context", lambda self: None)
    with pytest.raises(LBNetError, match="could not create an execution context"):
        TensorRTRunner(tmp_path / "g.plan")


def test_gpu_tests_are_gated_on_our_own_probes(monkeypatch) -> None:
    """The TensorRT checks of test_gpu.py run wherever TensorRT and a CUDA binding work, not
    only where torch sees CUDA; elsewhere they skip with the probe's reason."""
    from .test_gpu import _tensorrt_missing

    FakeTensorRT(cuda="cuda-python").install(monkeypatch)
    assert _tensorrt_missing() is None
    for name in ("cuda", "cuda.bindings", "cuda.bindings.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    assert "cuda-python (or pycuda) is not installed" in (_tensorrt_missing() or "")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert "TensorRT is not installed" in (_tensorrt_missing() or "")


# --- the engine inspector (`TensorRTRunner.layers`, `info --layers`) ---------------------------

# Two entries as TensorRT writes them: a quantized convolution (trt-engine-explorer's example
# resnet-qat graph JSON) and a Myelin kernel of TensorRT 10 ("kgen", kgen's short type names,
# the fused ONNX nodes' metadata joined by the unit separator, a node with a property).
INSPECTOR_JSON = json.dumps({
    "Layers": [
        {"Name": "conv1.weight + QuantizeLinear_7 + Conv_9", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x", "Location": "Device", "Dimensions": [32, 3, 224, 224],
                     "Format/Datatype": "Four wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "y", "Location": "Device", "Dimensions": [32, 64, 112, 112],
                      "Format/Datatype": "Row major linear FP32"}],
         "ParameterType": "Convolution", "Weights": {"Count": 9408, "Type": "Int8"},
         "TacticValue": "0xb29abdd00304c881"},
        {"Name": "__myl_CastMulMeanSubMulMeanAddSqrtDivMulAddCast_myl0_3", "LayerType": "kgen",
         "Inputs": [{"Name": "__mye1", "Location": "Device", "Dimensions": [1, 1024, 54],
                     "Format/Datatype": "Half"}],
         "Outputs": [{"Name": "__mye2", "Location": "Device", "Dimensions": [1, 1024, 54],
                      "Format/Datatype": "Half"}],
         "Metadata": "[ONNX Layer: /t/Cast]\x1f[ONNX Layer: /t/norm/LayerNormalization | "
                     "Local Function: ln]\x1e[ONNX Layer: /t/Cast_1]",
         "TacticValue": "0x0", "StreamId": 0},
    ],
    "Bindings": ["x", "y"],
})  # fmt: skip


def test_engine_layers_are_read_as_trtexec_and_trex_write_them() -> None:
    from lbnet_deploy.runtime.trt_common import EngineLayer, parse_layers, tensor_precision

    conv, norm = parse_layers(INSPECTOR_JSON, "e.plan")
    assert conv == EngineLayer(
        "conv1.weight + QuantizeLinear_7 + Conv_9", "Convolution", ("int8",), ("fp32",), "int8",
        ("conv1.weight", "QuantizeLinear_7", "Conv_9"),  # no metadata: the fused name's parts
    )  # fmt: skip
    assert norm.kind == "kgen" and norm.inputs == norm.outputs == ("fp16",) and norm.weights is None
    assert norm.onnx_nodes == ("/t/Cast", "/t/norm/LayerNormalization", "/t/Cast_1")
    for text, precision in [
        ("Row major linear FP32", "fp32"), ("Channel major FP16 format where channel % 8 == 0",
        "fp16"), ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
        ("Row major linear UInt8 format", "uint8"), ("Row major linear BFloat16 format", "bf16"),
        ("Float", "fp32"), ("Unknown format", "?"),
    ]:  # fmt: skip
        assert tensor_precision(text) == precision, text
    names_only = json.dumps({"Layers": ["conv", "norm"], "Bindings": ["x", "y"]})
    for text, says in [
        (names_only, "no detailed layer information .* rebuild it with `lbnet-deploy build`"),
        (json.dumps({"Layers": []}), "no detailed layer information"),
        ("{not json", "engine information is not the JSON expected"),
    ]:
        with pytest.raises(LBNetError, match=says):
            parse_layers(text, "e.plan")


def _layer(nodes: tuple[str, ...], inputs: tuple[str, ...], weights: str | None = None):
    from lbnet_deploy.runtime.trt_common import EngineLayer

    return EngineLayer("+".join(nodes), "kgen", inputs, inputs, weights, nodes)


def test_the_gpu_tests_precision_checks_catch_what_they_are_for(export_cache) -> None:
    """test_gpu's per-layer checks, on layer lists as the inspector gives them: a LayerNorm the
    FP16 engine runs in FP16 (its Cast to FP32 not fused in, FP16 input), or a quantized Conv
    in FP16, is named; FP32 inputs, or the Cast fused with the norm, and INT8 data or weights
    pass; a node in no layer is named too."""
    import onnx

    from lbnet_deploy.export.fp16 import to_fp16

    from .test_gpu import int8_conv_problems, layernorm_problems

    half = to_fp16(onnx.load(export_cache("random-LBNet-T-x4", (16, 16))))
    producer = {o: n for n in half.graph.node for o in n.output}
    norms = [(n.name, producer[n.input[0]].name) for n in half.graph.node
             if n.op_type == "LayerNormalization"]  # fmt: skip
    assert norms and all(producer[n.input[0]].op_type == "Cast" for n in half.graph.node
                         if n.op_type == "LayerNormalization")  # fmt: skip
    fused = [_layer((cast, norm), ("fp16",)) for norm, cast in norms]
    assert layernorm_problems(fused, half) == []
    assert layernorm_problems([_layer((norm,), ("fp32",)) for norm, _ in norms], half) == []
    dropped = [_layer((norm,), ("fp16",)) for norm, _ in norms]
    assert len(layernorm_problems(dropped, half)) == len(norms)
    assert layernorm_problems(fused[1:], half) == [f"{norms[0][0]}: in no engine layer"]

    def qdq_conv(name: str) -> onnx.NodeProto:
        return onnx.helper.make_node("Conv", [f"{name}_x", f"{name}_w"], [f"{name}_y"], name=name)

    dq = [onnx.helper.make_node("DequantizeLinear", ["q", "s"], [f"c{i}_{t}"], name=f"dq{i}{t}")
          for i in (0, 1) for t in "xw"]  # fmt: skip
    plain = onnx.helper.make_node("Conv", ["f", "w"], ["g"], name="float_conv")
    graph = onnx.helper.make_model(
        onnx.helper.make_graph([*dq, qdq_conv("c0"), qdq_conv("c1"), plain], "g", [], [])
    )
    good = [_layer(("c0",), ("int8",)), _layer(("c1",), ("fp32",), weights="int8")]
    assert int8_conv_problems(good, graph) == []
    bad = [_layer(("c0",), ("fp16",), weights="fp16"), _layer(("c1", "float_conv"), ("int8",))]
    assert int8_conv_problems(bad, graph) == ["c0: layer 'c0' reads ('fp16',), weights fp16"]


def test_info_layers_reads_the_detailed_engine_through_the_inspector(
    fake, tmp_path, capsys
) -> None:
    """`build` keeps detailed layer information; `info --layers` asks the inspector for JSON
    with an execution context set (shape-dependent formats need it) and prints each layer; an
    engine built without the detail, and an .onnx file, are one line each."""
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"], precision="fp16")
    engine = tmp_path / "d.plan"
    args = ["build", str(src), "-o", str(engine), "--input-size", "16x16"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["info", str(engine), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "1 layers (by the type of their first input: 1 fp32)" in out  # fp32 lr in
    assert "kgen" in out and "fp32 -> fp32" in out and out.rstrip().endswith("output")
    assert fake.called("get_engine_information") == [("JSON",)]
    spec = json.loads(engine.read_bytes())
    engine.write_bytes(json.dumps({**spec, "verbosity": "LAYER_NAMES_ONLY"}).encode())
    assert main(["info", str(engine), "--layers"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no detailed layer information" in err and len(err.splitlines()) == 1
    assert main(["info", str(src), "--layers"]) == 2
    assert "--layers is for TensorRT engines" in capsys.readouterr().err
