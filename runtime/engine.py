"""TensorRT engine backend: the runner over a fixed-shape engine built by `lbnet-deploy build`.

Needs numpy, TensorRT and a CUDA binding only (cuda-python or pycuda, `cuda_layer.py`), so a
Jetson serves engines without torch or onnx. Written against the `tensorrt` API directly rather
than through Polygraphy's TrtRunner: that keeps the Jetson install at TensorRT + cuda-python, and
lets this code be type-checked against tensorrt-stubs and tested against a recording fake on
machines where TensorRT cannot be installed (ours). The sidecar, version checks and the
TensorRT probe are in trt_common.py.
Engines are fixed-shape (vs-mlrt's default): the Upscaler pads and tiles.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import describe_facts, infer_file
from .cuda_layer import CudaLayer, load_cuda
from .trt_common import check_compatible, dims, read_facts, require_tensorrt, trt_logger

if TYPE_CHECKING:
    import tensorrt as trt


class _DeviceState:
    """What a runner holds on the device, released inside its CUDA context: explicitly
    (`close`) or when the runner is collected or the interpreter exits. Freed later, after the
    context is gone, TensorRT and the CUDA binding print 'context is destroyed' errors."""

    def __init__(self, cuda: CudaLayer, device: int) -> None:
        self.cuda, self.device = cuda, device
        self.engine: Any = None
        self.execution: Any = None
        self.stream: Any = None
        self.buffers: list[int] = []  # device pointers
        self.host: list[np.ndarray] = []  # page-locked host arrays (input, output)

    def release(self) -> None:
        self.cuda.push(self.device)
        try:
            self.execution = None  # the execution context before its engine
            self.engine = None
            self.stream = None
            for pointer in self.buffers:
                self.cuda.free(pointer)
            for array in self.host:
                self.cuda.free_host(array)
            self.buffers, self.host = [], []
        finally:
            self.cuda.pop()


class TensorRTRunner:
    """Runner over a fixed-shape engine built by `lbnet-deploy build`, on CUDA device `device`."""

    def __init__(self, path: str | Path, device: int = 0) -> None:
        self.path = Path(path)
        self.facts = read_facts(self.path)
        self.tensorrt = require_tensorrt()
        self._cuda = load_cuda()
        self.gpu = self._cuda.facts(device)
        check_compatible(self.facts, self.path, self.tensorrt, self.gpu)
        # the device's primary context: the one TensorRT (runtime API) uses
        self._state = _DeviceState(self._cuda, device)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._state.release)
        with self.active():
            free_before = self._cuda.free_memory()
            self._load()
            # engine weights + the context's activation memory + our I/O buffers: TensorRT
            # allocates all of it up front, so this is the engine's device peak
            self._device_mb = (free_before - self._cuda.free_memory()) / 2**20

    def close(self) -> None:
        """Free the engine, its context and the buffers now (also done when collected)."""
        self._finalizer()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this runner's CUDA context current for the calls inside."""
        self._cuda.push(self._state.device)
        try:
            yield
        finally:
            self._cuda.pop()

    def _load(self) -> None:
        import tensorrt as trt

        runtime = trt.Runtime(trt_logger())
        if self.facts.dla_core is not None:  # before deserializing: the engine runs on that core
            runtime.DLA_core = self.facts.dla_core
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
        if context is None:  # TensorRT returns None when it cannot (device memory)
            raise LBNetError(f"TensorRT could not create an execution context for {self.path}")
        self._state.execution = context
        if not context.set_input_shape(self._in, self._shape):
            raise LBNetError(f"{self.path} rejects input shape {self._shape}")
        out_shape = dims(context.get_tensor_shape(self._out))
        cuda = self._cuda
        self._state.stream = cuda.stream()
        # page-locked host buffers: asynchronous copies need them, and they copy fastest
        host_in = cuda.host_empty(self._shape, trt.nptype(engine.get_tensor_dtype(self._in)))
        host_out = cuda.host_empty(out_shape, trt.nptype(engine.get_tensor_dtype(self._out)))
        self._state.host = [host_in, host_out]  # held by the state only: freed with it
        self._dev_in = cuda.malloc(host_in.nbytes)
        self._dev_out = cuda.malloc(host_out.nbytes)
        self._state.buffers = [self._dev_in, self._dev_out]
        for name, buffer in ((self._in, self._dev_in), (self._out, self._dev_out)):
            if not context.set_tensor_address(name, buffer):
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
        return infer_file(self._run, batch, self.model_facts, self.input_size, self._shape[0])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cuda, state = self._cuda, self._state
        # one execution context, stream and buffer set: one batch at a time across threads
        with self._lock:
            if state.execution is None:
                raise LBNetError(f"the runner of {self.path} was closed")
            host_in, host_out = state.host
            with self.active():
                host_in[...] = batch  # casts to the engine's input type
                cuda.htod_async(self._dev_in, host_in, state.stream)
                if not state.execution.execute_async_v3(state.stream.handle):
                    raise LBNetError(f"TensorRT failed to run {self.path} (see its log above)")
                cuda.dtoh_async(host_out, self._dev_out, state.stream)
                state.stream.synchronize()
            return np.array(host_out, dtype=np.float32)  # a copy: the buffer is reused

    def device_peak_mb(self) -> float:
        """Device memory this runner took when loading (`bench` reports it)."""
        return self._device_mb

    def reset_device_peak(self) -> None:
        """Nothing to reset: the engine's device memory is allocated once, when loading."""
