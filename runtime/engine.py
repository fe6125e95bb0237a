"""TensorRT engine backend: the runner over a fixed-shape engine built by `lbnet-deploy build`.

Needs numpy, TensorRT and a CUDA binding only (cuda-python or pycuda, `cuda_layer.py`), so a
Jetson serves engines without torch or onnx. Written against the `tensorrt` API directly rather
than through Polygraphy's TrtRunner: that keeps the Jetson install at TensorRT + cuda-python, and
lets this code be type-checked against tensorrt-stubs and tested against a recording fake on
machines where TensorRT cannot be installed (ours). The sidecar, version checks and the
TensorRT probe are in trt_common.py.
Engines are fixed-shape (vs-mlrt's default): the Upscaler pads and tiles.

Speed (what vs-mlrt's `num_streams`/`use_cuda_graph` and trtexec's `--streams`/`--useCudaGraph`
do): the runner holds `streams` slots, each an execution context with its own stream, device
buffers and page-locked input buffer, so up to that many batches run at once, and one
page-locked output buffer more than the slots: a batch's output is downloaded into a free one
and merged from there (`Leasing`), its context free again as soon as the device is done, so
while the host merges batch k-1 the engine runs batch k and batch k+1 is uploaded on the other
stream. Batches are submitted in the order they are merged (`Pending`). Each slot's upload and
engine run are captured once into a CUDA graph and replayed per batch, the download enqueued
after it; where TensorRT or the binding cannot capture, one line says so and the runner
enqueues as before.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import Leased, Once, Pending, describe_facts, infer_file, lend, submit_file
from .cuda_layer import CudaLayer, Stream, capture, load_cuda
from .trt_common import (
    EngineFacts,
    EngineLayer,
    check_compatible,
    dims,
    parse_layers,
    read_facts,
    require_tensorrt,
    trt_logger,
)

if TYPE_CHECKING:
    import tensorrt as trt

# Two slots: the upload of one batch and the download of the one before overlap the engine's
# run of the batch between them. Each slot holds its own activation memory on the device; an
# output buffer (page-locked host memory only) is what a batch holds while it is merged.
DEFAULT_STREAMS = 2

log = logging.getLogger("lbnet_deploy")


class _Slot:
    """An execution context with its stream, device buffers and page-locked input buffer, and
    the CUDA graph of one batch's upload and engine run through them (None: enqueued call by
    call). A batch holds it while on the device, not while its output is merged."""

    def __init__(self, execution: Any, stream: Stream, host_in: np.ndarray) -> None:
        self.execution, self.stream = execution, stream
        self.host_in = host_in  # page-locked: asynchronous copies need it
        self.device: list[int] = []  # device pointers: input, output
        self.graph: Any = None
        self.lock = threading.Lock()  # held while a batch is on it; release() waits


class _Output:
    """A page-locked buffer a batch's output is downloaded into and merged from: held from the
    batch's submission until its lease is released (`Leased`)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.lock = threading.Lock()  # held while leased; release() waits


class _DeviceState:
    """What a runner holds on the device, released inside its CUDA context: explicitly
    (`close`) or when the runner is collected or the interpreter exits. Freed later, after the
    context is gone, TensorRT and the CUDA binding print 'context is destroyed' errors."""

    def __init__(self, cuda: CudaLayer, device: int) -> None:
        self.cuda, self.device = cuda, device
        self.engine: Any = None
        self.slots: list[_Slot] = []
        self.outputs: list[_Output] = []
        self.closed = False

    def release(self) -> None:
        self.closed = True  # a batch that gets a slot from now on is refused
        cuda = self.cuda
        cuda.push(self.device)
        try:
            for slot in self.slots:
                with slot.lock:  # a batch submitted finishes first, once waited for
                    if slot.graph is not None:
                        cuda.destroy_exec(slot.graph)
                    slot.graph = slot.execution = None  # the contexts before their engine
            for output in self.outputs:
                with output.lock:  # and a lease is given back
                    pass
            self.engine = None
            for slot in self.slots:
                for pointer in slot.device:
                    cuda.free(pointer)
                cuda.free_host(slot.host_in)
                slot.stream.destroy()
            for output in self.outputs:
                cuda.free_host(output.array)
            self.slots, self.outputs = [], []
        finally:
            cuda.pop()


class TensorRTRunner:
    """Runner over a fixed-shape engine built by `lbnet-deploy build`, on CUDA device `device`.

    `streams`: batches run at once (one execution context, stream and buffer set each; an engine
    with a dynamic input runs one, NvInferRuntime.h: contexts in concurrent use need a profile
    each). `cuda_graph`: capture each slot's batch into a CUDA graph and replay it.
    """

    def __init__(
        self,
        path: str | Path,
        device: int = 0,
        *,
        cuda_graph: bool = True,
        streams: int = DEFAULT_STREAMS,
    ) -> None:
        if streams < 1:
            raise LBNetError(f"streams must be at least 1, got {streams}")
        self.path = Path(path)
        self.facts = read_facts(self.path)
        self.tensorrt = require_tensorrt()
        self._cuda = load_cuda()
        self.gpu = self._cuda.facts(device)
        check_compatible(self.facts, self.path, self.tensorrt, self.gpu)
        # the device's primary context: the one TensorRT (runtime API) uses
        self._state = _DeviceState(self._cuda, device)
        self._finalizer = weakref.finalize(self, self._state.release)
        with self.active():
            free_before = self._cuda.free_memory()
            self._load(streams)
            if cuda_graph:
                self._capture_graphs()
            # engine weights + each context's activation memory + our I/O buffers (+ graphs):
            # TensorRT allocates all of it up front, so this is the engine's device peak
            self._device_mb = (free_before - self._cuda.free_memory()) / 2**20
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for slot in self._state.slots:
            self._free.put(slot)
        self._free_out: queue.SimpleQueue[_Output] = queue.SimpleQueue()
        for output in self._state.outputs:
            self._free_out.put(output)

    def close(self) -> None:
        """Free the engine, its contexts and the buffers now (also done when collected); a
        batch submitted finishes first, once waited for (or collected), and a lease is given
        back first."""
        self._finalizer()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this runner's CUDA context current for the calls inside."""
        self._cuda.push(self._state.device)
        try:
            yield
        finally:
            self._cuda.pop()

    def _load(self, streams: int) -> None:
        import tensorrt as trt

        engine = _deserialize(self.path, self.facts)
        self._state.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise LBNetError(f"{self.path} has inputs {inputs} and outputs {outputs}, not 1 and 1")
        self._in, self._out = inputs[0], outputs[0]
        shape = dims(engine.get_tensor_shape(self._in))
        dynamic = any(d < 0 for d in shape)
        if dynamic:
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
        types = [trt.nptype(engine.get_tensor_dtype(n)) for n in (self._in, self._out)]
        self._out_type = np.dtype(types[1])
        for index in range(1 if dynamic else streams):
            context = engine.create_execution_context()
            if context is None:  # TensorRT returns None when it cannot (device memory)
                if index == 0:
                    raise LBNetError(
                        f"TensorRT could not create an execution context for {self.path}"
                    )
                log.warning(
                    "%s: device memory for %d execution contexts only; running %d batches "
                    "at a time", self.path, index, index,
                )  # fmt: skip
                break
            self._state.slots.append(self._slot(context, types))
        # one output buffer more than the contexts: while the host merges a batch from its
        # buffer, every context can run another
        for _ in range(len(self._state.slots) + 1):
            array = self._cuda.host_empty(self._out_shape, types[1])
            self._state.outputs.append(_Output(array))

    def _slot(self, context: trt.IExecutionContext, types: list[Any]) -> _Slot:
        """An execution context's stream and buffers, its tensors bound to them."""
        if not context.set_input_shape(self._in, self._shape):
            raise LBNetError(f"{self.path} rejects input shape {self._shape}")
        out_shape = dims(context.get_tensor_shape(self._out))
        cuda = self._cuda
        self._out_shape = out_shape
        slot = _Slot(context, cuda.stream(), cuda.host_empty(self._shape, types[0]))
        sizes = (slot.host_in.nbytes, int(np.prod(out_shape)) * np.dtype(types[1]).itemsize)
        for name, size in zip((self._in, self._out), sizes, strict=True):
            slot.device.append(cuda.malloc(size))  # the state frees all of it
            if not context.set_tensor_address(name, slot.device[-1]):
                raise LBNetError(f"TensorRT refused the device buffer of {name!r}")
        return slot

    def _enqueue(self, slot: _Slot) -> bool:
        """Upload and run on the slot's stream; False where TensorRT could not enqueue."""
        self._cuda.htod_async(slot.device[0], slot.host_in, slot.stream)
        return bool(slot.execution.execute_async_v3(slot.stream.handle))

    def _capture_graphs(self) -> None:
        """Each slot's upload and engine run as a CUDA graph (addresses are fixed: the buffers
        never move; the download is not in it, as its output buffer changes from batch to
        batch); where one cannot be captured, none is used."""
        slots = self._state.slots
        try:
            for slot in slots:
                slot.host_in.fill(0)
                # once outside capture: TensorRT's deferred setup must not land in the graph
                if not self._enqueue(slot):
                    raise LBNetError("TensorRT could not enqueue the engine")
                slot.stream.synchronize()
                slot.graph = capture(
                    self._cuda, slot.stream, functools.partial(self._enqueue, slot)
                )
        except LBNetError as exc:
            log.warning("%s: no CUDA graph (%s); enqueuing each batch instead", self.path, exc)
            for slot in slots:
                if slot.graph is not None:
                    self._cuda.destroy_exec(slot.graph)
                slot.graph = None

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

    @property
    def streams(self) -> int:
        """Batches this runner runs at once (`infer` may be called from that many threads)."""
        return len(self._state.slots)

    @property
    def host_bytes(self) -> int:
        state = self._state
        return sum(s.host_in.nbytes for s in state.slots) + sum(
            o.array.nbytes for o in state.outputs
        )

    @property
    def leases(self) -> int:
        return len(self._state.outputs)

    @property
    def cuda_graph(self) -> bool:
        """Whether batches replay a captured CUDA graph."""
        return any(slot.graph is not None for slot in self._state.slots)

    def describe(self) -> dict[str, object]:
        return describe_facts(
            self.model_facts, "tensorrt", path=str(self.path), tensorrt=self.tensorrt,
            gpu=self.gpu.name, precision=self.facts.precision, streams=self.streams,
            cuda_graph=self.cuda_graph,
        )  # fmt: skip

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return infer_file(self._run, batch, self.model_facts, self.input_size, self._shape[0])

    def submit(self, batch: np.ndarray) -> Pending:
        return submit_file(self._submit, batch, self.model_facts, self.input_size, self._shape[0])

    @property
    def lends_buffers(self) -> bool:
        return self._out_type == np.float32  # FP16 I/O is converted: a copy, the buffer freed

    def _submit(self, batch: np.ndarray) -> Pending:
        """One batch uploaded and run on a free context's stream and downloaded into a free
        output buffer, where a float32 output stays, held (its lock too: `close` waits for
        it) until the lease is released; the context is free again once the batch is waited
        for (`Pending.wait`), and the buffer never before that (`lend`)."""
        output = self._free_out.get()  # none free: leases and batches in flight hold them all
        output.lock.acquire()
        try:
            slot = self._free.get()  # waits while every context has a batch on the device
        except BaseException:
            self._give_back_output(output)
            raise
        slot.lock.acquire()
        if self._state.closed:  # its streams are gone: nothing was queued, nothing to wait for
            self._give_back(slot)
            self._give_back_output(output)
            raise LBNetError(f"the runner of {self.path} was closed")
        device = Once(functools.partial(self._finish, slot))
        leased = lend(output.array, device, functools.partial(self._give_back_output, output))
        try:
            with self.active():
                slot.host_in[...] = batch  # casts to the engine's input type
                if slot.graph is not None:
                    self._cuda.launch(slot.graph, slot.stream)
                elif not self._enqueue(slot):
                    raise LBNetError(f"TensorRT failed to run {self.path} (see its log above)")
                self._cuda.dtoh_async(output.array, slot.device[1], slot.stream)
            return Pending(leased, device, None if self.lends_buffers else Leased.copied)
        except BaseException:
            leased.release()  # the stream synchronized first: what was queued is done
            raise

    def _finish(self, slot: _Slot) -> None:
        """The device done with a batch: its context is free again (its output stays)."""
        try:
            with self.active():
                slot.stream.synchronize()
        finally:
            self._give_back(slot)

    def _give_back(self, slot: _Slot) -> None:
        slot.lock.release()
        self._free.put(slot)

    def _give_back_output(self, output: _Output) -> None:
        output.lock.release()
        self._free_out.put(output)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # a copy where it is the runner's: the buffer is reused
        return self._submit(batch).wait().take()

    def layers(self) -> list[EngineLayer]:
        """The engine's layers as TensorRT's engine inspector reports them (JSON; the engine
        must have been built with detailed profiling verbosity, as `build` does)."""
        import tensorrt as trt

        if self._state.closed:  # its slots are gone: say so, not IndexError
            raise LBNetError(f"the runner of {self.path} was closed")
        slot = self._state.slots[0]
        with slot.lock, self.active():
            inspector = self._state.engine.create_engine_inspector()
            if inspector is None:
                raise LBNetError(f"TensorRT has no engine inspector for {self.path}")
            # with the context, formats of shape-dependent tensors are known (NvInferRuntime.h)
            inspector.execution_context = slot.execution
            text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return parse_layers(text, str(self.path))

    def device_peak_mb(self) -> float:
        """Device memory this runner took when loading (`bench` reports it)."""
        return self._device_mb

    def reset_device_peak(self) -> None:
        """Nothing to reset: the engine's device memory is allocated once, when loading."""


def _deserialize(path: Path, facts: EngineFacts) -> trt.ICudaEngine:
    """The engine in `path` (its sidecar `facts` checked), on its DLA core where it has one."""
    import tensorrt as trt

    runtime = trt.Runtime(trt_logger())
    if facts.dla_core is not None:  # before deserializing: the engine runs on that core
        runtime.DLA_core = facts.dla_core
    engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise LBNetError(f"TensorRT could not deserialize {path} (see its log above)")
    return engine
