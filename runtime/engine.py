"""TensorRT engine backend: what an engine file is (its sidecar), a loader and a runner.

Needs numpy, TensorRT and pycuda only, so a Jetson serves engines without torch or onnx.
Written against the `tensorrt` API directly rather than through Polygraphy's TrtRunner: that
keeps the Jetson install at TensorRT + pycuda, and lets this code be type-checked against
tensorrt-stubs and tested against a recording fake on machines where TensorRT cannot be
installed (ours).

An engine is opaque and tied to one TensorRT version and GPU, so `lbnet-deploy build` writes a
JSON sidecar beside it (`model.plan.json`): the model's facts (as in the ONNX metadata), the
TensorRT version, GPU and compute capability it was built for, the ONNX file's hash and the
input shape. The runner refuses a mismatched engine with that one line, before TensorRT would
fail to deserialize it. Engines are fixed-shape (vs-mlrt's default): the Upscaler pads and tiles.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts, model_facts

from .backend import check_batch, describe_facts, run_fixed_batch

if TYPE_CHECKING:
    import tensorrt as trt

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # what names a TensorRT engine file
INSTALL_HINT = "install lbnet-deploy[trt] on a machine with an NVIDIA GPU"


def require_tensorrt() -> str:
    """The installed TensorRT's version, or a one-line error. Callers then `import tensorrt`
    inside the function, so every use is checked against tensorrt-stubs by mypy.

    tensorrt-stubs installs an importable `tensorrt` namespace with no library behind it, so
    the test is for `Builder`, not for importability.
    """
    try:
        import tensorrt
    except ImportError:
        raise LBNetError(f"TensorRT is not installed ({INSTALL_HINT})") from None
    if not hasattr(tensorrt, "Builder"):
        raise LBNetError(f"TensorRT is not installed, only its type stubs ({INSTALL_HINT})")
    return str(tensorrt.__version__)


def load_cuda() -> ModuleType:
    """pycuda's driver module, initialised, or a one-line error."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise LBNetError(f"pycuda is not installed ({INSTALL_HINT})") from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError kinds
        raise LBNetError(f"CUDA is not usable: {exc}") from None
    if count < 1:
        raise LBNetError("no CUDA device found")
    return cuda


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """TensorRT's Dims as a tuple (the stubs declare no __iter__)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


@dataclass(frozen=True)
class GpuFacts:
    name: str
    compute_capability: str  # "8.7"
    memory_mb: int


def gpu_facts(cuda: ModuleType, index: int = 0) -> GpuFacts:
    device = cuda.Device(index)
    major, minor = device.compute_capability()
    return GpuFacts(device.name(), f"{major}.{minor}", device.total_memory() // 2**20)


@dataclass(frozen=True)
class EngineFacts:
    """The sidecar: what the engine computes and what it was built for."""

    lbnet: dict[str, str]  # the ONNX file's lbnet.* metadata, prefix dropped
    tensorrt: str
    gpu: str
    compute_capability: str
    onnx_sha256: str
    input_shape: tuple[int, ...]  # (B, 3, H, W)
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...] = field(default=())  # precision flags (weakly typed only)
    tf32: bool = False
    input_name: str = "lr"
    output_name: str = "sr"
    dtypes: tuple[str, str] = ("float32", "float32")  # input's, output's (numpy names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> EngineFacts:
        """Parse and check a sidecar: every field has its type, the model facts are LBNet's
        (`metadata.model_facts`), the shape is (B, 3, H, W), the I/O types are float."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        known = {f.name: f for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}  # a newer tool's extra facts
        for key in ("input_shape", "builder_flags", "dtypes"):  # JSON has lists, we keep tuples
            if key in raw:
                if not isinstance(raw[key], list):
                    raise ValueError(f"{key} is not a list")
                raw[key] = tuple(raw[key])
        facts = cls(**raw)
        for name in ("tensorrt", "gpu", "compute_capability", "onnx_sha256", "precision",
                     "input_name", "output_name"):  # fmt: skip
            if not isinstance(getattr(facts, name), str):
                raise ValueError(f"{name} is not a string")
        shape = facts.input_shape
        if len(shape) != 4 or shape[1] != 3 or not all(type(d) is int and d > 0 for d in shape):
            raise ValueError(f"input_shape {list(shape)} is not (batch, 3, height, width)")
        if not all(d in ("float32", "float16") for d in facts.dtypes) or len(facts.dtypes) != 2:
            raise ValueError(f"dtypes {list(facts.dtypes)} are not float32/float16 in and out")
        model_facts(facts.lbnet, source)  # raises its own one-line LBNetError
        return facts

    @property
    def model(self) -> ModelFacts:
        """The model facts, with the engine's fixed input size and batch."""
        b, _, h, w = self.input_shape
        return model_facts(self.lbnet, "sidecar").with_sizes((h, w), b)


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_facts(engine: str | Path) -> EngineFacts:
    """The engine's sidecar, or a one-line error naming what is wrong."""
    engine, side = Path(engine), sidecar_path(engine)
    if not engine.is_file():
        raise LBNetError(f"engine file not found: {engine}")
    if not side.is_file():
        raise LBNetError(
            f"{engine} has no {side.name} beside it: build engines with `lbnet-deploy build`, "
            "which records the model and the TensorRT version and GPU they are for"
        )
    try:
        return EngineFacts.from_json(side.read_text(), str(side))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise LBNetError(f"{side} is not an lbnet-deploy engine description ({exc})") from None


def check_compatible(facts: EngineFacts, engine: Path, tensorrt: str, gpu: GpuFacts) -> None:
    """Engines deserialize only on the TensorRT version and GPU architecture they were built
    for; say so before TensorRT fails with a less readable message."""
    if facts.tensorrt != tensorrt:  # TensorRT refuses engines across patch releases too
        raise LBNetError(
            f"{engine} was built with TensorRT {facts.tensorrt}, this is {tensorrt}: "
            "rebuild it with `lbnet-deploy build`"
        )
    if facts.compute_capability != gpu.compute_capability:
        raise LBNetError(
            f"{engine} was built for a GPU of compute capability {facts.compute_capability} "
            f"({facts.gpu}), this {gpu.name} is {gpu.compute_capability}: rebuild it here"
        )


@functools.cache
def trt_logger() -> trt.ILogger:
    """One logger per process: TensorRT warns when objects alive together use different ones."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class _DeviceState:
    """What a runner holds on the device, released inside its CUDA context: explicitly
    (`close`) or when the runner is collected or the interpreter exits. Freed later, after the
    context is gone, TensorRT and pycuda print 'context is destroyed' errors."""

    def __init__(self, cuda: ModuleType, context: Any) -> None:
        self.cuda, self.context = cuda, context
        self.engine: Any = None
        self.execution: Any = None
        self.stream: Any = None
        self.buffers: list[Any] = []

    def release(self) -> None:
        self.context.push()
        try:
            self.execution = None  # the execution context before its engine
            self.engine = None
            self.stream = None
            for buffer in self.buffers:
                buffer.free()
            self.buffers = []
        finally:
            self.cuda.Context.pop()


class TensorRTRunner:
    """Runner over a fixed-shape engine built by `lbnet-deploy build`, on CUDA device `device`."""

    def __init__(self, path: str | Path, device: int = 0) -> None:
        self.path = Path(path)
        self.facts = read_facts(self.path)
        self.tensorrt = require_tensorrt()
        self._cuda = load_cuda()
        self.gpu = gpu_facts(self._cuda, device)
        check_compatible(self.facts, self.path, self.tensorrt, self.gpu)
        # the primary context: the one TensorRT (CUDA runtime API) uses on this device
        self._context = self._cuda.Device(device).retain_primary_context()
        self._state = _DeviceState(self._cuda, self._context)
        self._finalizer = weakref.finalize(self, self._state.release)
        with self.active():
            free_before = self._cuda.mem_get_info()[0]
            self._load()
            # engine weights + the context's activation memory + our I/O buffers: TensorRT
            # allocates all of it up front, so this is the engine's device peak
            self._device_mb = (free_before - self._cuda.mem_get_info()[0]) / 2**20

    def close(self) -> None:
        """Free the engine, its context and the buffers now (also done when collected)."""
        self._finalizer()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this runner's CUDA context current for the calls inside."""
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _load(self) -> None:
        import tensorrt as trt

        runtime = trt.Runtime(trt_logger())
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise LBNetError(f"TensorRT could not deserialize {self.path} (see its log above)")
        self._state.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise LBNetError(f"{self.path} has inputs {inputs} and outputs {outputs}, not 1 and 1")
        self._in, self._out = inputs[0], outputs[0]
        shape = dims(engine.get_tensor_shape(self._in))
        if any(d < 0 for d in shape):
            # a dynamic graph built with one profile whose min = opt = max (`lbnet-deploy build`)
            low, _, high = (dims(s) for s in engine.get_tensor_profile_shape(self._in, 0))
            if low != high:
                raise LBNetError(f"{self.path} has a shape range {low}..{high}: rebuild fixed")
            shape = high
        if shape != tuple(self.facts.input_shape):
            raise LBNetError(
                f"{self.path} takes {shape}, its sidecar says {self.facts.input_shape}: "
                "the two files do not belong together"
            )
        self._shape = shape
        context = engine.create_execution_context()
        self._state.execution = context
        if not context.set_input_shape(self._in, self._shape):
            raise LBNetError(f"{self.path} rejects input shape {self._shape}")
        out_shape = dims(context.get_tensor_shape(self._out))
        cuda = self._cuda
        self._state.stream = cuda.Stream()
        # page-locked host buffers: asynchronous copies need them, and they copy fastest
        self._host_in = cuda.pagelocked_empty(
            self._shape, trt.nptype(engine.get_tensor_dtype(self._in))
        )
        self._host_out = cuda.pagelocked_empty(
            out_shape, trt.nptype(engine.get_tensor_dtype(self._out))
        )
        self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
        self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self._state.buffers = [self._dev_in, self._dev_out]
        for name, buffer in ((self._in, self._dev_in), (self._out, self._dev_out)):
            if not context.set_tensor_address(name, int(buffer)):
                raise LBNetError(f"TensorRT refused the device buffer of {name!r}")

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._shape[2], self._shape[3]

    @property
    def max_batch(self) -> int | None:
        return self._shape[0]

    @property
    def scale(self) -> int:
        return self.model_facts.scale

    @property
    def model_facts(self) -> ModelFacts:
        return self.facts.model

    def describe(self) -> dict[str, object]:
        return describe_facts(
            self.model_facts, "tensorrt", path=str(self.path), tensorrt=self.tensorrt,
            gpu=self.gpu.name, precision=self.facts.precision,
        )  # fmt: skip

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self.input_size)
        return run_fixed_batch(self._run, batch, self._shape[0])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cuda, state = self._cuda, self._state
        if state.execution is None:
            raise LBNetError(f"the runner of {self.path} was closed")
        with self.active():
            self._host_in[...] = batch  # casts to the engine's input type
            cuda.memcpy_htod_async(self._dev_in, self._host_in, state.stream)
            if not state.execution.execute_async_v3(state.stream.handle):
                raise LBNetError(f"TensorRT failed to run {self.path} (see its log above)")
            cuda.memcpy_dtoh_async(self._host_out, self._dev_out, state.stream)
            state.stream.synchronize()
        return np.array(self._host_out, dtype=np.float32)  # a copy: the buffer is reused

    def device_peak_mb(self) -> float:
        """Device memory this runner took when loading (`bench` reports it)."""
        return self._device_mb


def engine_info(path: str | Path) -> str:
    """`lbnet-deploy info` for an engine: its sidecar, readable without TensorRT."""
    facts = read_facts(path)
    lines = [f"{path}: {Path(path).stat().st_size / 1e6:.2f} MB TensorRT engine"]
    lines.append(f"  model: {facts.lbnet.get('variant')} x{facts.lbnet.get('scale')}")
    for key, value in asdict(facts).items():
        if key != "lbnet":
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
