"""The few CUDA calls the TensorRT runner makes, behind one interface with two implementations.

cuda-python (`cuda.bindings.driver`, binary wheels for x86-64 and aarch64) is the default: it
installs without a compiler, and NVIDIA's TensorRT samples use it since 10.14. pycuda (source
only: installing it compiles against a CUDA toolkit) is still supported and used when it is the
one installed. Both are driven through the CUDA driver API, so both have the same semantics:
the device's primary context (the one TensorRT's runtime API uses) is pushed around each use and
popped after, device memory is a plain pointer, host buffers are page-locked numpy arrays.

Written by hand rather than through Polygraphy's `cuda` wrapper (which loads libcudart with
ctypes): the runner's whole need is these dozen calls, and each implementation is tested against
a recording fake (tests/fake_tensorrt.py) on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lbnet_deploy.errors import LBNetError

INSTALL_HINT = "pip install 'lbnet-deploy[trt]' (TensorRT + cuda-python)"
CHOICES = ("cuda-python", "pycuda")


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


class PyCuda:
    """pycuda's driver module (it wraps the driver API)."""

    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self.cuda = driver
        self._contexts: dict[int, Any] = {}
        self._device: dict[int, Any] = {}  # pointer -> pycuda allocation
        self._host: dict[int, Any] = {}  # id(array) -> its allocation

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
        return _PyCudaStream(self.cuda.Stream())

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


class _PyCudaStream:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def handle(self) -> int:
        return int(self.raw.handle)

    def synchronize(self) -> None:
        self.raw.synchronize()


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
        return _CudaPythonStream(self, self._call(self.cu.cuStreamCreate(0)))

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


class _CudaPythonStream:
    def __init__(self, layer: CudaPython, raw: Any) -> None:
        self.layer, self.raw = layer, raw

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        self.layer._call(self.layer.cu.cuStreamSynchronize(self.raw))


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
