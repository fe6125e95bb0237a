"""Runtime: runners, images, tiling and the Upscaler, on small crops (fast)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.quality.metrics import psnr_y
from lbnet_deploy.runtime.backend import Runner
from lbnet_deploy.runtime.images import read_image, restore, write_image_atomic
from lbnet_deploy.runtime.onnxrt import OnnxRuntimeRunner, resolve_providers
from lbnet_deploy.runtime.tiling import Merger, TileGrid, axis_starts
from lbnet_deploy.runtime.upscaler import Upscaler, image_bytes, largest_square_tile

from .conftest import DATA, RANDOM_TOL, foreign_graph, needs_data, needs_weights, set5_lr, texture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CKPT = "random-LBNet-T-x4"  # random weights: shapes, tiling and plumbing do not need trained ones


@pytest.fixture(scope="module")
def dyn(export_cache) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(export_cache(CKPT, None))


@pytest.fixture(scope="module")
def fixed16(export_cache) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(export_cache(CKPT, (16, 16)))  # the fixed size other tests use too


TILE_PSNR = 40.0  # measured: see test_tiles_merge_into_the_whole_image


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- runners ---------------------------------------------------------------------------------


def test_runner_facts(dyn: OnnxRuntimeRunner, fixed16: OnnxRuntimeRunner) -> None:
    assert isinstance(dyn, Runner)
    assert (dyn.scale, dyn.input_size, dyn.max_batch) == (4, None, None)
    assert (fixed16.input_size, fixed16.max_batch) == ((16, 16), 1)
    facts = dyn.describe()
    assert (facts["variant"], facts["heads"], facts["n_feats"]) == ("LBNet-T", 6, 18)


def test_providers_only_when_available_and_asked() -> None:
    cpu = "CPUExecutionProvider"
    assert resolve_providers(["cpu"], [cpu]) == [cpu]
    assert resolve_providers(["cuda"], ["CUDAExecutionProvider", cpu]) == [
        "CUDAExecutionProvider",
        cpu,
    ]
    with pytest.raises(LBNetError, match=r"'tensorrt' is not available .*have: cpu"):
        resolve_providers(["tensorrt"], [cpu])
    with pytest.raises(LBNetError, match="unknown provider"):
        resolve_providers(["dml"], [cpu])


def test_not_onnx_or_foreign_onnx_is_one_line_error(tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(LBNetError, match="not a readable ONNX model") as err:
        OnnxRuntimeRunner(junk)
    assert "\n" not in str(err.value)
    with pytest.raises(LBNetError, match="not found"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx")
    with pytest.raises(LBNetError, match="not exported by lbnet-deploy"):
        OnnxRuntimeRunner(foreign_graph(tmp_path / "foreign.onnx"))


def test_ort_matches_torch_reference(dyn: OnnxRuntimeRunner, fixed16, checkpoint) -> None:
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    torch_runner = TorchRunner(checkpoint(CKPT))
    crop = texture(16, 16)  # fits the fixed graph too
    batch = crop.transpose(2, 0, 1)[None].astype(np.float32)
    ref = torch_runner.infer(batch)
    assert np.abs(dyn.infer(batch) - ref).max() < RANDOM_TOL
    assert np.abs(fixed16.infer(batch) - ref).max() < RANDOM_TOL
    odd = batch[:, :, :37, :29]  # N % 16 != 0: the masked short run
    assert np.abs(dyn.infer(odd) - torch_runner.infer(odd)).max() < RANDOM_TOL


def test_runtime_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import lbnet_deploy.runtime.upscaler, lbnet_deploy.runtime.onnxrt\n"
        "import lbnet_deploy.runtime.images, lbnet_deploy.runtime.torch_ref\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- tiling and the Upscaler -----------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 29), (70, 70)])
def test_output_size_fixed_graph_pads(fixed16: OnnxRuntimeRunner, size) -> None:
    out = Upscaler(fixed16, overlap=4).upscale(_noise(*size))
    assert out.shape == (4 * size[0], 4 * size[1], 3) and out.dtype == np.uint8


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 29), (70, 70)])
@pytest.mark.parametrize("tile", [None, 32])
def test_output_size_dynamic_graph(dyn: OnnxRuntimeRunner, size, tile) -> None:
    out = Upscaler(dyn, tile=tile, overlap=8, batch=3, merge="feather").upscale(_noise(*size))
    assert out.shape == (4 * size[0], 4 * size[1], 3) and out.dtype == np.uint8


def test_fixed_graph_padding_matches_content_region(fixed16, dyn) -> None:
    """A 16x16 crop through the fixed graph equals the dynamic graph on the same crop."""
    crop = texture(16, 16, seed=3)
    a = Upscaler(fixed16).upscale_float(crop)
    b = Upscaler(dyn).upscale_float(crop)
    assert np.abs(a - b).max() < RANDOM_TOL


def test_tiles_merge_into_the_whole_image(dyn: OnnxRuntimeRunner) -> None:
    """72x72 whole vs 4 tiles of 48 with 16 overlap, random weights: the merge puts every tile
    where it belongs (a misplaced tile costs tens of dB); TILE_PSNR measured."""
    lr = texture(72, 72, seed=5)
    whole = Upscaler(dyn).upscale(lr)
    ticks: list[tuple[int, int]] = []
    for merge in ("crop", "feather"):
        tiled = Upscaler(dyn, tile=48, overlap=16, batch=2, merge=merge).upscale(
            lr, progress=lambda done, total: ticks.append((done, total))
        )
        assert psnr_y(tiled, whole, 4) > TILE_PSNR, merge
    assert ticks[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.slow  # a dynamic export of the real LBNet-T x4 (~40 s on 2 cores)
@needs_weights
@needs_data
def test_tiled_close_to_whole_image(export_cache) -> None:
    """bird (72x72 LR) whole vs 4 tiles of 48 with 16 overlap. Measured: 48.72 dB (crop) /
    48.82 dB (feather) between them; PSNR vs HR +0.010 / +0.015 dB. Bounds leave ~2x margin."""
    dyn = OnnxRuntimeRunner(export_cache("LBNet-T_X4.pt"))
    lr = set5_lr(4, "bird")
    hr = np.asarray(Image.open(DATA / "Set5" / "HR" / "bird.png"))[:288, :288]
    whole = Upscaler(dyn).upscale(lr)
    ticks: list[tuple[int, int]] = []
    for merge in ("crop", "feather"):
        tiled = Upscaler(dyn, tile=48, overlap=16, batch=2, merge=merge).upscale(
            lr, progress=lambda done, total: ticks.append((done, total))
        )
        assert psnr_y(tiled, whole, 4) > 45.0
        assert abs(psnr_y(tiled, hr, 4) - psnr_y(whole, hr, 4)) < 0.03
    assert ticks[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_tile_grid_covers_and_feather_weights_sum_to_one() -> None:
    assert axis_starts(10, 16, 4) == [0]
    assert axis_starts(100, 32, 8) == [0, 24, 48, 68]
    for overlap in (6, 0):  # 0: tiles that only touch, a hard cut (no 0/0 in the weights)
        grid = TileGrid(50, 37, 16, 16, overlap)
        for merge in ("crop", "feather"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                merger = Merger(grid, 2, merge)
                for tile in grid.tiles():
                    merger.add(tile, np.ones((3, 32, 32), np.float32))
                np.testing.assert_allclose(merger.result(), 1.0, atol=1e-6)


def test_memory_budget_bounds_tile_and_batch(dyn: OnnxRuntimeRunner) -> None:
    need = dyn.model_facts.inference_bytes
    assert need(128 * 128) < need(160 * 160)
    t = largest_square_tile(512 * 2**20, dyn.model_facts)
    assert need(t * t) <= 512 * 2**20 < need((t + 1) ** 2)
    plan = Upscaler(dyn, tile=None, memory_budget_mb=64, batch=8).plan(300, 200)
    assert plan.grid.tile_h == plan.grid.tile_w < 64
    # the model's tiles and the image's own buffers together within the budget
    buffers = image_bytes(300, 200, dyn.scale)
    assert plan.batch * need(plan.grid.tile_h**2) + buffers <= 64 * 2**20
    assert Upscaler(dyn).plan(70, 70).whole


# --- images ----------------------------------------------------------------------------------


def test_grayscale_round_trip(dyn: OnnxRuntimeRunner, tmp_path) -> None:
    src = tmp_path / "g.png"
    Image.fromarray(texture(20, 24).mean(axis=2).astype(np.uint8)).save(src)
    loaded = read_image(src)
    assert loaded.grayscale and loaded.rgb.shape == (20, 24, 3)
    sr = Upscaler(dyn).upscale(loaded.rgb)
    out = restore(loaded, sr)
    np.testing.assert_array_equal(out, np.rint(sr.astype(np.float32).mean(axis=2)))
    write_image_atomic(tmp_path / "o.png", out)
    back = Image.open(tmp_path / "o.png")
    assert back.mode == "L" and back.size == (96, 80)


def test_rgba_alpha_is_bicubic_and_reattached(dyn: OnnxRuntimeRunner, tmp_path) -> None:
    rgb = texture(16, 20)
    alpha = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (16, 1))
    src = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(src)
    loaded = read_image(src)
    np.testing.assert_array_equal(loaded.rgb, rgb)
    sr = Upscaler(dyn).upscale(loaded.rgb)
    out = restore(loaded, sr)
    assert out.shape == (64, 80, 4)
    np.testing.assert_array_equal(out[..., :3], sr)
    expected = np.asarray(Image.fromarray(alpha).resize((80, 64), Image.BICUBIC))
    np.testing.assert_array_equal(out[..., 3], expected)


def test_palette_and_16bit_are_converted(tmp_path) -> None:
    pal = Image.fromarray(_noise(8, 8)).convert("P")
    pal.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").rgb.shape == (8, 8, 3)
    deep = np.full((4, 5), 65535, np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    loaded = read_image(tmp_path / "d.png")
    assert loaded.grayscale and loaded.rgb.dtype == np.uint8 and loaded.rgb.max() == 255
    assert loaded.deep is not None and loaded.deep.shape == (4, 5, 3) and loaded.deep.min() == 65535


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "image not found"), (b"", "is empty"), (b"\x89PNG garbage" * 7, "not an image")],
)
def test_image_errors_name_the_file(tmp_path, content, message) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LBNetError, match=message) as err:
        read_image(path)
    assert "bad.png" in str(err.value) and "\n" not in str(err.value)


def test_truncated_png_is_one_line_error(tmp_path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_noise(32, 32)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LBNetError, match=r"cut\.png"):
        read_image(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch) -> None:
    from lbnet_deploy.runtime import atomic

    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", disk_full)  # the temp file is written, then fails
    with pytest.raises(LBNetError, match=r"cannot write .*out\.png \(No space left on device\)"):
        write_image_atomic(target, _noise(4, 4))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_atomic_write_missing_folder(tmp_path) -> None:
    with pytest.raises(LBNetError, match="output folder does not exist"):
        write_image_atomic(tmp_path / "nope" / "x.png", _noise(2, 2))


def tf32_state(torch) -> list[object]:
    from lbnet_deploy.runtime.torch_ref import _tf32_switches

    return [getattr(obj, name) for obj, name, _ in _tf32_switches(torch)]


def tf32_off(torch) -> list[object]:
    from lbnet_deploy.runtime.torch_ref import _tf32_switches

    return [off for _, _, off in _tf32_switches(torch)]


@pytest.mark.parametrize("fails", [False, True])
def test_no_tf32_turns_tf32_off_for_the_call_and_puts_it_back(fails: bool) -> None:
    torch = pytest.importorskip("torch")
    from lbnet_deploy.runtime.torch_ref import no_tf32

    before = tf32_state(torch)
    assert before != tf32_off(torch)  # torch's default allows TF32 in cuDNN's convolutions
    with contextlib.suppress(RuntimeError), no_tf32(torch):
        assert tf32_state(torch) == tf32_off(torch)
        if fails:
            raise RuntimeError("the model failed")
    assert tf32_state(torch) == before
    with no_tf32(torch, active=False):  # FP16, or the CPU: nothing touched
        assert tf32_state(torch) == before


def test_no_tf32_overlapping_calls_restore_when_the_last_ends() -> None:
    """Two threads (the Upscaler's in-flight batches): the first to leave must not turn TF32
    back on under the other, and the last restores what was there before both."""
    torch = pytest.importorskip("torch")
    from lbnet_deploy.runtime.torch_ref import no_tf32

    before = tf32_state(torch)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, list[object]] = {}

    def a() -> None:
        with no_tf32(torch):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with no_tf32(torch):
            b_in.set()
            a_out.wait(10)
            seen["b after a left"] = tf32_state(torch)

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen["b after a left"] == tf32_off(torch)
    assert tf32_state(torch) == before


def test_torch_runner_computes_ieee_fp32_only_on_cuda() -> None:
    torch = pytest.importorskip("torch")
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    from .conftest import random_lbnet

    fp32 = TorchRunner(model=random_lbnet("LBNet-T", 2))
    fp16 = TorchRunner(model=random_lbnet("LBNet-T", 2), precision="fp16")
    assert not fp32.ieee_fp32 and not fp16.ieee_fp32  # the CPU has no TF32
    fp32.device = fp16.device = torch.device("cuda")  # what a CUDA runner holds
    assert fp32.ieee_fp32 and not fp16.ieee_fp32


@pytest.fixture
def users_conv():
    """torch's cuDNN convolution switch, set to "tf32" by the user (torch >= 2.9's API), and
    put back as it was after the test."""
    torch = pytest.importorskip("torch")
    conv = getattr(torch.backends.cudnn, "conv", None)
    if not hasattr(conv, "fp32_precision"):
        pytest.skip(f"torch {torch.__version__} has no fp32_precision")
    before = conv.fp32_precision
    conv.fp32_precision = "tf32"
    yield conv
    conv.fp32_precision = before


def test_no_tf32_after_the_user_chose_torchs_new_precision_api(users_conv) -> None:
    """torch >= 2.9 raises on the legacy allow_tf32 flags once fp32_precision was set: no_tf32
    must use the API the user's torch has."""
    import torch

    from lbnet_deploy.runtime.torch_ref import no_tf32

    with no_tf32(torch):
        assert tf32_state(torch) == tf32_off(torch)
    assert users_conv.fp32_precision == "tf32"


def test_no_tf32_on_torch_before_its_new_precision_api() -> None:
    from types import SimpleNamespace

    from lbnet_deploy.runtime.torch_ref import no_tf32

    cudnn, matmul = SimpleNamespace(allow_tf32=True), SimpleNamespace(allow_tf32=False)
    old_torch = SimpleNamespace(
        backends=SimpleNamespace(cudnn=cudnn, cuda=SimpleNamespace(matmul=matmul))
    )
    with no_tf32(old_torch):
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, False)


@pytest.mark.parametrize("user", ["", "torch.backends.fp32_precision = 'ieee'",
                                  "torch.backends.cudnn.conv.fp32_precision = 'tf32'"])  # fmt: skip
def test_no_tf32_leaves_torchs_precision_inheritance_as_it_was(user: str) -> None:
    """After a call, torch's global fp32_precision must reach the convolutions and matrix
    products exactly as in a process that never made one (restoring a read value would pin it
    as the user's own choice). Fresh processes: the switches are process-wide."""
    pytest.importorskip("torch")
    code = (
        "import sys, torch\n"
        "from lbnet_deploy.runtime.torch_ref import no_tf32\n"
        "if not hasattr(torch.backends.cudnn.conv, 'fp32_precision'): sys.exit(3)\n"
        f"{user}\n"
        "if sys.argv[1] == 'call':\n"
        "    with no_tf32(torch): pass\n"
        "seen = []\n"
        "for value in ('ieee', 'tf32', 'none'):\n"
        "    torch.backends.fp32_precision = value\n"
        "    seen.append((torch.backends.cudnn.conv.fp32_precision,\n"
        "                 torch.backends.cuda.matmul.fp32_precision))\n"
        "print(seen)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True)
        for how in ("call", "never")
    ]
    if runs[1].returncode == 3:
        pytest.skip("this torch has no fp32_precision")
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-500:] + runs[1].stderr[-500:]
    assert runs[0].stdout == runs[1].stdout


def test_no_tf32_undoes_what_it_set_when_a_switch_refuses() -> None:
    from types import SimpleNamespace

    from lbnet_deploy.runtime.torch_ref import no_tf32

    class Refusing:
        allow_tf32 = property(lambda self: True)  # reads True, cannot be set

    cudnn = SimpleNamespace(allow_tf32=True)
    old_torch = SimpleNamespace(
        backends=SimpleNamespace(cudnn=cudnn, cuda=SimpleNamespace(matmul=Refusing()))
    )
    with pytest.raises(AttributeError), no_tf32(old_torch):
        pass
    assert cudnn.allow_tf32 is True
    working = SimpleNamespace(allow_tf32=True)
    old_torch.backends.cuda.matmul = working
    with no_tf32(old_torch):  # the failed call left no user behind
        assert (cudnn.allow_tf32, working.allow_tf32) == (False, False)
    assert (cudnn.allow_tf32, working.allow_tf32) == (True, True)


def test_no_tf32_keeps_a_users_change_made_during_the_call(users_conv) -> None:
    import torch

    from lbnet_deploy.runtime.torch_ref import no_tf32

    with no_tf32(torch):
        users_conv.fp32_precision = "none"  # inherit, from now on
    assert users_conv.fp32_precision == "none"
