"""The few CUDA calls the TensorRT runner makes, behind one interface with two implementations.

cuda-python (`cuda.bindings.driver`, binary wheels for x86-64 and aarch64) is the default: it
installs without a compiler, and NVIDIA's TensorRT samples use it since 10.14. pycuda (source
only: installing it compiles against a CUDA toolkit) is still supported and used when it is the
one installed. Both are driven through the CUDA driver API, so both have the same semantics:
the device's primary context (the one TensorRT's runtime API uses) is pushed around each use and
popped after, device memory is a plain pointer, host buffers are page-locked numpy arrays,
streams are non-blocking (no implicit synchronisation with the legacy default stream, which would
invalidate a graph capture while another thread uses it).

CUDA graphs (`capture`, then `launch` per batch) follow trtexec's sequence (samples/common:
enqueue once outside capture, capture thread-locally, instantiate, keep only the executable).
cuda-python has the driver's graph calls; pycuda has none (checked in its sources up to
2026.1), so the pycuda layer makes those six calls on libcuda itself through ctypes.

Written by hand rather than through Polygraphy's `cuda` wrapper (which loads libcudart with
ctypes): the runner's whole need is these dozen calls, and each implementation is tested against
a recording fake (tests/fake_tensorrt.py) on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lbnet_deploy.errors import LBNetError

INSTALL_HINT = "pip install 'lbnet-deploy[trt]' (TensorRT + cuda-python)"
CHOICES = ("cuda-python", "pycuda")
NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING (cuda.h)
THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: other threads' CUDA calls stay allowed


@dataclass(frozen=True)
class GpuFacts:
    name: str
    compute_capability: str  # "8.7"
    memory_mb: int


class Stream(Protocol):
    raw: Any  # the binding's own stream object

    @property
    def handle(self) -> int: ...

    def synchronize(self) -> None: ...

    def destroy(self) -> None: ...


class CudaLayer(Protocol):
    """What the TensorRT runner and the probes need from CUDA."""

    name: str

    def device_count(self) -> int: ...

    def facts(self, index: int) -> GpuFacts: ...

    def push(self, index: int) -> None:
        """Make device `index`'s primary context current on this thread."""
        ...

    def pop(self) -> None: ...

    def free_memory(self) -> int:
        """Free device memory in bytes (of the current context's device)."""
        ...

    def stream(self) -> Stream: ...

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked host array (asynchronous copies need it)."""
        ...

    def free_host(self, array: np.ndarray) -> None: ...

    def malloc(self, nbytes: int) -> int: ...

    def free(self, pointer: int) -> None: ...

    def htod_async(self, pointer: int, host: np.ndarray, stream: Stream) -> None: ...

    def dtoh_async(self, host: np.ndarray, pointer: int, stream: Stream) -> None: ...

    # CUDA graphs: see `capture`
    def begin_capture(self, stream: Stream) -> None: ...

    def end_capture(self, stream: Stream) -> Any:
        """The captured graph (an error where the capture was invalidated)."""
        ...

    def instantiate(self, graph: Any) -> Any: ...

    def launch(self, graph_exec: Any, stream: Stream) -> None: ...

    def destroy_graph(self, graph: Any) -> None: ...

    def destroy_exec(self, graph_exec: Any) -> None: ...


def capture(layer: CudaLayer, stream: Stream, enqueue: Callable[[], bool]) -> Any:
    """An executable CUDA graph of what `enqueue` puts on `stream` (it returns False where it
    could not, as TensorRT's execute_async_v3 does under a capture it cannot join), or a one-line
    LBNetError saying why not. The capture is always ended, the graph itself always destroyed
    (trtexec's sequence); the caller has run `enqueue` once before, outside any capture."""
    layer.begin_capture(stream)
    enqueued, executable = False, None
    try:
        enqueued = enqueue()
    finally:
        graph = layer.end_capture(stream)  # leave capture mode, also where enqueue raised
        try:
            if enqueued:
                executable = layer.instantiate(graph)
        finally:
            layer.destroy_graph(graph)
    if not enqueued:
        raise LBNetError("the work could not be enqueued under capture")
    return executable


class PyCuda:
    """pycuda's driver module (it wraps the driver API)."""

    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self.cuda = driver
        self._contexts: dict[int, Any] = {}
        self._device: dict[int, Any] = {}  # pointer -> pycuda allocation
        self._host: dict[int, Any] = {}  # id(array) -> its allocation
        self._driver_graphs: _DriverGraphs | None = None  # loaded on first capture

    def device_count(self) -> int:
        return int(self.cuda.Device.count())

    def facts(self, index: int) -> GpuFacts:
        device = self.cuda.Device(index)
        major, minor = device.compute_capability()
        return GpuFacts(device.name(), f"{major}.{minor}", device.total_memory() // 2**20)

    def push(self, index: int) -> None:
        if index not in self._contexts:
            self._contexts[index] = self.cuda.Device(index).retain_primary_context()
        self._contexts[index].push()

    def pop(self) -> None:
        self.cuda.Context.pop()

    def free_memory(self) -> int:
        return int(self.cuda.mem_get_info()[0])

    def stream(self) -> Stream:
        return _PyCudaStream(self.cuda.Stream(flags=NON_BLOCKING))

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        array = self.cuda.pagelocked_empty(shape, dtype)
        self._host[id(array)] = array.base  # the allocation: freed explicitly, in context
        return array

    def free_host(self, array: np.ndarray) -> None:
        allocation = self._host.pop(id(array), None)
        if allocation is not None:
            allocation.free()

    def malloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(nbytes)
        self._device[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer: int) -> None:
        self._device.pop(pointer).free()

    def htod_async(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        self.cuda.memcpy_htod_async(pointer, host, stream.raw)

    def dtoh_async(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        self.cuda.memcpy_dtoh_async(host, pointer, stream.raw)

    @property
    def _graphs(self) -> _DriverGraphs:
        if self._driver_graphs is None:
            try:
                self._driver_graphs = _DriverGraphs(_libcuda())
            except OSError as exc:
                raise LBNetError(f"the CUDA driver library could not be loaded ({exc})") from None
        return self._driver_graphs

    def begin_capture(self, stream: Stream) -> None:
        self._graphs.call("cuStreamBeginCapture_v2", stream.handle, ctypes.c_int(THREAD_LOCAL))

    def end_capture(self, stream: Stream) -> Any:
        return self._graphs.out("cuStreamEndCapture", stream.handle)

    def instantiate(self, graph: Any) -> Any:
        # cuGraphInstantiateWithFlags (CUDA >= 11.4): the unversioned export is CUDA 10's form
        graphs = self._graphs
        executable = ctypes.c_void_p()
        graphs.call(
            "cuGraphInstantiateWithFlags", ctypes.byref(executable), graph, ctypes.c_ulonglong(0)
        )
        return executable.value

    def launch(self, graph_exec: Any, stream: Stream) -> None:
        self._graphs.call("cuGraphLaunch", graph_exec, stream.handle)

    def destroy_graph(self, graph: Any) -> None:
        self._graphs.call("cuGraphDestroy", graph)

    def destroy_exec(self, graph_exec: Any) -> None:
        self._graphs.call("cuGraphExecDestroy", graph_exec)


def _libcuda() -> Any:
    """The CUDA driver library pycuda itself runs on."""
    return ctypes.CDLL("nvcuda.dll" if os.name == "nt" else "libcuda.so.1")


class _DriverGraphs:
    """The driver's graph calls through ctypes, for pycuda: handles are the driver's pointers
    (pycuda's `Stream.handle`), every call returns a CUresult."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def call(self, name: str, *args: Any) -> None:
        try:
            function = getattr(self.lib, name)
        except AttributeError:  # a driver older than the call (CUDA < 11.4)
            raise LBNetError(f"this CUDA driver has no {name}") from None
        wrapped = [ctypes.c_void_p(a) if isinstance(a, int) or a is None else a for a in args]
        err = function(*wrapped)
        if err:
            text = ctypes.c_char_p()
            named = not self.lib.cuGetErrorName(err, ctypes.byref(text)) and text.value
            raise LBNetError(f"CUDA call {name} failed: {named.decode() if named else err}")

    def out(self, name: str, *args: Any) -> int | None:
        """A call whose last argument is a pointer it writes a handle into."""
        handle = ctypes.c_void_p()
        self.call(name, *args, ctypes.byref(handle))
        return handle.value


class _PyCudaStream:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def handle(self) -> int:
        return int(self.raw.handle)

    def synchronize(self) -> None:
        self.raw.synchronize()

    def destroy(self) -> None:
        self.raw = None  # pycuda destroys the stream with its object, in its own context


class CudaPython:
    """cuda-python's driver API bindings (`cuda.bindings.driver`, `cuda.cuda` before 12.6)."""

    name = "cuda-python"

    def __init__(self, driver: Any) -> None:
        self.cu = driver
        self._contexts: dict[int, Any] = {}
        self._host: dict[int, int] = {}  # id(array) -> page-locked pointer
        self._call(driver.cuInit(0))

    def _call(self, result: Any) -> Any:
        """cuda-python returns (CUresult, *values): the values, or a one-line error."""
        err, *values = result
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise LBNetError(f"CUDA call failed: {getattr(err, 'name', err)}")
        return values[0] if len(values) == 1 else tuple(values)

    def device_count(self) -> int:
        return int(self._call(self.cu.cuDeviceGetCount()))

    def facts(self, index: int) -> GpuFacts:
        device = self._call(self.cu.cuDeviceGet(index))
        name = self._call(self.cu.cuDeviceGetName(256, device))
        attr = self.cu.CUdevice_attribute
        major = self._call(
            self.cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        )
        minor = self._call(
            self.cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        )
        total = self._call(self.cu.cuDeviceTotalMem(device))
        text = name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)
        return GpuFacts(text, f"{major}.{minor}", int(total) // 2**20)

    def push(self, index: int) -> None:
        if index not in self._contexts:
            device = self._call(self.cu.cuDeviceGet(index))
            self._contexts[index] = self._call(self.cu.cuDevicePrimaryCtxRetain(device))
        self._call(self.cu.cuCtxPushCurrent(self._contexts[index]))

    def pop(self) -> None:
        self._call(self.cu.cuCtxPopCurrent())

    def free_memory(self) -> int:
        return int(self._call(self.cu.cuMemGetInfo())[0])

    def stream(self) -> Stream:
        return _CudaPythonStream(self, self._call(self.cu.cuStreamCreate(NON_BLOCKING)))

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        pointer = int(self._call(self.cu.cuMemAllocHost(max(nbytes, 1))))
        # a numpy view of the page-locked block: numpy has no constructor from a raw address,
        # ctypes does; through bytes, since float16 has no ctypes type
        block = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_uint8))
        array = np.ctypeslib.as_array(block, (max(nbytes, 1),))[:nbytes].view(dtype).reshape(shape)
        self._host[id(array)] = pointer
        return array

    def free_host(self, array: np.ndarray) -> None:
        pointer = self._host.pop(id(array), None)
        if pointer is not None:
            self._call(self.cu.cuMemFreeHost(pointer))

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.cu.cuMemAlloc(nbytes)))

    def free(self, pointer: int) -> None:
        self._call(self.cu.cuMemFree(pointer))

    def htod_async(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        self._call(self.cu.cuMemcpyHtoDAsync(pointer, host.ctypes.data, host.nbytes, stream.raw))

    def dtoh_async(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        self._call(self.cu.cuMemcpyDtoHAsync(host.ctypes.data, pointer, host.nbytes, stream.raw))

    def begin_capture(self, stream: Stream) -> None:
        mode = self.cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL  # an enum, not 1
        self._call(self.cu.cuStreamBeginCapture(stream.raw, mode))

    def end_capture(self, stream: Stream) -> Any:
        return self._call(self.cu.cuStreamEndCapture(stream.raw))

    def instantiate(self, graph: Any) -> Any:
        try:
            return self._call(self.cu.cuGraphInstantiate(graph, 0))  # (hGraph, flags): 12.x on
        except TypeError:  # cuda-python 11.x took a log buffer instead
            raise LBNetError("this cuda-python's cuGraphInstantiate is 11.x's") from None

    def launch(self, graph_exec: Any, stream: Stream) -> None:
        self._call(self.cu.cuGraphLaunch(graph_exec, stream.raw))

    def destroy_graph(self, graph: Any) -> None:
        self._call(self.cu.cuGraphDestroy(graph))

    def destroy_exec(self, graph_exec: Any) -> None:
        self._call(self.cu.cuGraphExecDestroy(graph_exec))


class _CudaPythonStream:
    def __init__(self, layer: CudaPython, raw: Any) -> None:
        self.layer, self.raw = layer, raw

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        self.layer._call(self.layer.cu.cuStreamSynchronize(self.raw))

    def destroy(self) -> None:
        self.layer._call(self.layer.cu.cuStreamDestroy(self.raw))


def _import(choice: str) -> CudaLayer | None:
    """The binding's layer, or None where it is not installed."""
    if choice == "pycuda":
        try:
            import pycuda.driver as driver
        except ImportError:
            return None
        try:
            driver.init()
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError kinds
            raise LBNetError(f"CUDA is not usable: {exc}") from None
        return PyCuda(driver)
    try:
        from cuda.bindings import driver as cu  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as cu  # type: ignore[no-redef]  # older cuda-python
        except ImportError:
            return None
    return CudaPython(cu)


def load_cuda() -> CudaLayer:
    """The CUDA layer: `$LBNET_CUDA` (cuda-python or pycuda) if set, else cuda-python where
    installed, else pycuda; a one-line error without either or without a device."""
    wanted = os.environ.get("LBNET_CUDA", "").strip()
    if wanted and wanted not in CHOICES:
        raise LBNetError(f"LBNET_CUDA={wanted!r}: choose cuda-python or pycuda")
    for choice in (wanted,) if wanted else CHOICES:
        layer = _import(choice)
        if layer is None:
            continue
        if layer.device_count() < 1:
            raise LBNetError("no CUDA device found")
        return layer
    which = wanted or "cuda-python (or pycuda)"
    raise LBNetError(f"{which} is not installed ({INSTALL_HINT})")
