"""`lbnet-deploy triton`: the config.pbtxt we write is parsed with Triton's own ModelConfig
message (tritonclient[grpc]), for an engine and for fixed- and dynamic-batch ONNX graphs."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from lbnet_deploy.cli import main
from lbnet_deploy.export.engine_build import BuildOptions, build_engine
from lbnet_deploy.runtime.trt_common import EngineFacts

from .conftest import stand_in_graph as graph
from .conftest import texture
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
    assert not config.input[0].allow_ragged_batch  # ORT's backend stacks a batch into one array
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


# --- image repositories (`triton --images`): written and checked here, served in
# test_triton_server.py


def image_repo(tmp_path, src, *options: str) -> tuple[object, object]:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    argv = ["triton", str(src), "--repository", str(repo), "--images", "--name", "sr"]
    assert main([*argv, *options]) == 0
    return parse(repo / "sr" / "config.pbtxt"), parse(repo / "sr_tiles" / "config.pbtxt")


def test_cpu_image_repository_is_two_python_models(tmp_path) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    options = ["--cpu", "--tile", "48", "--overlap", "8", "--merge", "crop", "--memory-budget",
               "512", "--image-instances", "3", "--queue-delay-us", "500",
               "--max-batch", "6"]  # fmt: skip
    image, tiles = image_repo(tmp_path, src, *options)
    assert image.backend == tiles.backend == "python" and image.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in image.input] == [("image", [-1, -1, 3])]
    assert image.input[0].data_type == config_proto().TYPE_UINT8
    assert image.instance_group[0].count == 3
    p = {k: v.string_value for k, v in image.parameters.items()}
    assert (p["role"], p["tile_model"], p["tile"], p["overlap"], p["merge"]) == (
        "image", "sr_tiles", "48", "8", "crop",
    )  # fmt: skip
    assert p["memory_budget_mb"] == "512" and p["lbnet.scale"] == "4"
    assert tiles.max_batch_size == 6 and list(tiles.input[0].dims) == [3, -1, -1]
    assert tiles.input[0].allow_ragged_batch  # each request runs on its own: any shapes batch
    assert tiles.dynamic_batching.max_queue_delay_microseconds == 500
    warm = tiles.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs["lr"].dims) == [3, 48, 48]
    assert tiles.parameters["backend"].string_value == "ort"
    repo = tmp_path / "repo"
    assert (repo / "sr_tiles" / "1" / "model.onnx").read_bytes() == src.read_bytes()
    # each model.py is the class of its role, from the copy of our runtime beside it
    for model, cls in (("sr", "ImageModel"), ("sr_tiles", "TileModel")):
        folder = repo / model / "1"
        code = "import model, lbnet_deploy; print(model.TritonPythonModel.__name__)"
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=folder
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == cls


def test_a_vendored_model_imports_its_own_copy(tmp_path) -> None:
    """As Triton's stub loads it (pb_stub.cc, ModelContext::StubSetup: the version folder and
    its parent appended to sys.path, `import 1.model`, from another folder) with another
    lbnet_deploy installed ahead on sys.path: the model imports the copy beside it. The same
    model.py without its sys.path line gets the installed one, so the check can fail."""
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    image_repo(tmp_path, src, "--cpu")
    folder = tmp_path / "repo" / "sr" / "1"
    installed = tmp_path / "site" / "lbnet_deploy"
    (installed / "runtime").mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (installed / "runtime" / "__init__.py").write_text("")
    code = (
        "import importlib, sys\n"
        f"sys.path += [{str(folder)!r}, {str(folder.parent)!r}]\n"
        "model = importlib.import_module('1.model')\n"
        "import lbnet_deploy\n"
        "print(lbnet_deploy.__file__, model.TritonPythonModel.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed.parent)}

    def load() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
        )

    done = load()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(folder / "lbnet_deploy" / "__init__.py"), "ImageModel"]
    assert (folder / "lbnet_deploy" / "runtime" / "upscaler.py").is_file()
    model_py = folder / "model.py"
    model_py.write_text("".join(ln for ln in model_py.read_text().splitlines(True)
                                if not ln.startswith("sys.path.insert")))  # fmt: skip
    assert load().stdout.split()[0] == str(installed / "__init__.py")


def test_engine_image_repository_keeps_the_plan_and_its_fixed_shape(monkeypatch, tmp_path) -> None:
    FakeTensorRT().install(monkeypatch)
    engine = tmp_path / "t.plan"
    build_engine(graph(tmp_path / "g.onnx", [2, 3, 16, 24], "fp16"), engine, BuildOptions())
    image, tiles = image_repo(tmp_path, engine)
    assert tiles.platform == "tensorrt_plan" and list(tiles.input[0].dims) == [2, 3, 16, 24]
    p = {k: v.string_value for k, v in image.parameters.items()}
    assert (p["tile_batching"], p["lbnet.input_size"], p["lbnet.batch"]) == ("fixed", "16x24", "2")
    assert p["tile_input"] == "input"
    assert p["tile_type"] == config_proto().DataType.Name(tiles.input[0].data_type)
    from lbnet_deploy.runtime.triton_backend import BlsTileRunner

    runner = BlsTileRunner(p, "test")  # what the image model plans with
    assert runner.input_size == (16, 24) and runner.max_batch == 2 and runner.scale == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--images", "--cpu", "--tile", "4000"], "over the memory budget"),
        (["--images", "--cpu", "--memory-budget", "1"], "too small"),
        (["--images", "--cpu", "--overlap", "-1"], "at least 0"),
        (["--images", "--cpu", "--queue-delay-us", "-5"], "at least 0"),
        (["--tile", "64"], "for --images repositories only"),
        (["--images", "--precision", "fp16"], "has its own precision"),
        (["--images", "--cpu", "--name", "x/y"], "plain folder"),
        (["--images", "--cpu", "--name", "taken"], "already exists"),
        (["--images", "--cpu", "--name", "a" * 250], "characters long"),  # with _tiles: 256
        (["--images", "--cpu", "--batch", "16"], "--batch 16 is over --max-batch 8"),
        (["--images", "--batch", "5", "--max-batch", "4"], "--batch 5 is over --max-batch 4"),
    ],
)
def test_bad_image_repository_options_are_one_line_and_write_nothing(
    tmp_path, capsys, options, message
) -> None:
    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    repo = tmp_path / "repo"
    (repo / "taken_tiles").mkdir(parents=True)
    assert main(["triton", str(src), "--repository", str(repo), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in repo.iterdir()] == ["taken_tiles"]


def test_request_settings_are_checked() -> None:
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.triton_backend import request_settings

    defaults = {"tile": None, "overlap": 16, "merge": "feather", "batch": 1}
    got = request_settings('{"tile": 0, "overlap": 4, "merge": "crop"}', defaults)
    assert got == {"tile": None, "overlap": 4, "merge": "crop", "batch": 1}
    for text in ('{"tile": true}', '{"tile": 1.5}', '{"rows": 2}', '{"merge": "x"}'):
        with pytest.raises(LBNetError):
            request_settings(text, defaults)


# --- the client and the local server: what fails before any server answers


def test_the_triton_backend_fails_in_one_line_without_a_server(tmp_path, capsys) -> None:
    from lbnet_deploy.serve import free_port

    (tmp_path / "in").mkdir()
    Image.fromarray(texture(8, 8)).save(tmp_path / "in" / "a.png")
    url = f"127.0.0.1:{free_port()}"
    cases = [
        (["--backend", "triton", "--url", url], f"Triton at {url}, model lbnet_t_x4_fp32"),
        (["--backend", "triton", "--model", "m.onnx"], "runs a model on the server"),
        (["--backend", "triton", "--model", "sr", "--precision", "fp16"], "drop --precision"),
        (["--backend", "ort", "--url", url, "--model", "x.onnx"], "--url is for --backend triton"),
    ]
    for options, message in cases:
        argv = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q", *options]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_serve_refuses_what_the_wheels_server_cannot_run(tmp_path, capsys, monkeypatch) -> None:
    plan_repo = tmp_path / "plans"
    (plan_repo / "m").mkdir(parents=True)
    (plan_repo / "m" / "config.pbtxt").write_text('name: "m"\nplatform: "tensorrt_plan"\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.whl").write_text("not a zip")
    monkeypatch.setenv("LBNET_TRITON_DIR", str(tmp_path / "home"))
    stray = tmp_path / "stray"
    (stray / "m").mkdir(parents=True)
    (stray / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    (stray / ".m.k3j2h1" / "m").mkdir(parents=True)  # a killed run's staging folder
    (tmp_path / "bare" / "m").mkdir(parents=True)
    cases = [
        (["--triton", str(stray)], "a hidden folder"),
        (["--triton", str(tmp_path / "bare")], "is no model"),
        (["--triton", str(tmp_path / "nope")], "does not exist"),
        (["--triton", str(tmp_path / "empty")], "holds no model"),
        (["--triton", str(plan_repo)], "runs tensorrt_plan"),
        (["--prepare", "--wheel", str(tmp_path / "fake.whl")], "not the nvidia-pytriton wheel"),
        ([], "--triton REPOSITORY"),
    ]
    for options, message in cases:
        assert main(["serve", *options]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_offline_without_the_wheel_is_one_line_naming_wheel(tmp_path, monkeypatch) -> None:
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.serve import obtain_wheel

    monkeypatch.setenv("LBNET_TRITON_DIR", str(tmp_path))
    monkeypatch.delenv("LBNET_PYTRITON_WHEEL", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, as offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(LBNetError, match="give it with --wheel PATH") as err:
        obtain_wheel()
    assert len(str(err.value).splitlines()) == 1
    assert list((tmp_path / "wheels").iterdir()) == []  # nothing half-downloaded


def test_offline_the_environment_is_one_line_saying_to_prepare_online(
    tmp_path, monkeypatch
) -> None:
    """`serve --prepare --wheel W` offline said only "No matching distribution found for
    onnxruntime==..." (as if the version did not exist)."""
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.serve import backend_env

    monkeypatch.setenv("LBNET_TRITON_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, as offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(LBNetError) as err:
        backend_env({"ort"})
    text = str(err.value)
    assert "No matching distribution" in text and "no package index reachable" in text
    assert "lbnet-deploy serve --prepare" in text and len(text.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_with_onnxruntime_gpu_only_the_server_takes_the_cpu_package_and_says_so(
    tmp_path, monkeypatch
) -> None:
    import importlib.metadata

    import lbnet_deploy.serve as serve
    from lbnet_deploy.errors import LBNetError

    def version(name: str) -> str:
        if name == "onnxruntime-gpu":
            return "1.31.1"
        raise importlib.metadata.PackageNotFoundError(name)

    def pip(args, python, offline) -> None:  # what pip says where the index lacks the version
        raise LBNetError(f"pip install {' '.join(args[1:])} failed: ERROR: No matching "
                         "distribution found for onnxruntime==1.31.1")  # fmt: skip

    monkeypatch.setattr(serve.importlib.metadata, "version", version)
    monkeypatch.setattr(serve, "_pip", pip)
    monkeypatch.setenv("LBNET_TRITON_DIR", str(tmp_path))
    assert serve.env_requirements({"ort"}) == ["numpy<2", "pillow>=10", "onnxruntime==1.31.1"]
    with pytest.raises(LBNetError, match=r"this installation has onnxruntime-gpu 1\.31\.1; the "
                       "server, on the CPU, takes the CPU package onnxruntime"):  # fmt: skip
        serve.backend_env({"ort"})


def test_a_busy_port_is_refused_before_anything_starts(tmp_path) -> None:
    import socket

    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.serve import TritonServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(LBNetError, match="choose another --grpc-port"):
            TritonServer(tmp_path, grpc_port=s.getsockname()[1]).start()


def test_bench_triton_without_a_server_records_why(
    tmp_path, checkpoint, export_cache, shared_cache
) -> None:
    import json

    from lbnet_deploy.serve import free_port

    export_cache("random-LBNet-T-x4")  # the graph the in-process side runs, in shared_cache
    (tmp_path / "set").mkdir()
    Image.fromarray(texture(12, 10)).save(tmp_path / "set" / "a.png")
    url = f"127.0.0.1:{free_port()}"
    argv = ["bench", "--model", str(checkpoint("random-LBNet-T-x4")), "--backend", "triton",
            "--url", url, "--served-model", "sr", "--runs", "1", "--dataset", str(tmp_path / "set"),
            "--json", str(tmp_path / "b.json")]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["forward"] == [] and result["triton"] is None
    (skip,) = result["skipped"]
    assert skip["config"] == "triton" and f"Triton at {url}" in skip["reason"]
    assert main(["bench", "--url", url]) == 2  # --url without --backend triton
    assert main([*argv, "--clients", "0"]) == 2
    assert main(argv[:7] + argv[9:]) == 2  # a checkpoint names no served model


def test_the_results_section_judges_the_goal() -> None:
    from lbnet_deploy.benchmarks.markdown import _serving

    lat = {"median_s": 1.5, "p99_s": 3.25}
    result = {"triton": {
        "clients": 4, "images": 5, "dataset": "Set5/LR_bicubic/X4", "server": "local",
        "rounds": [{"ratio": 0.93}, {"ratio": 0.78}, {"ratio": 0.85}], "ratio_median": 0.85,
        "goal": 0.8, "met": True, "triton_images_per_s": 2.1, "inprocess_images_per_s": 2.47,
        "triton_latency": lat, "inprocess_latency": {"median_s": 0.4, "p99_s": 0.9},
        "mismatches": 0, "errors": 0, "tile_batches": {"1": 60, "2": 3},
    }}  # fmt: skip
    text = "\n".join(_serving(result))
    assert "| images/s (median of rounds) | 2.10 | 2.47 |" in text
    assert "| latency p99 | 3250.0 | 900.0 |" in text
    assert "0.85x in-process (per round: 0.93, 0.78, 0.85); goal >= 0.8x: met" in text
    assert "60 x 1, 3 x 2" in text
    result["triton"] |= {"met": False}
    assert "**missed**" in "\n".join(_serving(result))


def test_the_serving_goal_is_missed_by_wrong_or_failed_images_however_fast() -> None:
    from lbnet_deploy.benchmarks.serving import GOAL_RATIO, goal_met

    fast = [GOAL_RATIO + 0.1] * 3
    assert goal_met(fast, 0, 0)
    assert not goal_met(fast, 1, 0) and not goal_met(fast, 0, 1)  # counted as met before
    assert not goal_met([GOAL_RATIO - 0.1] * 3, 0, 0)


def test_the_triton_client_refuses_what_its_image_model_cannot_take() -> None:
    """The image model is UINT8 in and out: a 16-bit file's uint16 samples were cast to uint8
    (wrapped modulo 256, a wrong image and exit 0); refused before any request is sent."""
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.runtime.triton_client import TritonRunner

    runner = TritonRunner.__new__(TritonRunner)  # no server: the check comes first
    runner.model, runner.url = "t4", "127.0.0.1:9"
    deep = np.random.default_rng(0).integers(9422, 50471, (20, 24, 3)).astype(np.uint16)
    for image, what in ((deep, "16-bit samples"), (deep.astype(np.float32), "float32")):
        with pytest.raises(LBNetError, match=f"serves 8-bit images and this one has {what}"):
            runner.upscale_image(image, {})


FAKE_SERVER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a 'stub'
print(child.pid, flush=True)
time.sleep(120)  # never ready
"""


def test_a_stop_while_the_server_loads_stops_it_and_its_children(
    tmp_path, monkeypatch, capsys
) -> None:
    """SIGTERM (or Ctrl-C) during the wait for readiness: the server runs in its own session, so
    only our stop() ends it; the wait's interruption used to propagate without it, leaving the
    server and its backend processes serving. The interruption is what the CLI's SIGTERM
    handler raises (`Terminated`), raised from the readiness poll once the server's child runs:
    a real SIGTERM sent to the test process from a thread ended pytest-xdist workers."""
    import signal

    from lbnet_deploy.cli import Terminated
    from lbnet_deploy.serve import TritonServer, free_port

    grpc = free_port()
    log = tmp_path / "logs" / f"server-{grpc}.log"  # where start() puts it in triton_home()
    command = [sys.executable, "-c", FAKE_SERVER]
    monkeypatch.setattr(TritonServer, "command", lambda self: (command, dict(os.environ)))

    def ready(self) -> bool:  # never ready; interrupted once the 'stub' has started
        if log.is_file() and log.read_text().strip():
            raise Terminated
        return False

    monkeypatch.setattr(TritonServer, "ready", ready)
    started: list[int] = []
    real_popen = subprocess.Popen

    def popen(*args, **kw):
        process = real_popen(*args, **kw)
        started.append(process.pid)
        return process

    monkeypatch.setattr(subprocess, "Popen", popen)

    def alive(group: int) -> bool:
        """A process of `group` runs (zombies, killed and not yet reaped by init, do not)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            running = []
            for stat_file in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError):
                    fields = stat_file.read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == group and fields[0] != "Z":
                        running.append(stat_file)
            if not running:
                return False
            time.sleep(0.1)
        return True

    previous = signal.getsignal(signal.SIGTERM)  # main() installs the CLI's handler
    try:
        monkeypatch.setattr("lbnet_deploy.serve.triton_home", lambda: tmp_path)
        ports = ["--grpc-port", str(grpc), "--http-port", str(free_port())]
        code = main(["serve", "--triton", str(tmp_path), *ports])
        assert code == 143 and "interrupted" in capsys.readouterr().err
        (group,) = started
        assert log.read_text().strip()  # the 'stub' had started
        assert not alive(group), "the server's process group outlived the command"
    finally:
        signal.signal(signal.SIGTERM, previous)
        for group in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def test_model_folders_are_staged_beside_the_repository(tmp_path, monkeypatch) -> None:
    """Triton loads every folder of a repository, hidden ones too: a staging folder inside it
    (left by a killed run, or seen by a server starting meanwhile) stopped the server. While
    a repository is written it holds nothing but finished models; nothing is left beside it."""
    import lbnet_deploy.export.triton as triton

    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    seen: list[list[str]] = []
    vendor = triton.vendor_runtime

    def vendor_and_look(folder) -> None:
        vendor(folder)
        seen.append(sorted(p.name for p in (tmp_path / "repo").iterdir()))

    monkeypatch.setattr(triton, "vendor_runtime", vendor_and_look)
    image_repo(tmp_path, src, "--cpu")
    assert seen == [[], []]  # the image model's and the tile model's copy, both staged outside
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["sr", "sr_tiles"]
    assert not list(tmp_path.glob(".lbnet-triton-staging.*"))


def test_a_repository_mounted_from_its_parents_file_system_is_staged_inside(
    tmp_path, monkeypatch
) -> None:
    """Where the rename from beside the repository fails across a (bind) mount, the folders
    are copied into a staging folder inside it and renamed from there; nothing is left."""
    import errno

    import lbnet_deploy.export.triton as triton

    repo = tmp_path / "repo"
    replace = os.replace

    def across_mounts(src, dst) -> None:
        if Path(dst).parent == repo and Path(src).parent.parent != repo:  # a model folder
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    monkeypatch.setattr(triton.os, "replace", across_mounts)
    image_repo(tmp_path, graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"]), "--cpu")
    assert sorted(p.name for p in repo.iterdir()) == ["sr", "sr_tiles"]
    assert (repo / "sr_tiles" / "1" / "model.onnx").is_file()
    assert not list(tmp_path.glob(".lbnet-triton-staging.*"))


CPU_START = [  # what every start of the wheel's server logs on a machine without a GPU
    'W1203 10:03:46.376104 14977 pinned_memory_manager.cc:273] "Unable to allocate pinned system '
    'memory, pinned memory pool will not be available: CUDA driver version is insufficient"',
    'E1203 10:03:46.376220 14977 server.cc:241] "CudaDriverHelper has not been initialized."',
    'I1203 10:03:46.378597 14977 model_lifecycle.cc:472] "loading: m:1"',
]


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (
            [
                'E1203 10:28:05.730181 26488 model_repository_manager.cc:724] "failed to load '
                "model '.empty': at least one version must be available under the version policy "
                "of model '.empty'\"",
                'W1203 10:28:08.408811 26488 pinned_memory_manager.cc:170] "failed to allocate"',
                "error: creating server: Internal - failed to load all models",
            ],
            "failed to load model '.empty': at least one version must be available",
        ),
        (
            ["error: creating server: Internal - failed to load all models"],
            "error: creating server: Internal - failed to load all models",
        ),
        (
            [
                'E1203 10:40:00.000001 1 grpc_server.cc:2466] "Failed to listen on port 8001"',
                'I1203 10:40:00.000002 1 server.cc:305] "Waiting for in-flight requests."',
            ],
            "Failed to listen on port 8001",
        ),
        (
            ["I1203 10:03:49.482129 14977 model_lifecycle.cc:839] \"successfully loaded 'm'\""],
            "no error in its log",
        ),
    ],
)
def test_the_servers_failure_is_the_line_that_says_why(tmp_path, tail, reason) -> None:
    """Not the first E line (every start without a GPU logs "CudaDriverHelper has not been
    initialized." first, which every failure used to be reported as)."""
    from lbnet_deploy.serve import TritonServer

    log = tmp_path / "server.log"
    log.write_text("\n".join([*CPU_START, *tail]) + "\n")
    assert TritonServer(tmp_path, log_path=log).failure().startswith(reason)


def test_a_usage_message_gives_its_last_line_and_equal_ports_are_refused(tmp_path) -> None:
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.serve import TritonServer

    log = tmp_path / "server.log"
    usage = ["Usage: tritonserver [options]", "  --log-error <boolean>",
             "\tEnable/disable error-level logging.", "",
             "The server cannot listen to HTTP requests and GRPC requests at the same address "
             "and port 127.0.0.1:8001"]  # fmt: skip
    log.write_text("\n".join(usage) + "\n\n")
    assert TritonServer(tmp_path, log_path=log).failure() == usage[-1]
    with pytest.raises(LBNetError, match="--grpc-port and --http-port are both 8001"):
        TritonServer(tmp_path, grpc_port=8001, http_port=8001).start()  # before anything


def test_tiles_go_to_a_dynamic_tile_model_in_slices_of_its_max_batch(tmp_path) -> None:
    """The image model's planner and a client cap the batch at the tile model's max_batch_size
    and send larger batches in unpadded slices (a batch of 16 against max_batch_size 8 failed
    every tiled request); a fixed-batch engine's slices are still padded to its batch."""
    from lbnet_deploy.runtime.triton_backend import BlsTileRunner
    from lbnet_deploy.runtime.upscaler import Upscaler

    src = graph(tmp_path / "d.onnx", ["batch", 3, "height", "width"])
    image_config, _ = image_repo(tmp_path, src, "--cpu", "--max-batch", "8", "--batch", "8")
    params = {k: v.string_value for k, v in image_config.parameters.items()}
    assert params["tile_max_batch"] == "8"
    sizes: list[int] = []

    class Recorded(BlsTileRunner):
        def _run(self, batch):
            sizes.append(len(batch))
            return np.repeat(np.repeat(batch, 4, axis=2), 4, axis=3)

    runner = Recorded(params, "test")
    assert runner.max_batch == 8 and Upscaler(runner, batch=16).batch == 8
    tiles = np.random.default_rng(0).uniform(0, 255, (19, 3, 6, 5)).astype(np.float32)
    out = runner.infer(tiles)
    assert sizes == [8, 8, 3] and out.shape == (19, 3, 24, 20)
    assert np.array_equal(out, np.repeat(np.repeat(tiles, 4, axis=2), 4, axis=3))
    sizes.clear()
    fixed = Recorded({**params, "lbnet.batch": "2", "lbnet.input_size": "6x5"}, "test")
    assert fixed.infer(tiles[:3]).shape == (3, 3, 24, 20) and sizes == [2, 2]


def test_the_servers_environment_is_made_by_one_process_at_a_time(tmp_path) -> None:
    """A second maker waits for the first and keeps what it made (it made its own and replaced
    the first's complete folder, which a server may already have been running from)."""
    import threading

    from lbnet_deploy.serve import _made_once

    target, made, started = tmp_path / "env", [], threading.Event()

    def make(who: str):
        def fill(tmp: Path) -> None:
            made.append(who)
            started.set()
            time.sleep(0.5)  # pip takes minutes
            (tmp / "who").write_text(who)

        return fill

    first = threading.Thread(target=_made_once, args=(target, make("first")))
    first.start()
    assert started.wait(10)
    assert _made_once(target, make("second")) == target  # waits for the first
    first.join()
    assert made == ["first"] and (target / "who").read_text() == "first"
    assert (target / ".complete").is_file() and _made_once(target, make("third")) == target
    assert made == ["first"]


def test_a_tile_model_opens_sessions_that_do_not_spin(tmp_path, monkeypatch) -> None:
    """A server's processes share the cores: the sessions a tile model opens do not spin-wait
    between operators, which sessions elsewhere do (ORT's default)."""
    import json
    from types import SimpleNamespace

    from lbnet_deploy.runtime import onnxrt, registry
    from lbnet_deploy.runtime.triton_backend import TileModel

    monkeypatch.setattr(onnxrt, "_spin", True)
    key = "session.intra_op.allow_spinning"
    with pytest.raises(RuntimeError):  # not set: ORT's default, spinning
        onnxrt.options().get_session_config_entry(key)
    opened = []

    def open_ort(path: Path, threads: int | None, compute: str = "fp32") -> object:
        opened.append(onnxrt.options(threads).get_session_config_entry(key))
        return object()

    monkeypatch.setattr(registry, "get_backend", lambda name: SimpleNamespace(open=open_ort))
    config = {"parameters": {"backend": {"string_value": "ort"}}}
    TileModel().initialize(
        {"model_config": json.dumps(config), "model_version": "1",
         "model_repository": str(tmp_path)}
    )  # fmt: skip
    assert opened == ["0"]
