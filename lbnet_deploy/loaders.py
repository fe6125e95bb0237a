"""From what the user named to a running backend: a chain of small loaders, Polygraphy-style.

Each loader is a frozen dataclass that describes the file it makes; calling it makes (or finds
in the cache) that file, and the last one opens the runner:

    ModelSpec("lbnet-t-x4")                          a name, checkpoint, .onnx or engine file
      -> OnnxFromSpec(spec, size, batch, precision)   its ONNX graph (exported once, cached)
      -> EngineFromOnnx(spec, tile, batch, precision) or a fixed-size TensorRT engine made from
                                                      that graph (built once, cached)
      -> RunnerFromFile(backend, file, threads)       the registry entry's runner on the file
    RunnerFromServer(backend, url, model)            or, for a backend with no local file
                                                      (triton), its runner on a served model

`open_runner` assembles and calls the chain for the backend's kind of file (`runtime.registry`):
`upscale`, `eval`, `parity` and the Python API open runners through it. The files are made by
`resolve` (export, FP16 conversion, engine build; cache keys from file hashes, sizes and
versions), so these commands share one export cache and one engine cache. bench opens the same
registry entries on graphs of its own configurations (benchmarks/models.py); nothing here
imports torch, onnx or TensorRT until a file must be made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import COMPUTE, EXPORTED, Form
from lbnet_deploy.resolve import checkpoint_path, engine_file, model_file
from lbnet_deploy.runtime.backend import Runner
from lbnet_deploy.runtime.registry import (
    BACKENDS,
    DEFAULT,
    Backend,
    get_backend,
)
from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES
from lbnet_deploy.runtime.upscaler import DEFAULT_TILE

FP_PRECISIONS = EXPORTED  # what --precision picks for a name or checkpoint (INT8: calibrate)


@dataclass(frozen=True)
class ModelSpec:
    """What the user named; `scale` (their --scale) is checked before any download or export."""

    spec: str
    scale: int | None = None

    @property
    def is_engine(self) -> bool:
        return self.spec.endswith(ENGINE_SUFFIXES)

    @property
    def is_onnx(self) -> bool:
        return self.spec.endswith(".onnx")

    @property
    def is_file(self) -> bool:
        """A model file with its own precision (not a name or checkpoint to export)."""
        return self.is_engine or self.is_onnx


@dataclass(frozen=True)
class OnnxFromSpec:
    """The ONNX graph for a spec: an .onnx as given, else the cached export of the checkpoint
    (input_size/batch None: dynamic) in the attention form `form`, converted to FP16 where
    asked."""

    model: ModelSpec
    input_size: tuple[int, int] | None = None
    batch: int | None = None
    precision: str = "fp32"
    form: Form = "batched"

    def __call__(self) -> Path:
        return model_file(
            self.model.spec, input_size=self.input_size, batch=self.batch,
            precision=self.precision, scale=self.model.scale, form=self.form,
        )  # fmt: skip


@dataclass(frozen=True)
class EngineFromOnnx:
    """A fixed tile x tile, batch `batch` TensorRT engine for a spec (an engine file as given)."""

    model: ModelSpec
    tile: int = DEFAULT_TILE
    batch: int = 1
    precision: str = "fp32"

    def __call__(self) -> Path:
        return engine_file(
            self.model.spec, tile=self.tile, batch=self.batch, precision=self.precision,
            scale=self.model.scale,
        )  # fmt: skip


@dataclass(frozen=True)
class RunnerFromFile:
    """The backend's runner over the file its loader makes."""

    backend: Backend
    file: OnnxFromSpec | EngineFromOnnx | Path
    threads: int | None = None
    compute: str = "fp32"  # a compute precision the backend sets at opening (bf16)
    cuda_graph: bool = True  # engines: replay a captured CUDA graph per batch

    def __call__(self) -> Runner:
        path = self.file if isinstance(self.file, Path) else self.file()
        engine = {} if self.cuda_graph else {"cuda_graph": False}
        return self.backend.open(path, self.threads, self.compute, **engine)


@dataclass(frozen=True)
class RunnerFromServer:
    """A "server" backend's runner on a model a server holds (no local file to make)."""

    backend: Backend
    url: str
    model: str

    def __call__(self) -> Runner:
        assert self.backend.connect is not None, f"{self.backend.name} connects to no server"
        return self.backend.connect(self.url, self.model)


def served_model(spec: str, precision: str | None) -> str:
    """The served model a spec names: a model name maps to the name `lbnet-deploy triton`
    gives it by default (lbnet-t-x4 -> lbnet_t_x4_fp32), anything else is the server's name."""
    from lbnet_deploy.runtime.triton_client import served_name
    from lbnet_deploy.weights import named_models

    for named in named_models():
        if named.name == spec.lower():
            return served_name(named.variant, named.scale, precision or "fp32")
    if ModelSpec(spec).is_file or spec.endswith(".pt"):
        raise LBNetError(f"--backend triton runs a model on the server: name it, not {spec}")
    if precision is not None:
        raise LBNetError(f"{spec} is a served model with its own precision: drop --precision")
    return spec


def open_runner(
    spec: str,
    backend: str = DEFAULT,
    threads: int | None = None,
    *,
    tile: int | None = None,
    batch: int = 1,
    precision: str | None = None,
    scale: int | None = None,
    cuda_graph: bool = True,
    url: str | None = None,
) -> Runner:
    """A runner for a model name, checkpoint, .onnx or engine file on the chosen backend.

    Checkpoints run on ONNX Runtime through a dynamic-size graph exported on first use and
    cached; the runtime itself never needs torch unless `backend="torch"`. On "tensorrt"
    (chosen by itself for engine files) names, checkpoints and .onnx files become a fixed
    `tile` x `tile`, batch `batch` engine, built on first use and cached. `precision` ("fp16")
    picks the graph made from a name or checkpoint; a file has its own. "bf16" is a compute
    precision (OpenVINO's hint) over the FP32 graph, also of an .onnx file. "bicubic-x4" is the
    interpolation baseline on any backend. `cuda_graph=False`: a TensorRT engine enqueues each
    batch instead of replaying a CUDA graph (to compare). "triton" opens the model `spec` names
    on the server at `url` (`served_model`).
    """
    if spec.startswith("bicubic"):  # "bicubic-x4": the interpolation baseline
        from lbnet_deploy.runtime.bicubic import BicubicRunner

        factor = spec.rpartition("x")[2]
        if not factor.isdigit():
            raise LBNetError(f"name the bicubic baseline's scale, e.g. bicubic-x4, not {spec!r}")
        return BicubicRunner(int(factor))
    model = ModelSpec(spec, scale)
    if model.is_engine and backend == DEFAULT:
        backend = "tensorrt"  # the default backend cannot run an engine; the user meant this
    entry = get_backend(backend)
    if not cuda_graph and entry.artifact != "engine":
        raise LBNetError(f"--no-cuda-graph is for TensorRT engines; the {backend} backend has none")
    entry.check_installed()  # one line naming the missing library, before any export
    if entry.artifact == "server":
        from lbnet_deploy.runtime.triton_client import DEFAULT_URL

        return RunnerFromServer(entry, url or DEFAULT_URL, served_model(spec, precision))()
    if url is not None:
        raise LBNetError(f"--url is for --backend triton, not {backend}")
    compute = "fp32"
    if precision is not None and precision in COMPUTE:  # set on the runner
        if precision not in entry.precisions:
            able = [n for n, b in BACKENDS.items() if precision in b.precisions]
            raise LBNetError(f"{precision} runs on the {', '.join(able)} backend, not {backend}")
        compute, precision = precision, None
        if entry.check_compute is not None:  # before a first-use export in its own form
            entry.check_compute(compute)
    fp32_file = model.is_file and precision == "fp32"  # "keep FP32": checked once it is open
    if fp32_file:
        precision = None
    if precision is not None:
        if model.is_file:
            raise LBNetError(
                f"{spec} has its own precision: --precision is for names and .pt (and fp32, "
                "kept throughout, for an FP32 file)"
            )
        if precision not in FP_PRECISIONS:
            raise LBNetError(
                f"precision must be fp32, fp16 or bf16 (INT8: `calibrate`), not {precision}"
            )
        if precision not in entry.precisions:
            raise LBNetError(f"the {backend} backend runs {', '.join(entry.precisions)} only")
    fp = precision or "fp32"
    if entry.artifact == "engine":
        if (tile is not None and tile < 1) or batch < 1:
            raise LBNetError(f"tile and batch must be at least 1, got {tile} and {batch}")
        engine = EngineFromOnnx(model, tile or DEFAULT_TILE, batch, fp)
        return RunnerFromFile(entry, engine, cuda_graph=cuda_graph)()
    if model.is_engine:
        raise LBNetError(
            f"{spec}: TensorRT engines run on the tensorrt backend (--backend tensorrt)"
        )
    if entry.artifact == "checkpoint":
        if model.is_onnx:
            raise LBNetError("the torch backend runs checkpoints or model names, not .onnx files")
        # a name is resolved by the runner; --scale is checked before anything is downloaded
        checked = checkpoint_path(spec, scale) if scale is not None else Path(spec)
        return RunnerFromFile(entry, checked, threads)()
    graph = OnnxFromSpec(model, precision=fp, form=entry.form(compute))
    runner = RunnerFromFile(entry, graph, threads, compute)()
    if fp32_file and runner.model_facts.precision != "fp32":
        raise LBNetError(
            f"{spec} is a {runner.model_facts.precision} graph: --precision fp32 takes FP32 "
            "files (a file has its own precision)"
        )
    return runner
