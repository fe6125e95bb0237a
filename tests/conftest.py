"""Shared fixtures: the real checkpoints and images in ../shared, and exported graphs cached
once per session (an export takes 10-30 s)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from lbnet_deploy.metadata import Form

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LBNET_SHARED_DIR", REPO.parent / "shared"))
WEIGHTS = SHARED / "weights"
DATA = Path(os.environ.get("LBNET_DATA_DIR", SHARED / "data")).resolve()
WEIGHTS_DIR = Path(os.environ.get("LBNET_WEIGHTS_DIR", WEIGHTS)).resolve()  # named models

# the five checkpoints we have: file name -> (variant, scale)
CHECKPOINTS = {
    "LBNet-X2.pt": ("LBNet", 2),
    "LBNet-X3.pt": ("LBNet", 3),
    "LBNet-T_X2.pt": ("LBNet-T", 2),
    "LBNet-T_X3.pt": ("LBNet-T", 3),
    "LBNet-T_X4.pt": ("LBNet-T", 4),
}

needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "LBNet-T_X4.pt").is_file(), reason=f"official checkpoints missing in {WEIGHTS}"
)
needs_data = pytest.mark.skipif(
    not (DATA / "Set5" / "HR").is_dir(), reason=f"Set5/Set14 missing in {DATA}"
)
needs_photos = pytest.mark.skipif(
    not (DATA / "SunHays80").is_dir(), reason=f"calibration photos missing in {DATA / 'SunHays80'}"
)

# Random-weight stand-ins (weight-free tier): "random-<variant>-x<scale>" for every variant and
# scale the official checkpoints come in; same keys and shapes, seeded weights.
RANDOM = {f"random-{v}-x{s}": (v, s) for v in ("LBNet", "LBNet-T") for s in (2, 3, 4)}


# max |difference| (0..255) allowed between two computations of a random-weight model. Measured:
# <= 9.2e-5 between our op forms and the reference ops in PyTorch, <= 1.6e-4 between ONNX
# Runtime and PyTorch (before the projection scaling of random_lbnet); a 1% error in either
# attention stage moves the output by >= 4.7e-3 (test_model checks that it still would). The
# official weights' bound is 0.01.
RANDOM_TOL = 1e-3


def real_checkpoint(name: str) -> Path:
    """An official checkpoint of ../shared/weights; the test skips (never errors) without it."""
    path = WEIGHTS / name
    if not path.is_file():
        pytest.skip(f"official checkpoint {name} missing in {WEIGHTS}")
    return path


def random_lbnet(variant: str, scale: int, seed: int = 0):
    """A seeded random-weight LBNet whose output lies in about 0..255 like a trained one: default
    initialisation gives outputs in the thousands (all clipped), so the final mean-shift 1x1
    convolution is set to map the output to mean 128, std 40 on a random input. The attention
    output projections are scaled by 8: at default initialisation the recursive Transformer
    moves the output so little that a 1% error in its second stage stayed below RANDOM_TOL
    (measured 6e-4..9e-4; with the scaling >= 4.7e-3, while the noise stays <= 9.2e-5)."""
    import torch

    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.lbnet import LBNet

    with torch.random.fork_rng(), torch.no_grad():  # seeded here, the caller's RNG untouched
        torch.manual_seed(seed)
        model = LBNet(describe(variant, scale)).eval()
        for stage in (model.attention, model.attention2):
            stage.atten.proj.weight.mul_(8.0)
            stage.atten.proj.bias.mul_(8.0)
        model.add_mean.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        model.add_mean.bias.zero_()
        # One thread: a multi-threaded pass rounds differently with the thread count, and the
        # file saved by one xdist worker must equal the model another worker builds.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 255
            y = model(x)
        finally:
            torch.set_num_threads(threads)
        gain = 40.0 / y.std().item()
        model.add_mean.weight.mul_(gain)
        model.add_mean.bias.fill_(128.0 - gain * y.mean().item())
    return model


def _run_root(factory: pytest.TempPathFactory) -> Path:
    """One folder per test run, shared by pytest-xdist's workers (each has its own basetemp
    below it), so a graph is exported once per run, not once per worker."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(path: Path, make) -> Path:
    """`make(path)` unless another worker already made it; a lock per file."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            tmp = path.with_suffix(".partial" + path.suffix)
            make(tmp)
            tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Path of a checkpoint by name: an official file name (skips without ../shared) or a
    RANDOM name, saved as the official files are (a bare state dict)."""

    def get(name: str) -> Path:
        if name not in RANDOM:
            return real_checkpoint(name)
        import torch

        return _once(
            _run_root(tmp_path_factory) / "checkpoints" / f"{name}.pt",
            lambda out: torch.save(random_lbnet(*RANDOM[name]).state_dict(), out),
        )

    return get


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory, checkpoint):
    """Export each (checkpoint, input size) once per test run (an export takes 10-40 s here):
    `export_cache("random-LBNet-T-x4")` dynamic, `export_cache(name, (64, 64))` fixed, `form=`
    another attention layout (`metadata.FORMS`). The files
    are the product's own first-use exports (`resolve.model_file`) in the run's shared product
    cache, so a command run on the same checkpoint with `shared_cache` finds them there."""
    from filelock import FileLock

    from lbnet_deploy.resolve import model_file

    cache = _run_root(tmp_path_factory) / "product-cache"

    def get(name: str, size: tuple[int, int] | None = None, form: Form = "batched") -> Path:
        ckpt = checkpoint(name)
        label = "dyn" if size is None else "{}x{}".format(*size)
        cache.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cache / f"{Path(name).stem}_{label}_{form}.lock"))
        with lock, pytest.MonkeyPatch.context() as env:
            env.setenv("LBNET_CACHE_DIR", str(cache))
            batch = None if size is None else 1
            return model_file(str(ckpt), input_size=size, batch=batch, form=form)

    return get


# Graphs most tests share, made first thing, one per pytest-xdist worker: otherwise both
# workers soon wait on the same export (a dynamic one takes ~40 s on 2 cores) and one idles.
COMMON_GRAPHS = [("random-LBNet-T-x4", None), ("random-LBNet-T-x4", (16, 16))]


@pytest.fixture(scope="session", autouse=True)
def _common_graphs_first(request: pytest.FixtureRequest) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2 or not worker:
        return
    if not any("export_cache" in item.fixturenames for item in request.session.items):
        return  # a run without exports makes none
    index = int(worker.removeprefix("gw"))
    if index < len(COMMON_GRAPHS):
        request.getfixturevalue("export_cache")(*COMMON_GRAPHS[index])


@pytest.fixture
def shared_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The product's cache (LBNET_CACHE_DIR) shared by the tests of one run that need the same
    first-use exports (bench's named models); its writes are atomic, so workers may share it."""
    folder = _run_root(tmp_path_factory) / "product-cache"
    monkeypatch.setenv("LBNET_CACHE_DIR", str(folder))
    return folder


def load_study(name: str):
    """A research script of benchmarks/studies/ (not installed: run from the checkout)."""
    import importlib
    import sys

    folder = str(REPO / "benchmarks" / "studies")
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python benchmarks/studies/NAME.py` would have it
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's user cache is the run's own, never ~/.cache: what a command keeps there
    (`upscale`'s backend choice, first-use exports) unless a test names its own."""
    monkeypatch.setenv("LBNET_CACHE_DIR", str(_run_root(tmp_path_factory) / "user-cache"))


@pytest.fixture(autouse=True)
def _auto_is_onnx_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """`upscale`'s default `--backend auto` runs ONNX Runtime in tests, untimed: a test's
    backend must not depend on which runtime is faster on the machine (tests/test_choose.py
    tests the choice itself)."""
    from lbnet_deploy.benchmarks import choose

    monkeypatch.setattr(choose, "CANDIDATES", ("ort",))


@pytest.fixture(autouse=True)
def _weights_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named models resolve to ../shared/weights and data to ../shared/data unless a test says
    otherwise."""
    # absolute, since README's command sets a relative folder and tests chdir into tmp_path
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(WEIGHTS_DIR))
    monkeypatch.setenv("LBNET_DATA_DIR", str(DATA))  # bench's Set5 and calibration photos


def set5_lr(scale: int, name: str) -> np.ndarray:
    """A Set5 MATLAB-bicubic LR image as uint8 RGB HxWx3; the test skips without ../shared."""
    path = DATA / "Set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"
    if not path.is_file():
        pytest.skip(f"Set5 missing in {DATA}")
    return np.asarray(Image.open(path))


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image (smooth gradients, edges, noise) for weight-free tests."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin(xx / 5 + seed) * np.cos(yy / 7)
    img = base[..., None] + np.array([0, 25, -25], np.float32) + rng.normal(0, 8, (h, w, 3))
    img[: h // 2, : w // 3] += 50  # an edge
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten photo-like 320x256 PNGs (calibration needs 8 of at least 4x its 64x64 crops at x4):
    the weight-free stand-in for SunHays80."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        Image.fromarray(texture(256, 320, seed=i)).save(folder / f"photo{i}.png")
    return folder


def foreign_graph(path: Path) -> Path:
    """A valid ONNX file that lbnet-deploy did not make (no lbnet.* metadata): an Identity."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime loads
    onnx.save(model, path)
    return path


def stand_in_graph(
    path: Path,
    dims: list[int | str],
    precision: str = "fp32",
    op: str = "Identity",
    io: str = "255",
) -> Path:
    """A stand-in for an exported graph: the input and lbnet.* metadata are what matter."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
    sr = [d if isinstance(d, str) else 4 * d for d in dims[2:]]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [dims[0], 3, *sr])
    model = helper.make_model(
        helper.make_graph([helper.make_node(op, ["input"], ["output"])], "g", [inp], [out])
    )
    meta = {
        "variant": "LBNet-T",
        "scale": "4",
        "heads": "6",
        "n_feats": "18",
        "precision": precision,
        "io": io,
    }
    helper.set_model_props(model, {f"lbnet.{k}": v for k, v in meta.items()})
    onnx.save(model, path)
    return path
