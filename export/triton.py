"""A Triton Inference Server model folder for an engine or an ONNX graph (`lbnet-deploy triton`).

Layout (DEPLOY.md): `<repository>/<name>/config.pbtxt` and `<repository>/<name>/<version>/
model.plan` (platform tensorrt_plan) or `model.onnx` (onnxruntime_onnx). Triton serves the model
as it is: one request is one (batch of) LR tile(s) of the model's input size; tiling and merging
stay with the client (our Upscaler). A fixed batch dimension is part of `dims` with
`max_batch_size: 0`; a dynamic one becomes Triton's batch dimension with dynamic batching.
The model's lbnet.* facts travel as config `parameters`, so a client can read the scale.

`--images` (`write_image_repository`) adds what serves whole images: an image model (Python
backend; `runtime/triton_backend.py`) that tiles with our Upscaler and sends the tiles to a
tile model with BLS, and, for CPUs (`python_tile`), a Python-backend tile model that runs our
own runner on the graph (NVIDIA's ONNX Runtime and TensorRT backends run otherwise). Each Python
model's version folder holds a copy of our torch-free runtime (`lbnet_deploy` and its
`runtime` package), so a repository is served by any Triton with numpy (and, for a Python tile
model, onnxruntime or openvino) and never by a different version of our code.

The config is written as protobuf text by hand: Triton's ModelConfig message is only
distributed inside tritonclient[grpc] (a test dependency here, used to parse what we write).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import io_kind
from lbnet_deploy.runtime.atomic import (
    STALE_SECONDS,
    default_dir_mode,
    name_max,
    write_text_atomic,
)
from lbnet_deploy.runtime.triton_backend import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TILE_INPUT,
    TILE_OUTPUT,
    ImageModel,
)
from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES, EngineFacts, read_facts

from .onnx_io import graph_facts

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}  # the I/O types we export


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: list[int]  # -1 where symbolic; batch included
    ragged: bool = False  # requests of other shapes may share a batch (allow_ragged_batch)


@dataclass(frozen=True)
class ModelIO:
    platform: str
    filename: str
    lbnet: dict[str, str]
    inputs: list[Tensor]
    outputs: list[Tensor]
    engine: EngineFacts | None = None  # the sidecar, for a plan


def model_io(path: Path) -> ModelIO:
    """Platform, file name, facts and I/O of an engine (from its sidecar) or an ONNX graph."""
    if path.suffix in ENGINE_SUFFIXES:
        facts = read_facts(path)
        b, c, h, w = facts.input_shape
        s = int(facts.lbnet["scale"])
        return ModelIO(
            "tensorrt_plan", "model.plan", facts.lbnet,
            [Tensor(facts.input_name, TRITON_TYPES[facts.dtypes[0]], [b, c, h, w])],
            [Tensor(facts.output_name, TRITON_TYPES[facts.dtypes[1]], [b, c, s * h, s * w])],
            facts,
        )  # fmt: skip
    if path.suffix != ".onnx":
        raise LBNetError(f"{path}: give an engine ({', '.join(ENGINE_SUFFIXES)}) or an .onnx file")
    graph = graph_facts(path)

    def tensor(name: str, dims: list[int | None], dtype: str) -> Tensor:
        if len(dims) != 4:
            raise LBNetError(f"{path}: tensor {name!r} has no (B, 3, H, W) shape")
        if dtype not in TRITON_TYPES:
            raise LBNetError(f"{path}: tensor {name!r} is {dtype}, not float32/float16")
        return Tensor(name, TRITON_TYPES[dtype], [-1 if d is None else d for d in dims])

    return ModelIO(
        "onnxruntime_onnx", "model.onnx", graph.lbnet,
        [tensor(graph.input_name, graph.dims, graph.dtypes[0])],
        [tensor(graph.output_name, graph.output_dims, graph.dtypes[1])],
    )  # fmt: skip


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(
    name: str,
    runs: str,  # 'platform: "..."' or 'backend: "..."'
    max_batch: int,
    inputs: list[Tensor],
    outputs: list[Tensor],
    group: str,
    params: dict[str, str],
    extra: tuple[str, ...] = (),
) -> str:
    """One config.pbtxt; `dims` of the tensors as Triton sees them (batch dim left out where
    max_batch > 0)."""

    def block(tensors: list[Tensor]) -> str:
        items = []
        for t in tensors:
            dims = ", ".join(str(d) for d in t.dims)
            ragged = " allow_ragged_batch: true" if t.ragged else ""
            items.append(
                f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ]{ragged} }}'
            )
        return ",\n".join(items)

    lines = [
        f'name: "{name}"',
        runs,
        f"max_batch_size: {max_batch}",
        f"input [\n{block(inputs)}\n]",
        f"output [\n{block(outputs)}\n]",
        f"instance_group [ {group} ]",
        *extra,
    ]
    for key, value in params.items():
        lines.append(
            f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}"
        )
    return "\n".join(lines) + "\n"


def _batched(io: ModelIO) -> bool:
    return all(t.dims[0] == -1 for t in io.inputs + io.outputs)


def _dropped_batch(tensors: list[Tensor]) -> list[Tensor]:
    return [Tensor(t.name, t.data_type, t.dims[1:]) for t in tensors]


def _lbnet_params(io: ModelIO) -> dict[str, str]:
    # lbnet.io always: a client must scale its pixels by it, and a file made before --io has
    # no key (it is 0..255)
    facts = {**io.lbnet, "io": io_kind(io.lbnet, "the model")}
    return {f"lbnet.{k}": v for k, v in facts.items()}


def config_text(io: ModelIO, name: str, max_batch: int, instances: int, kind: str) -> str:
    """config.pbtxt for `io`; a dynamic batch dimension becomes Triton's (up to `max_batch`)."""
    batched = _batched(io)
    inputs, outputs = io.inputs, io.outputs
    if batched:
        inputs, outputs = _dropped_batch(inputs), _dropped_batch(outputs)
    return _config(
        name, f'platform: "{io.platform}"', max_batch if batched else 0, inputs, outputs,
        f"{{ count: {instances} kind: {kind} }}", _lbnet_params(io),
        ("dynamic_batching { }",) if batched else (),
    )  # fmt: skip


@dataclass(frozen=True)
class ImageSettings:
    """How the image model tiles (the Upscaler's settings; tile None: whole images where they
    fit the budget, else DEFAULT_TILE) and how the two models are scheduled."""

    tile: int | None = None
    overlap: int = 16
    merge: str = "feather"
    memory_budget_mb: int = 2048
    batch: int = 1  # tiles per BLS request
    image_instances: int = 4  # images served at once (each a process of the Python backend)
    queue_delay_us: int = 2000  # how long the tile model waits to fill a batch
    backend: str = "ort"  # the runner of a Python tile model (ort, openvino)
    threads: int = 0  # its CPU threads (0: all it may use)


def _python_tile_config(io: ModelIO, name: str, max_batch: int, instances: int,
                        settings: ImageSettings) -> str:  # fmt: skip
    """The Python-backend tile model over our runner: float32 tiles of any size (a fixed-size
    graph's own), Triton's dynamic batching, one warm-up tile."""
    _, _, h, w = io.inputs[0].dims
    s = int(io.lbnet["scale"])
    out = [-1 if d == -1 else s * d for d in (h, w)]
    warm = settings.tile or 96
    wh, ww = (warm if h == -1 else h), (warm if w == -1 else w)
    warmup = (
        f'model_warmup [ {{ name: "one tile" batch_size: 1 inputs {{ key: "{TILE_INPUT}" '
        f"value: {{ data_type: TYPE_FP32 dims: [ 3, {wh}, {ww} ] zero_data: true }} }} }} ]"
    )
    # our runner inside takes tiles on 0..255 and feeds the graph its own range (lbnet.io):
    # that is the interface this model's parameters describe to its clients
    params = {"role": "tiles", "backend": settings.backend, "threads": str(settings.threads),
              **_lbnet_params(io), "lbnet.io": "255"}  # fmt: skip
    return _config(
        name, 'backend: "python"', max_batch,
        # Ragged: tiles of any shapes share a batch, each still run on its own (TileModel).
        # Without it Triton batches equal shapes only, and its dynamic batcher re-polls
        # without waiting while a queued request's shape differs from the pending batch's:
        # with 4 clients sending Set5's mixed sizes whole, one server thread burned 4-6 s of
        # CPU per 10 s beside our runner (measured here), about a fifth of a 2-core machine.
        [Tensor(TILE_INPUT, "TYPE_FP32", [3, h, w], ragged=True)],
        [Tensor(TILE_OUTPUT, "TYPE_FP32", [3, *out])],
        f"{{ count: {instances} kind: KIND_CPU }}", params,
        (f"dynamic_batching {{ max_queue_delay_microseconds: {settings.queue_delay_us} }}",
         warmup),
    )  # fmt: skip


def _image_config(io: ModelIO, name: str, tile_model: str, python_tile: bool,
                  settings: ImageSettings, max_batch: int) -> str:  # fmt: skip
    """The image model: uint8 H x W x 3 in and out, the Upscaler's settings and the tile model's
    facts (fixed size and batch where it has them, else its max_batch_size) as parameters."""
    b, _, h, w = io.inputs[0].dims
    fixed_batch = not python_tile and not _batched(io)
    if not fixed_batch and settings.batch > max_batch:  # Triton would refuse every request
        raise LBNetError(
            f"--batch {settings.batch} is over --max-batch {max_batch}, the most tiles the tile "
            "model takes in one request"
        )
    params = {
        "role": "image",
        "tile_model": tile_model,
        "tile_input": TILE_INPUT if python_tile else io.inputs[0].name,
        "tile_output": TILE_OUTPUT if python_tile else io.outputs[0].name,
        "tile_type": "TYPE_FP32" if python_tile else io.inputs[0].data_type,
        "tile_batching": "fixed" if fixed_batch else "dynamic",
        "tile": str(settings.tile or 0),
        "overlap": str(settings.overlap),
        "merge": settings.merge,
        "memory_budget_mb": str(settings.memory_budget_mb),
        "batch": str(settings.batch),
        **_lbnet_params(io),
        "lbnet.input_size": "dynamic" if -1 in (h, w) else f"{h}x{w}",
        "lbnet.batch": str(b) if fixed_batch else "dynamic",
    }
    if not fixed_batch:
        params["tile_max_batch"] = str(max_batch)
    if python_tile:  # the range of the tile model's tiles: 0..255 into our runner there
        params["lbnet.io"] = "255"
    ImageModel().configure(params, name)  # the server's own checks, before anything is written
    return _config(
        name, 'backend: "python"', 0,
        [Tensor(IMAGE_INPUT, "TYPE_UINT8", [-1, -1, 3])],
        [Tensor(IMAGE_OUTPUT, "TYPE_UINT8", [-1, -1, 3])],
        f"{{ count: {settings.image_instances} kind: KIND_CPU }}", params,
    )  # fmt: skip


def check_name(name: str, repository: Path) -> None:
    """A model name is a plain folder name (also a quotable config.pbtxt string: no quotes,
    slashes, spaces) that the repository's file system takes."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name or ""):
        raise LBNetError(
            f"model name {name!r} must be a plain folder name: letters, digits, '_', '-', '.'"
        )
    if len(name) > (limit := name_max(repository)):
        raise LBNetError(
            f"model folder {name[:40]}... is {len(name)} characters long, over the {limit} "
            f"that {repository} takes: choose a shorter --name"
        )


# what a Python model imports: the package root and the runtime (numpy, pillow only)
VENDORED = ("lbnet_deploy", "lbnet_deploy.runtime")


def vendor_runtime(folder: Path) -> None:
    """Copy our torch-free runtime's sources into `folder` (a Python model's version folder,
    which Triton's Python backend puts on sys.path), wherever this installation keeps them
    (an editable checkout maps runtime/ to lbnet_deploy.runtime: copied by package name)."""
    import importlib.util

    for package in VENDORED:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations
        source = Path(next(iter(spec.submodule_search_locations)))
        target = folder.joinpath(*package.split("."))
        target.mkdir(parents=True)
        for path in sorted(source.glob("*.py")):
            shutil.copyfile(path, target / path.name)


def _model_py(role: str) -> str:
    from lbnet_deploy._version import __version__

    cls = {"image": "ImageModel", "tiles": "TileModel"}[role]
    return (
        f'"""The {role} model of an lbnet-deploy {__version__} image repository."""\n\n'
        "import os\nimport sys\n\n"
        "# this folder's copy of lbnet_deploy first, before any other installed version\n"
        "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n\n"
        f"from lbnet_deploy.runtime.triton_backend import {cls} as TritonPythonModel\n\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


STAGING_PREFIX = ".lbnet-triton-staging."


def staging_parent(repository: Path) -> Path:
    """Where model folders are assembled: beside the repository (its parent, on the same file
    system, so the rename into place is atomic), never inside it, where Triton would try to
    load the staging folder as a model and refuse to start (it skips no hidden folder). A
    repository that is a mount point (or whose parent cannot be written) has no such place:
    inside it, then (a server starting meanwhile, or a killed run's leftover, is named by
    `serve`'s check_repository)."""
    parent = repository.absolute().parent
    try:
        same = parent.stat().st_dev == repository.stat().st_dev
    except OSError:
        return repository
    return parent if same and os.access(parent, os.W_OK | os.X_OK) else repository


class _Staging:
    """Model folders assembled beside the repository and renamed into place together; an
    existing folder is refused before anything is written, nothing half-made is left."""

    def __init__(self, repository: Path, names: list[str]) -> None:
        if not repository.is_dir():
            raise LBNetError(f"model repository folder does not exist: {repository}")
        for name in names:
            check_name(name, repository)
            if (repository / name).exists():
                raise LBNetError(
                    f"{repository / name} already exists: remove it or choose another --name"
                )
        self.repository, self.names = repository, names

    def __enter__(self) -> Path:
        where = staging_parent(self.repository)
        for stale in where.glob(f"{STAGING_PREFIX}*"):  # left by a run killed an hour ago
            with contextlib.suppress(OSError):
                if time.time() - stale.lstat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(stale)
        self.root = Path(tempfile.mkdtemp(dir=where, prefix=STAGING_PREFIX))
        return self.root

    def commit(self) -> None:
        try:
            self._rename()
        except OSError as exc:
            if exc.errno != errno.EXDEV or self.root.parent == self.repository:
                raise
            # the repository is a mount of its parent's file system (a bind mount: same device,
            # and still no rename across): copied into a staging folder inside it, then renamed
            outside = self.root
            self.root = Path(tempfile.mkdtemp(dir=self.repository, prefix=STAGING_PREFIX))
            try:
                for name in self.names:
                    shutil.copytree(outside / name, self.root / name)
            finally:
                shutil.rmtree(outside, ignore_errors=True)
            self._rename()

    def _rename(self) -> None:
        moved: list[Path] = []
        try:
            for name in self.names:
                folder = self.root / name
                folder.chmod(default_dir_mode())  # mkdtemp's 0700 would lock out Triton's user
                os.replace(folder, self.repository / name)
                moved.append(self.repository / name)
        except OSError:
            for path in moved:
                shutil.rmtree(path, ignore_errors=True)
            raise

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _write(staging: _Staging, files: dict[str, str | Path], vendored: tuple[str, ...] = ()) -> None:
    """Write `files` (relative path -> text, or a Path to copy) and our runtime into the
    `vendored` folders under the staging root, then rename the model folders into place;
    OSError becomes one line."""
    with staging as root:
        try:
            for rel, content in files.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, path)
                else:
                    write_text_atomic(path, content)
            for rel in vendored:
                vendor_runtime(root / rel)
            staging.commit()
        except OSError as exc:
            target = staging.repository / staging.names[-1]
            raise LBNetError(f"cannot write {target} ({exc.strerror or exc})") from None


def write_repository(
    model: str | Path,
    io: ModelIO,
    repository: str | Path,
    name: str,
    *,
    version: int = 1,
    max_batch: int = 8,
    instances: int = 1,
    kind: str = "KIND_GPU",
) -> Path:
    """Create `<repository>/<name>/` for `model` (described by `io = model_io(model)`) whole:
    assembled beside it, then renamed into place."""
    model, repository = Path(model), Path(repository)
    _check_counts(version, max_batch, instances)
    staging = _Staging(repository, [name])
    config = config_text(io, name, max_batch, instances, kind)
    _write(staging, {f"{name}/config.pbtxt": config, f"{name}/{version}/{io.filename}": model})
    return repository / name


def _check_counts(*counts: int) -> None:
    if min(counts) < 1:
        raise LBNetError("--version, --max-batch and --instances must be at least 1")


def write_image_repository(
    model: str | Path,
    io: ModelIO,
    repository: str | Path,
    name: str,
    settings: ImageSettings,
    *,
    python_tile: bool,
    version: int = 1,
    max_batch: int = 8,
    instances: int = 1,
    kind: str = "KIND_GPU",
) -> tuple[Path, Path]:
    """`<repository>/<name>` (the image model) and `<name>_tiles` (the tile model: our runner in
    the Python backend where `python_tile`, else `io`'s platform), written together.
    Returns (image model folder, tile model folder)."""
    model, repository = Path(model), Path(repository)
    _check_counts(version, max_batch, instances, settings.image_instances, settings.batch)
    if python_tile and io.platform != "onnxruntime_onnx":
        raise LBNetError("a TensorRT engine runs on GPUs only: drop --cpu, or serve the .onnx")
    tiles = f"{name}_tiles"
    staging = _Staging(repository, [tiles, name])
    v = str(version)
    files: dict[str, str | Path] = {
        f"{name}/config.pbtxt": _image_config(io, name, tiles, python_tile, settings, max_batch),
        f"{name}/{v}/model.py": _model_py("image"),
        f"{tiles}/{v}/{io.filename}": model,
    }
    vendored = [f"{name}/{v}"]
    if python_tile:
        files[f"{tiles}/config.pbtxt"] = _python_tile_config(
            io, tiles, max_batch, instances, settings
        )
        files[f"{tiles}/{v}/model.py"] = _model_py("tiles")
        vendored.append(f"{tiles}/{v}")
    else:
        files[f"{tiles}/config.pbtxt"] = config_text(io, tiles, max_batch, instances, kind)
    _write(staging, files, tuple(vendored))
    return repository / name, repository / tiles
