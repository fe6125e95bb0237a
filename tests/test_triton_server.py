"""An image repository served by a real Triton server (the nvidia-pytriton wheel's tritonserver,
started on loopback with free ports): bit-identical to local `upscale`, under load, and under
faults. Marked `triton`; they need $LBNET_TRITON_DIR (`lbnet-deploy serve --prepare` makes it
once: the wheel and the Python backend's environment; .ci/run does) and skip without it. All
tests of this module run in one pytest-xdist worker (xdist_group), so one server serves them."""

from __future__ import annotations

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

from .conftest import DATA, texture

T4 = "random-LBNet-T-x4"
pytestmark = [pytest.mark.triton, pytest.mark.xdist_group("triton")]


@pytest.fixture(scope="module")
def triton_ready() -> None:
    """The server and its environment, made by `serve --prepare` in $LBNET_TRITON_DIR."""
    if not os.environ.get("LBNET_TRITON_DIR"):
        pytest.skip("LBNET_TRITON_DIR is not set (`lbnet-deploy serve --prepare` fills it)")
    from lbnet_deploy.serve import prepare

    prepare()  # made already: instant; else the test fails here, saying why


def write_repository(graph: Path, repo: Path, *options: str, name: str = "t4") -> None:
    repo.mkdir(exist_ok=True)
    argv = ["triton", str(graph), "--repository", str(repo), "--images", "--cpu", "--name", name]
    assert main([*argv, "--threads", "2", *options]) == 0


def start(repo: Path, **ports: int):
    from lbnet_deploy.serve import TritonServer, free_port

    server = TritonServer(
        repo, grpc_port=ports.get("grpc", free_port()), http_port=ports.get("http", free_port()),
        log_path=repo.parent / f"{repo.name}.log",
    )  # fmt: skip
    return server.start(timeout_s=240)


@pytest.fixture(scope="module")
def unit_graph(checkpoint, tmp_path_factory) -> Path:
    """The same random LBNet-T x4 exported in 0..1 (`export --io unit`, dynamic)."""
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint(T4))
    path = tmp_path_factory.mktemp("unit") / "t4-unit.onnx"
    return export_onnx(model, path, ExportOptions(input_size=None, batch=None, io="unit")).path


@pytest.fixture(scope="module")
def served(triton_ready, export_cache, unit_graph, tmp_path_factory):
    """(server, graph): a random LBNet-T x4's repository with 8 image instances ("t4"), and
    the same model in 0..1 ("t4u")."""
    graph = export_cache(T4)
    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(graph, repo, "--image-instances", "8")
    write_repository(unit_graph, repo, name="t4u")
    server = start(repo)
    yield server, graph
    server.stop()


def local(graph: Path, images: list[np.ndarray], **tiling) -> list[np.ndarray]:
    from lbnet_deploy.loaders import open_runner
    from lbnet_deploy.runtime.upscaler import Upscaler

    upscaler = Upscaler(open_runner(str(graph), "ort"), **tiling)
    return [upscaler.upscale(im) for im in images]


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_set5_through_the_server_is_bit_identical_to_local_upscale(served, tmp_path) -> None:
    server, graph = served
    set5 = DATA / "Set5" / "LR_bicubic" / "X4"
    if not set5.is_dir():
        pytest.skip(f"Set5 missing in {DATA}")
    remote, here = tmp_path / "remote", tmp_path / "local"
    url = ["--backend", "triton", "--url", server.grpc_url, "--model", "t4"]
    assert main(["upscale", str(set5), "-o", str(remote), *url, "-q"]) == 0
    assert main(["upscale", str(set5), "-o", str(here), "--model", str(graph), "-q"]) == 0
    a, b = pngs(remote), pngs(here)
    assert len(a) == 5 and a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_the_clients_tiling_options_reach_the_server(served) -> None:
    """--tile/--overlap/--merge/--batch travel with the request; the tile model's float output
    (what parity compares) equals the local runner's."""
    from lbnet_deploy.loaders import open_runner

    server, graph = served
    runner = open_runner("t4", "triton", url=server.grpc_url)
    image = texture(45, 70, seed=3)
    for tiling in ({"tile": 24, "overlap": 6, "merge": "crop", "batch": 3}, {"tile": 40}):
        remote = local_upscaler(runner, **tiling).upscale(image)
        assert np.array_equal(remote, local(graph, [image], **tiling)[0]), tiling
    # a batch over the tile model's max_batch_size (8) is capped there: it failed every request
    remote = local_upscaler(runner, tile=16, overlap=4, batch=12).upscale(image)
    assert np.array_equal(remote, local(graph, [image], tile=16, overlap=4, batch=8)[0])
    tiles = np.random.default_rng(0).uniform(0, 255, (2, 3, 20, 28)).astype(np.float32)
    here = open_runner(str(graph), "ort")
    assert np.array_equal(runner.infer(tiles), here.infer(tiles))


def test_a_unit_range_graph_is_served_as_upscale_runs_it(served, unit_graph) -> None:
    """A 0..1 graph (lbnet.io unit) behind the Python tile model: the image model and a
    client's tiles travel on 0..255 (our runner there feeds the graph its range), so the
    result is the local one, not scaled twice."""
    from lbnet_deploy.loaders import open_runner

    server, _ = served
    runner = open_runner("t4u", "triton", url=server.grpc_url)
    image = texture(37, 29, seed=5)
    here = local(unit_graph, [image], tile=24)[0]
    assert np.array_equal(local_upscaler(runner, tile=24).upscale(image), here)
    tiles = np.random.default_rng(1).uniform(0, 255, (1, 3, 16, 20)).astype(np.float32)
    assert np.array_equal(runner.infer(tiles), open_runner(str(unit_graph), "ort").infer(tiles))


def local_upscaler(runner, **tiling):
    from lbnet_deploy.runtime.upscaler import Upscaler

    return Upscaler(runner, **tiling)


def test_load_8_clients_of_10_images_all_correct_and_batched(served) -> None:
    from lbnet_deploy.benchmarks.serving import load, tile_batches

    server, graph = served
    sizes = [(40, 40), (36, 52), (48, 36), (44, 44), (52, 40)]
    images = [texture(h, w, seed=i) for i, (h, w) in enumerate(sizes * 2)]
    tiling = {"tile": 32, "overlap": 8}
    expected = local(graph, images, **tiling)
    before = tile_batches(server.grpc_url, "t4")
    result = load(server.grpc_url, "t4", images, 8, 10, tiling, expected)
    after = tile_batches(server.grpc_url, "t4")
    assert result["errors"] == [] and result["answered"] == 80 and result["mismatches"] == 0
    lat = result["latency"]
    assert 0 < lat["median_s"] <= lat["p99_s"] and result["images_per_s"] > 0
    grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    # each image request sends its tiles one per BLS request: a batch of two or more tiles
    # holds tiles of different requests
    assert max(grown) >= 2, grown
    print(
        f"\nload: 8 clients x 10 images, {result['images_per_s']:.2f} images/s, p50 "
        f"{lat['median_s']:.2f} s, p99 {lat['p99_s']:.2f} s; tile batches {grown}"
    )


def test_whole_images_of_different_sizes_share_tile_model_batches(served) -> None:
    """Whole images (the default policy) reach the tile model each as one request of its own
    shape: they share its batches only as ragged batches (allow_ragged_batch), and each is
    still answered with its own output."""
    from lbnet_deploy.benchmarks.serving import load, tile_batches

    server, graph = served
    images = [texture(24 + 2 * i, 40 - 2 * i, seed=i) for i in range(8)]  # 8 distinct shapes
    expected = local(graph, images)
    before = tile_batches(server.grpc_url, "t4")
    for _ in range(2):  # 8 clients, one image each, all at once
        result = load(server.grpc_url, "t4", images, 8, 1, None, expected)
        assert result["errors"] == [] and result["mismatches"] == 0 and result["answered"] == 8
    after = tile_batches(server.grpc_url, "t4")
    grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    assert max(grown) >= 2, grown


def test_a_16_bit_file_is_refused_in_one_line_and_the_others_complete(
    served, tmp_path, capsys
) -> None:
    """The image model is UINT8: a 16-bit PNG was sent as its samples modulo 256 (a wrong image,
    exit 0). Now it is one line naming the file; the 8-bit file beside it is served."""
    from lbnet_deploy.runtime.png16 import write_png16

    server, graph = served
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    deep = np.random.default_rng(2).integers(9422, 50471, (20, 24, 3)).astype(np.uint16)
    (folder / "deep.png").write_bytes(write_png16(deep))
    Image.fromarray(texture(12, 10)).save(folder / "plain.png")
    argv = ["upscale", str(folder), "-o", str(out), "--backend", "triton", "--url",
            server.grpc_url, "--model", "t4", "-q"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(folder / "deep.png") in lines[0] and "16-bit samples" in lines[0]
    assert sorted(pngs(out)) == ["plain.png"]
    assert np.array_equal(pngs(out)["plain.png"], local(graph, [texture(12, 10)])[0])


def raw_infer(url: str, array: np.ndarray, datatype: str, **parameters):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.infer("t4", [tensor], parameters=parameters or None, client_timeout=120)


@pytest.mark.parametrize(
    ("array", "datatype", "parameters", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "FP32", {}, "data-type is 'FP32'"),
        (np.zeros((8, 8), np.uint8), "UINT8", {}, "shape"),
        (np.zeros((0, 0, 3), np.uint8), "UINT8", {}, "at least 1x1"),
        (np.zeros((3000, 3000, 3), np.uint8), "UINT8", {}, "memory budget"),
        (np.zeros((8, 8, 3), np.uint8), "UINT8", {"tile": 100000}, "over the memory budget"),
        (np.zeros((8, 8, 3), np.uint8), "UINT8", {"tile": "big"}, "must be int"),
        (np.zeros((8, 8, 3), np.uint8), "UINT8", {"merge": "blend"}, "merge must be"),
        (np.zeros((8, 8, 3), np.uint8), "UINT8", {"scale": 2}, "unknown request parameter"),
    ],
)
def test_a_malformed_request_is_one_line_and_the_server_keeps_serving(
    served, array, datatype, parameters, message
) -> None:
    from tritonclient.utils import InferenceServerException

    server, _ = served
    with pytest.raises(InferenceServerException) as err:
        raw_infer(server.grpc_url, array, datatype, **parameters)
    text = err.value.message()
    assert message in text and len(text.strip().splitlines()) == 1, text
    good = raw_infer(server.grpc_url, texture(9, 7), "UINT8").as_numpy("image_sr")
    assert good.shape == (36, 28, 3) and server.ready()


def test_server_killed_mid_load_then_restarted(triton_ready, export_cache, tmp_path) -> None:
    """Clients fail with one line per image, nothing half-written; restarted, it serves again."""
    graph = export_cache(T4)
    repo = tmp_path / "repo"
    write_repository(graph, repo, "--image-instances", "1")
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    images = [texture(64, 56, seed=i) for i in range(24)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{i:02d}.png")
    names = [f"img{i:02d}.png" for i in range(24)]
    expected = dict(zip(names, local(graph, images), strict=True))
    server = start(repo)
    ports = {"grpc": server.grpc_port, "http": server.http_port}
    argv = [sys.executable, "-m", "lbnet_deploy.cli", "upscale", str(folder), "-o", str(out),
            "--backend", "triton", "--url", server.grpc_url, "--model", "t4", "-q"]  # fmt: skip
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process is not None
        regions = list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
        assert regions  # the stubs' shared memory is named by this server's prefix
        os.killpg(server.process.pid, signal.SIGKILL)  # the server and its backend processes
        stdout, stderr = client.communicate(timeout=300)
    finally:
        server.stop()
        if client.poll() is None:
            client.kill()
    assert not [r for r in regions if r.exists()]  # what the killed stubs left is removed
    written = pngs(out)
    failed = [ln for ln in stderr.splitlines() if ln.strip()]
    assert client.returncode == 1, (stdout, stderr)
    assert 0 < len(written) < 24 and len(failed) == 24 - len(written), stderr
    assert all(f"Triton at {server.grpc_url}" in ln for ln in failed) and "Traceback" not in stderr
    assert not [p for p in out.iterdir() if p.suffix != ".png"]  # no temporaries
    for name, image in written.items():
        assert np.array_equal(image, expected[name]), name
    # restarted on the same ports, the same client command completes
    server = start(repo, **ports)
    try:
        again = tmp_path / "again"
        done = subprocess.run([*argv[:6], str(again), *argv[7:]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert all(np.array_equal(a, expected[n]) for n, a in pngs(again).items())
        assert len(pngs(again)) == 24
    finally:
        server.stop()
