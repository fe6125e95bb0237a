"""A recording fake of the parts of `tensorrt` and of the two CUDA bindings (`pycuda.driver`,
cuda-python's `cuda.bindings.driver`) lbnet-deploy uses; `FakeTensorRT(cuda=...)` picks which
binding is installed (the other is made unimportable). Both record the same events under the
same names (ctx.push/ctx.pop, mem_alloc/free, host_free, the async copies), so one test suite
runs against either.

TensorRT cannot be installed on our machines, so the engine code is tested against this fake:
every call is recorded (`FakeTensorRT.calls`), the fake "parser" reads the real ONNX file's input
and metadata, a "serialized engine" is JSON describing the shapes, and executing it upsamples
the input held in fake device memory by nearest neighbour. The data path (host -> device ->
execute -> host, batch slicing, dtype casts, the Upscaler's tiling) is therefore checked for
real; what TensorRT computes is not (tests marked `gpu` do that on a GPU machine).

The fake GPU is asynchronous as a real one is: each stream runs its work in order on its own
thread, after the call that enqueued it has returned (a copy reads or writes the host buffer
when it runs, so a missing synchronize reads stale data); one engine runs at a time and takes
`device_ms`; `timeline` records when each piece of work ran. Under capture a stream records its
work into a graph instead, and launching the graph replays it (cuda-python's graph calls; for
pycuda, which has none, the `libcuda` stand-in the CUDA layer calls through ctypes).

Signatures follow tensorrt-stubs 10.13 (also what mypy checks our code against).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import itertools
import json
import queue
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the JetPack-like CI job runs this fake without pytest
    import pytest


class _Enum:
    """An enum member that converts to int, like pybind11's."""

    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


def _enum(**members: int) -> type:
    return type("Enum", (), {k: _Enum(k, v) for k, v in members.items()})


class Dims(tuple):
    def __new__(cls, shape: Any = ()) -> Dims:
        return super().__new__(cls, (int(d) for d in shape))


@dataclass
class FakeTensorRT:
    version: str = "10.13.0.35"
    compute_capability: tuple[int, int] = (8, 9)
    gpu_name: str = "Fake GPU"
    calibrators: bool = True
    tf32_flag: bool = True  # a TensorRT without BuilderFlag.TF32 (Polygraphy guards its use)
    reject_ops: frozenset[str] = frozenset({"Col2Im"})  # the parser "rejects" these op types
    fail_build: bool = False
    cuda: str = "pycuda"  # or "cuda-python": the CUDA binding installed
    dla_cores: int = 0  # a Jetson Orin has 2
    device_ms: float = 2.0  # what one engine run takes on the fake GPU
    capture_fails: bool = False  # execute_async_v3 returns False under capture (DLA, loops)
    capture_invalidated: bool = False  # cuStreamEndCapture reports an invalidated capture
    calls: list[tuple[str, Any]] = field(default_factory=list)
    memory: dict[int, np.ndarray] = field(default_factory=dict)  # fake device memory
    # (what, stream handle, start, end) of each piece of work the fake GPU ran
    timeline: list[tuple[str, int, float, float]] = field(default_factory=list)
    streams: dict[int, _Stream] = field(default_factory=dict)
    graphs: dict[int, list[Callable[[], None]]] = field(default_factory=dict)  # and executables
    engine_lock: threading.Lock = field(default_factory=threading.Lock)  # one engine at a time

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    # --- the GPU: streams and graphs, shared by both bindings -----------------------------

    def new_stream(self, flags: int) -> int:
        stream = _Stream(self, next(_handles))
        self.streams[stream.handle] = stream
        self.record("stream_create", flags)
        return stream.handle

    def enqueue(self, handle: int, what: str, work: Callable[[], None]) -> None:
        """Run `work` on stream `handle` (or record it where the stream is capturing)."""

        def timed() -> None:
            start = time.perf_counter()
            work()
            self.timeline.append((what, handle, start, time.perf_counter()))

        self.streams[int(handle)].enqueue(timed)

    def begin_capture(self, handle: int, mode: object) -> None:
        self.record("begin_capture", repr(mode))
        self.streams[int(handle)].captured = []

    def end_capture(self, handle: int) -> int | None:
        """The graph's handle; None where the capture was invalidated."""
        stream = self.streams[int(handle)]
        work, stream.captured = stream.captured, None
        self.record("end_capture")
        if self.capture_invalidated or work is None:
            return None
        graph = next(_handles)
        self.graphs[graph] = work
        return graph

    def instantiate(self, graph: int) -> int:
        self.record("instantiate")
        executable = next(_handles)
        self.graphs[executable] = list(self.graphs[int(graph)])
        return executable

    def launch(self, executable: int, handle: int) -> None:
        self.record("graph_launch", int(handle))
        for work in self.graphs[int(executable)]:
            self.streams[int(handle)].enqueue(work)

    def destroy_graph(self, graph: int, what: str) -> None:
        self.record(what)
        del self.graphs[int(graph)]

    def called(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]

    # --- modules -------------------------------------------------------------------------

    def _pagelocked_empty(self, shape: Any, dtype: Any) -> np.ndarray:
        """Like pycuda's: an array whose `.base` is the host allocation, freed with `free()`."""
        fake = self

        class HostAllocation(bytearray):
            def free(self) -> None:
                fake.record("host_free", len(self))

        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.ndarray(shape, dtype, buffer=HostAllocation(size))

    def tensorrt_module(self) -> types.ModuleType:
        fake = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.version  # type: ignore[attr-defined]
        ns: dict[str, Any] = vars(trt)
        ns["Dims"] = Dims
        ns["NetworkDefinitionCreationFlag"] = _enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        ns["MemoryPoolType"] = _enum(WORKSPACE=0)
        flags = {"FP16": 0, "INT8": 1} if self.calibrators else {}  # 11.x removed them
        flags["GPU_FALLBACK"] = 3
        ns["BuilderFlag"] = _enum(**flags, **({"TF32": 7} if self.tf32_flag else {}))
        ns["TensorIOMode"] = _enum(NONE=0, INPUT=1, OUTPUT=2)
        ns["DeviceType"] = _enum(GPU=0, DLA=1)
        ns["DataType"] = _enum(FLOAT=0, HALF=1, INT8=2)
        ns["ProfilingVerbosity"] = _enum(LAYER_NAMES_ONLY=0, NONE=1, DETAILED=2)
        ns["LayerInformationFormat"] = _enum(ONELINE=0, JSON=1)
        ns["nptype"] = lambda t: {0: np.float32, 1: np.float16, 2: np.int8}[int(t)]

        class Logger:
            WARNING = 2

            def __init__(self, severity: int = 2) -> None:
                fake.record("Logger", severity)

        ns["Logger"] = Logger
        if self.calibrators:

            class IInt8EntropyCalibrator2:
                def __init__(self) -> None:
                    pass

            ns["IInt8EntropyCalibrator2"] = IInt8EntropyCalibrator2
        ns["Builder"] = lambda logger: _Builder(fake)
        ns["OnnxParser"] = lambda network, logger: _Parser(fake, network)
        ns["Runtime"] = lambda logger: _Runtime(fake)
        return trt

    def pycuda_modules(self) -> tuple[types.ModuleType, types.ModuleType]:
        fake = self
        pycuda = types.ModuleType("pycuda")
        driver = types.ModuleType("pycuda.driver")
        ns: dict[str, Any] = vars(driver)

        class Device:
            @staticmethod
            def count() -> int:
                return 1

            def __init__(self, index: int) -> None:
                self.index = index

            def name(self) -> str:
                return fake.gpu_name

            def compute_capability(self) -> tuple[int, int]:
                return fake.compute_capability

            def total_memory(self) -> int:
                return 16 * 2**30

            def retain_primary_context(self) -> _Context:
                return _Context(fake)

        class Context:
            @staticmethod
            def pop() -> None:
                fake.record("ctx.pop")

        class Stream:
            def __init__(self, flags: int = 0) -> None:
                self.handle = fake.new_stream(flags)

            def synchronize(self) -> None:
                fake.record("stream.synchronize")
                fake.streams[self.handle].synchronize()

            def __del__(self) -> None:  # pycuda destroys a stream with its object
                stream = fake.streams.pop(self.handle, None)
                if stream is not None:
                    stream.stop()

        ns.update(
            init=lambda: fake.record("cuda.init"),
            Device=Device,
            Context=Context,
            Stream=Stream,
            mem_alloc=lambda n: _Allocation(fake, n),
            mem_get_info=lambda: (
                16 * 2**30 - sum(m.size for m in fake.memory.values()),
                16 * 2**30,
            ),
            pagelocked_empty=self._pagelocked_empty,
            memcpy_htod_async=self._htod,
            memcpy_dtoh_async=self._dtoh,
        )
        pycuda.driver = driver  # type: ignore[attr-defined]
        return pycuda, driver

    def _htod(self, dev: _Allocation, host: np.ndarray, stream: Any) -> None:
        self.record("memcpy_htod_async", host.shape, host.dtype)

        def copy() -> None:  # reads the host buffer when it runs, as a GPU's copy does
            self.memory[int(dev)] = np.frombuffer(host.tobytes(), np.uint8).copy()

        self.enqueue(stream.handle, "htod", copy)

    def _dtoh(self, host: np.ndarray, dev: _Allocation, stream: Any) -> None:
        self.record("memcpy_dtoh_async", host.shape, host.dtype)

        def copy() -> None:
            data = self.memory[int(dev)].tobytes()
            host[...] = np.frombuffer(data, host.dtype).reshape(host.shape)

        self.enqueue(stream.handle, "dtoh", copy)

    def libcuda(self) -> FakeLibCuda:
        """What the pycuda layer's ctypes calls reach instead of libcuda.so."""
        return FakeLibCuda(self)

    def cuda_python_modules(self) -> dict[str, types.ModuleType]:
        """cuda-python's driver API as the CUDA layer calls it: (CUresult, *values) tuples."""
        fake = self
        driver = types.ModuleType("cuda.bindings.driver")
        ok = _Enum("CUDA_SUCCESS", 0)
        invalidated = _Enum("CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", 901)
        ns: dict[str, Any] = vars(driver)
        ns["CUresult"] = type(
            "CUresult",
            (),
            {"CUDA_SUCCESS": ok, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED": invalidated},
        )
        ns["CUdevice_attribute"] = _enum(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=76,
        )
        modes = _enum(
            CU_STREAM_CAPTURE_MODE_GLOBAL=0,
            CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=1,
            CU_STREAM_CAPTURE_MODE_RELAXED=2,
        )
        ns["CUstreamCaptureMode"] = modes
        host: dict[int, Any] = {}  # page-locked stand-ins: ctypes buffers by address

        def alloc_host(nbytes: int) -> tuple[Any, int]:
            block = ctypes.create_string_buffer(nbytes)
            host[ctypes.addressof(block)] = block
            return ok, ctypes.addressof(block)

        def free_host(pointer: int) -> tuple[Any]:
            fake.record("host_free", len(host.pop(pointer)))
            return (ok,)

        def free(pointer: int) -> tuple[Any]:
            fake.memory.pop(int(pointer))
            fake.record("free", int(pointer))
            return (ok,)

        def htod(dst: int, src: int, nbytes: int, stream: Any) -> tuple[Any]:
            fake.record("memcpy_htod_async", nbytes)

            def copy() -> None:
                data = ctypes.string_at(src, nbytes)
                fake.memory[int(dst)] = np.frombuffer(data, np.uint8).copy()

            fake.enqueue(stream, "htod", copy)
            return (ok,)

        def dtoh(dst: int, src: int, nbytes: int, stream: Any) -> tuple[Any]:
            fake.record("memcpy_dtoh_async", nbytes)
            fake.enqueue(
                stream, "dtoh", lambda: ctypes.memmove(dst, fake.memory[int(src)].tobytes(), nbytes)
            )
            return (ok,)

        def begin_capture(stream: int, mode: Any) -> tuple[Any]:
            if not isinstance(mode, _Enum):  # cuda-bindings takes the enum, not an int
                raise TypeError(f"mode must be a CUstreamCaptureMode, not {type(mode).__name__}")
            fake.begin_capture(stream, mode)
            return (ok,)

        def end_capture(stream: int) -> tuple[Any, Any]:
            graph = fake.end_capture(stream)
            return (invalidated, None) if graph is None else (ok, graph)

        def attribute(which: Any, device: int) -> tuple[Any, int]:
            major, minor = fake.compute_capability
            return ok, major if int(which) == 75 else minor

        def push(ctx: Any) -> tuple[Any]:
            fake.record("ctx.push")
            return (ok,)

        def pop() -> tuple[Any, Any]:
            fake.record("ctx.pop")
            return ok, "primary"

        def sync(stream: Any) -> tuple[Any]:
            fake.record("stream.synchronize")
            fake.streams[int(stream)].synchronize()
            return (ok,)

        def stream_destroy(stream: Any) -> tuple[Any]:
            fake.streams.pop(int(stream)).stop()
            fake.record("stream_destroy")
            return (ok,)

        ns.update(
            cuInit=lambda flags: (fake.record("cuda.init"), ok)[1:],
            cuDeviceGetCount=lambda: (ok, 1),
            cuDeviceGet=lambda index: (ok, index),
            cuDeviceGetName=lambda n, device: (ok, fake.gpu_name.encode() + b"\0" * 8),
            cuDeviceGetAttribute=attribute,
            cuDeviceTotalMem=lambda device: (ok, 16 * 2**30),
            cuDevicePrimaryCtxRetain=lambda device: (ok, "primary"),
            cuCtxPushCurrent=push,
            cuCtxPopCurrent=pop,
            cuMemGetInfo=lambda: (
                ok,
                16 * 2**30 - sum(m.size for m in fake.memory.values()),
                16 * 2**30,
            ),
            cuStreamCreate=lambda flags: (ok, fake.new_stream(flags)),
            cuStreamSynchronize=sync,
            cuStreamDestroy=stream_destroy,
            cuStreamBeginCapture=begin_capture,
            cuStreamEndCapture=end_capture,
            cuGraphInstantiate=lambda graph, flags: (ok, fake.instantiate(graph)),
            cuGraphLaunch=lambda executable, stream: (fake.launch(executable, stream), ok)[1:],
            cuGraphDestroy=lambda graph: (fake.destroy_graph(graph, "graph_destroy"), ok)[1:],
            cuGraphExecDestroy=lambda e: (fake.destroy_graph(e, "graph_exec_destroy"), ok)[1:],
            cuMemAlloc=lambda nbytes: (ok, _Allocation(fake, nbytes).ptr),
            cuMemFree=free,
            cuMemAllocHost=alloc_host,
            cuMemFreeHost=free_host,
            cuMemcpyHtoDAsync=htod,
            cuMemcpyDtoHAsync=dtoh,
        )
        cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        cuda.bindings, bindings.driver = bindings, driver  # type: ignore[attr-defined]
        return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.driver": driver}

    def modules(self) -> dict[str, types.ModuleType | None]:
        mods: dict[str, types.ModuleType | None] = {"tensorrt": self.tensorrt_module()}
        absent = ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.driver")
        mods.update(dict.fromkeys(absent))  # None in sys.modules: that import fails
        if self.cuda == "pycuda":
            pycuda, driver = self.pycuda_modules()
            mods.update({"pycuda": pycuda, "pycuda.driver": driver})
        else:
            mods.update(self.cuda_python_modules())
        for name, module in mods.items():  # find_spec() on them (torch's exporter does) works
            if module is not None:
                module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return mods

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        from lbnet_deploy.runtime import cuda_layer

        monkeypatch.setattr(cuda_layer, "_libcuda", self.libcuda)
        return self

    def install_for_good(self) -> FakeTensorRT:
        """`install` outside pytest (CI's JetPack-like job, subprocesses of tests)."""
        sys.modules.update(self.modules())
        from lbnet_deploy.runtime import cuda_layer

        cuda_layer._libcuda = self.libcuda  # type: ignore[assignment]
        return self


_handles = itertools.count(0x7000)  # stream, graph and executable handles, never reused


class _Stream:
    """One stream of the fake GPU: its work runs in order on a thread of its own."""

    def __init__(self, fake: FakeTensorRT, handle: int) -> None:
        self.fake, self.handle = fake, handle
        self.captured: list[Callable[[], None]] | None = None  # work recorded under capture
        self.work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.failed: BaseException | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def enqueue(self, work: Callable[[], None]) -> None:
        if self.captured is not None:
            self.captured.append(work)
        else:
            self.work.put(work)

    def _run(self) -> None:
        while (work := self.work.get()) is not None:
            try:
                work()
            except BaseException as exc:  # reported by the next synchronize, as CUDA does
                self.failed = exc
            finally:
                self.work.task_done()

    def synchronize(self) -> None:
        self.work.join()
        if self.failed is not None:
            raise RuntimeError(f"fake GPU work failed: {self.failed!r}")

    def stop(self) -> None:
        self.work.put(None)


class FakeLibCuda:
    """The driver calls the pycuda layer makes through ctypes: CUresult ints, handles written
    through `byref` pointers, as libcuda does."""

    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake

    @staticmethod
    def _value(arg: Any) -> int:
        return int(arg.value if isinstance(arg, ctypes.c_void_p) else arg)

    def cuStreamBeginCapture_v2(self, stream: Any, mode: ctypes.c_int) -> int:
        self.fake.begin_capture(self._value(stream), int(mode.value))
        return 0

    def cuStreamEndCapture(self, stream: Any, graph: Any) -> int:
        handle = self.fake.end_capture(self._value(stream))
        graph._obj.value = handle  # byref(c_void_p): the object it points at
        return 0 if handle is not None else 901  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED

    def cuGraphInstantiateWithFlags(self, executable: Any, graph: Any, flags: Any) -> int:
        executable._obj.value = self.fake.instantiate(self._value(graph))
        return 0

    def cuGraphLaunch(self, executable: Any, stream: Any) -> int:
        self.fake.launch(self._value(executable), self._value(stream))
        return 0

    def cuGraphDestroy(self, graph: Any) -> int:
        self.fake.destroy_graph(self._value(graph), "graph_destroy")
        return 0

    def cuGraphExecDestroy(self, executable: Any) -> int:
        self.fake.destroy_graph(self._value(executable), "graph_exec_destroy")
        return 0

    def cuGetErrorName(self, err: int, text: Any) -> int:
        text._obj.value = {901: b"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"}.get(err, b"CUDA_ERROR")
        return 0


class _Context:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake

    def push(self) -> None:
        self.fake.record("ctx.push")


class _Allocation:
    _next = 1

    def __init__(self, fake: FakeTensorRT, nbytes: int) -> None:
        self.fake, self.ptr = fake, _Allocation._next
        _Allocation._next += 1
        fake.memory[self.ptr] = np.zeros(nbytes, np.uint8)
        fake.record("mem_alloc", nbytes)

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        self.fake.memory.pop(self.ptr)
        self.fake.record("free", self.ptr)


# --- builder side ------------------------------------------------------------------------


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[tuple[str, Dims]] = []
        self.meta: dict[str, str] = {}
        self.half = False
        self.layers: list[dict[str, Any]] = []  # what the inspector reports of the engine

    def get_input(self, i: int) -> Any:
        name, shape = self.inputs[i]
        return types.SimpleNamespace(name=name, shape=shape)


class _Parser:
    def __init__(self, fake: FakeTensorRT, network: _Network) -> None:
        self.fake, self.network, self.errors = fake, network, []

    def parse_from_file(self, path: str) -> bool:
        import onnx  # here, not at the top: serving through the fake must not need onnx

        self.fake.record("parse_from_file", path)
        model = onnx.load(path, load_external_data=False)
        bad = sorted({n.op_type for n in model.graph.node} & self.fake.reject_ops)
        if bad:
            self.errors = [f"No importer registered for op: {op}" for op in bad]
            return False
        inp = model.graph.input[0]
        dims = [
            d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim
        ]
        self.network.inputs.append((inp.name, Dims(dims)))
        self.network.meta = {p.key: p.value for p in model.metadata_props}
        self.network.half = inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        self.network.layers = _layers(model)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> Any:
        return types.SimpleNamespace(desc=lambda: self.errors[i])


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, name: str, low: Dims, opt: Dims, high: Dims) -> None:
        self.shapes[name] = (Dims(low), Dims(opt), Dims(high))


class _Cache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class _Config:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.flags: list[str] = []
        self.profiles: list[_Profile] = []
        self.int8_calibrator: Any = None
        self.cache = _Cache(b"")
        self.default_device_type: Any = None  # set by a DLA build
        self.DLA_core = -1
        self.profiling_verbosity = _Enum("LAYER_NAMES_ONLY", 0)  # TensorRT's default

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.fake.record("set_memory_pool_limit", repr(pool), size)

    def set_flag(self, flag: Any) -> None:
        self.fake.record("set_flag", repr(flag))
        self.flags.append(repr(flag))

    def clear_flag(self, flag: Any) -> None:
        self.fake.record("clear_flag", repr(flag))

    def set_calibration_profile(self, profile: _Profile) -> bool:
        self.fake.record("set_calibration_profile", profile)
        return True

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> _Cache:
        self.fake.record("create_timing_cache", bytes(data))
        return _Cache(bytes(data))

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        if cache.data.startswith(b"foreign"):  # TensorRT: a cache from another device/version
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> _Cache:
        return self.cache


class _Builder:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.num_DLA_cores = fake.dla_cores

    def create_network(self, flags: int = 0) -> _Network:
        self.fake.record("create_network", flags)
        return _Network(flags)

    def create_builder_config(self) -> _Config:
        return _Config(self.fake)

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        profiles = [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles]
        self.fake.record("build_serialized_network", network.flags, config.flags, profiles)
        if config.default_device_type is not None:
            self.fake.record("dla", repr(config.default_device_type), config.DLA_core)
        if config.int8_calibrator is not None:
            self.fake.record(
                "read_calibration_cache", config.int8_calibrator.read_calibration_cache()
            )
        if self.fake.fail_build:
            return None
        name, shape = network.inputs[0]
        engine = {
            "input": name,
            "shape": list(shape),
            "profile": profiles[0][name] if profiles else None,
            "scale": int(network.meta["lbnet.scale"]),
            "half": network.half,
            "verbosity": repr(config.profiling_verbosity),
            "layers": network.layers,
        }
        return json.dumps(engine).encode()


# --- runtime side ------------------------------------------------------------------------


class _Runtime:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.DLA_core = -1

    def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
        self.fake.record("deserialize_cuda_engine", len(data), self.DLA_core)
        try:
            return _Engine(self.fake, json.loads(data))
        except ValueError:
            return None  # what TensorRT does with bytes it cannot read


class _Engine:
    def __init__(self, fake: FakeTensorRT, spec: dict[str, Any]) -> None:
        self.fake, self.spec = fake, spec
        self.num_io_tensors = 2
        self.device_memory_size_v2 = 64 * 2**20

    def get_tensor_name(self, i: int) -> str:
        return [self.spec["input"], "output"][i]

    def get_tensor_mode(self, name: str) -> Any:
        modes = sys.modules["tensorrt"].TensorIOMode
        return modes.INPUT if name == self.spec["input"] else modes.OUTPUT

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self.spec["shape"])

    def get_tensor_profile_shape(self, name: str, index: int) -> list[Dims]:
        return [Dims(s) for s in self.spec["profile"]]

    def get_tensor_dtype(self, name: str) -> Any:
        types_ = sys.modules["tensorrt"].DataType
        return types_.HALF if self.spec["half"] else types_.FLOAT

    def create_execution_context(self) -> _Execution:
        return _Execution(self)

    def create_engine_inspector(self) -> _Inspector:
        self.fake.record("create_engine_inspector")
        return _Inspector(self)


class _Inspector:
    """TensorRT's EngineInspector: the engine's layers as JSON, in detail only where the engine
    was built with ProfilingVerbosity.DETAILED (else their names); shape-dependent formats only
    with an execution context set (NvInferRuntime.h)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.execution_context: _Execution | None = None

    def get_engine_information(self, format: Any) -> str:
        spec = self.engine.spec
        self.engine.fake.record("get_engine_information", repr(format))
        layers = spec.get("layers", [])
        if repr(format) != "JSON":
            return "\n".join(layer["Name"] for layer in layers)
        dynamic = any(d < 0 for d in spec["shape"]) and self.execution_context is None
        if spec.get("verbosity") != "DETAILED":
            detail: list[Any] = [layer["Name"] for layer in layers]
        elif dynamic:
            detail = [{**layer, "Inputs": [], "Outputs": []} for layer in layers]
        else:
            detail = layers
        return json.dumps({"Layers": detail, "Bindings": [spec["input"], "output"]})


def _layers(model: Any) -> list[dict[str, Any]]:
    """One inspector entry per ONNX node, in the real JSON's shape: I/O formats from the graph's
    types (a Conv fed by DequantizeLinear reads Int8 and has Int8 weights), the node in the
    Metadata as the ONNX parser writes it."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types_ = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }
    producer = {out: node for node in model.graph.node for out in node.output}
    formats = {
        onnx.TensorProto.FLOAT: "Row major linear FP32",
        onnx.TensorProto.FLOAT16: "Channel major FP16 format where channel % 8 == 0",
        onnx.TensorProto.INT8: "Thirty-two wide channel vectorized row major Int8 format",
    }

    def tensor(name: str, int8: bool = False) -> dict[str, Any]:
        kind = onnx.TensorProto.INT8 if int8 else types_.get(name, onnx.TensorProto.FLOAT)
        return {"Name": name, "Location": "Device", "Dimensions": [1],
                "Format/Datatype": formats.get(kind, "Unknown format")}  # fmt: skip

    layers = []
    for node in model.graph.node:
        source = producer.get(node.input[0]) if node.input else None
        quantized = node.op_type == "Conv" and source is not None
        quantized = quantized and source.op_type == "DequantizeLinear"
        name = node.name or node.output[0]  # the ONNX parser's getNodeName
        entry = {
            "Name": name,
            "LayerType": "CaskConvolution" if node.op_type == "Conv" else "kgen",
            "Inputs": [tensor(node.input[0], quantized)] if node.input else [],
            "Outputs": [tensor(out) for out in node.output],
            "Metadata": f"[ONNX Layer: {name}]",
            "TacticValue": "0x0",
        }
        if node.op_type == "Conv":
            weights = {"Type": "Int8" if quantized else "Float", "Count": 1}
            entry |= {"ParameterType": "Convolution", "Weights": weights}
        layers.append(entry)
    return layers


class _Execution:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self.addresses, self.input_shape = engine, {}, None

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self.engine.fake.record("set_input_shape", name, tuple(shape))
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        b, c, h, w = self.input_shape
        s = self.engine.spec["scale"]
        return Dims((b, c, s * h, s * w))

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        fake, spec = self.engine.fake, self.engine.spec
        fake.record("execute_async_v3", stream_handle)
        if fake.capture_fails and fake.streams[stream_handle].captured is not None:
            return False  # what TensorRT does with work it cannot capture
        addresses, shape = dict(self.addresses), self.input_shape

        def run() -> None:
            with fake.engine_lock:  # one engine at a time on the GPU, each takes device_ms
                time.sleep(fake.device_ms / 1000)
                dtype = np.float16 if spec["half"] else np.float32
                x = np.frombuffer(fake.memory[addresses[spec["input"]]].tobytes(), dtype)
                s = spec["scale"]
                # "super-resolution": nearest neighbour
                y = x.reshape(shape).repeat(s, axis=2).repeat(s, axis=3)
                fake.memory[addresses["output"]] = np.frombuffer(y.tobytes(), np.uint8).copy()

        fake.enqueue(stream_handle, "engine", run)
        return True
